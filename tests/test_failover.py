"""``FAILOVER`` (Redis ≥ 6.2): a master demoted while client connections stay open, seen within the bound.

Why: after ``FAILOVER`` the old master's clients keep their connections, and a WebSocket backend writing
session state to it gets ``-READONLY`` (a 1011 to its users). The held connection never drops, so only
``ROLE`` can tell: with ``require_master`` (the default for ``--redis-url``) the agent turns not ready within
the detection bound; ``--redis-require-master false`` opts out for a deliberate replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.model import Reason
from harness.redis_server import HOST, RedisProcess
from harness.redis_topology import server_version
from harness.wait import until, until_async


@pytest.fixture
def pair() -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """A master and a replica in sync, both killed after the test."""
    master = RedisProcess(["--repl-diskless-sync-delay", "0"])
    replica = RedisProcess(["--replicaof", HOST, str(master.port)])
    with master, replica:
        master.start()
        replica.start()
        until(lambda: replica.info("replication").get("master_link_status") == "up", 10, what="replica sync")
        yield master, replica


def demote(master: RedisProcess) -> float:
    """``FAILOVER`` on ``master``; returns when it answered OK (the demotion is under way)."""
    assert tuple(int(p) for p in server_version(master.binary).split(".")[:2]) >= (6, 2)
    assert master.cli("FAILOVER") == "OK"
    return time.monotonic()


class TestFailoverCommand:
    async def test_demoted_master_is_not_ready_within_the_detection_bound(
            self, pair: tuple[RedisProcess, RedisProcess]) -> None:
        """With the default require_master, FAILOVER turns the agent not ready (readonly) within the detection
        bound, while its connection to the demoted node stays open."""
        master, _ = pair
        settings = load_settings({"redis_url": master.url}, {}, lambda _e: (Platform.LOCAL, "test"))
        assert settings.checks[0].require_master  # the default for --redis-url
        agent = build_agent(settings)
        await agent.start()
        try:
            await asyncio.wait_for(agent.store.ready.wait(), 10)
            connections = str(master.cli("CLIENT", "LIST")).count("name=readiness-agent")
            started = await asyncio.to_thread(demote, master)
            await until_async(lambda: not agent.snapshot.ready, settings.timing.detection_bound * 2 + 1, "not ready")
            seen = time.monotonic() - started
            assert agent.snapshot.checks["redis"].last_reason is Reason.READONLY
            assert str(master.cli("CLIENT", "LIST")).count("name=readiness-agent") == connections == 1
        finally:
            await agent.stop()
        assert seen <= settings.timing.detection_bound, (seen, settings.timing.detection_bound)
        print(f"FAILOVER -> 503 {seen:.2f}s (detection bound {settings.timing.detection_bound:.2f}s)")

    async def test_opting_out_keeps_a_healthy_replica_ready(self, pair: tuple[RedisProcess, RedisProcess]) -> None:
        """With --redis-require-master false, the demoted node (now a replica with its link up) stays ready."""
        master, _ = pair
        settings = load_settings({"redis_url": master.url, "redis_require_master": "false", "interval": "0.3",
                                  "retry_interval": "0.1"}, {}, lambda _e: (Platform.LOCAL, "test"))
        agent = build_agent(settings)
        await agent.start()
        try:
            await asyncio.wait_for(agent.store.ready.wait(), 10)
            runs = agent.snapshot.checks["redis"].checks_run
            await asyncio.to_thread(demote, master)
            await until_async(lambda: master.info("replication").get("master_link_status") == "up", 10,
                              "demoted, in sync")
            await until_async(lambda: agent.snapshot.checks["redis"].checks_run >= runs + 3, 10, "three more checks")
            assert agent.snapshot.ready
        finally:
            await agent.stop()
