"""The connection model, against real redis-server: one connection per check, one round trip per check, INFO
only on new connections, and a kill or a pause still seen in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from prometheus_client import CollectorRegistry

from agent.checks.redis.check import RedisCheck
from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.agent import Agent
from agent.core.model import Reason
from agent.server.metrics import Metrics
from harness.redis_server import RedisProcess, command_calls, free_port, parse_info
from harness.tls import Authority, TlsRedis
from harness.wait import until_async


def agent_for(url: str, **flags: str) -> Agent:
    settings = load_settings({"redis_url": url, **flags}, {}, lambda _e: (Platform.LOCAL, "test"))
    agent = build_agent(settings)
    agent.store.subscribe(Metrics(CollectorRegistry(), lambda: agent.snapshot, settings.window))
    return agent


@pytest_asyncio.fixture
async def running(redis_proc: RedisProcess) -> AsyncIterator[Agent]:
    """An agent checking every 0.1 s (so a few seconds hold many checks), ready."""
    agent = agent_for(redis_proc.url, window="0", interval="0.1", retry_interval="0.1", timeout="0.3")
    await agent.start()
    try:
        await asyncio.wait_for(agent.store.ready.wait(), 5)
        yield agent
    finally:
        await agent.stop()


def agent_clients(redis: RedisProcess) -> int:
    return len(agent_ids(redis))


def agent_ids(redis: RedisProcess) -> list[str]:
    """The client ids of the agent's connections (``CLIENT LIST``)."""
    lines = str(redis.cli("CLIENT", "LIST")).splitlines()
    return [line.split()[0] for line in lines if "name=readiness-agent" in line]


def calls(redis: RedisProcess) -> dict[str, int]:
    return command_calls(parse_info(str(redis.cli("INFO", "commandstats"))))


class TestOneConnection:
    async def test_one_connection_for_many_checks(self, running: Agent, redis_proc: RedisProcess) -> None:
        """A ready agent holds exactly one connection, and its checks open no other."""
        runs = running.snapshot.checks["redis"].checks_run
        opened = int(redis_proc.info("stats")["total_connections_received"])
        await until_async(lambda: running.snapshot.checks["redis"].checks_run >= runs + 10, 5, period=0.005)
        assert agent_clients(redis_proc) == 1
        # The two extra are ours (the INFO above and the CLIENT LIST).
        assert int(redis_proc.info("stats")["total_connections_received"]) == opened + 2

    async def test_steady_checks_on_a_master_are_ping_and_wait_without_info(self, running: Agent,
                                                                           redis_proc: RedisProcess) -> None:
        """In steady state on a master each check sends PING and WAIT 0 0 once: no ROLE, no INFO."""
        before = calls(redis_proc)
        runs = running.snapshot.checks["redis"].checks_run
        await until_async(lambda: running.snapshot.checks["redis"].checks_run >= runs + 10, 5, period=0.005)
        after = calls(redis_proc)
        done = running.snapshot.checks["redis"].checks_run - runs
        pings, waits = after["ping"] - before["ping"], after.get("wait", 0) - before.get("wait", 0)
        assert after["info"] - before["info"] == 1  # our own INFO commandstats
        assert done - 1 <= pings <= done + 1
        assert waits == pings
        assert after.get("role", 0) == before.get("role", 0)

    async def test_demoted_master_is_asked_role_in_the_same_check(self, redis_proc: RedisProcess) -> None:
        """WAIT refused on a replica: the same check asks ROLE and fails with the replica's reason."""
        settings = load_settings({"redis_url": redis_proc.url}, {}, lambda _e: (Platform.LOCAL, "test"))
        check = RedisCheck(settings.checks[0], 2.0)
        try:
            for _ in range(2):  # ROLE + INFO on the new connection, then WAIT
                assert (await check.run()).ok
            redis_proc.cli("REPLICAOF", "127.0.0.1", free_port())
            result = await check.run()
            assert not result.ok and result.reason is Reason.MASTER_LINK_DOWN
        finally:
            redis_proc.cli("REPLICAOF", "NO", "ONE")
            await check.close()

    async def test_demotion_by_hand_is_seen_within_the_bound(self, running: Agent,
                                                            redis_proc: RedisProcess) -> None:
        """REPLICAOF an unreachable master (no client is killed): not ready within the detection bound."""
        redis_proc.cli("REPLICAOF", "127.0.0.1", free_port())
        try:
            bound = running.timing.detection_bound
            await until_async(lambda: not running.snapshot.ready, bound * 2 + 1, period=0.005)
            assert running.snapshot.checks["redis"].last_reason is Reason.MASTER_LINK_DOWN
        finally:
            redis_proc.cli("REPLICAOF", "NO", "ONE")

    async def test_watch_reports_connected_only_while_held(self, running: Agent, redis_proc: RedisProcess) -> None:
        """``monitor_connected`` is true while the check's connection is held, false once Redis is gone."""
        await until_async(lambda: running.snapshot.checks["redis"].monitor_up, 2, period=0.005)
        redis_proc.kill()
        await until_async(lambda: not running.snapshot.checks["redis"].monitor_up, 1, period=0.005)


class TestErrorReplies:
    async def test_an_error_reply_keeps_the_connection(self, redis_proc: RedisProcess) -> None:
        """-BUSY fails the check but keeps the connection: the check after the script ends uses the same one."""
        settings = load_settings({"redis_url": redis_proc.url}, {}, lambda _e: (Platform.LOCAL, "test"))
        check = RedisCheck(settings.checks[0], 0.5)
        try:
            assert (await check.run()).ok
            before = agent_ids(redis_proc)
            script = redis_proc.start_busy_script()
            assert {(await check.run()).reason for _ in range(3)} == {Reason.BUSY}
            redis_proc.end_busy_script(script)
            assert (await check.run()).ok
            assert agent_ids(redis_proc) == before and len(before) == 1
        finally:
            await check.close()


class TestDetection:
    async def test_kill_leaves_ready_within_one_and_a_half_seconds(self, running: Agent,
                                                                   redis_proc: RedisProcess) -> None:
        """SIGKILL: the held connection's EOF, a refused re-check and one retry take the agent out fast."""
        await until_async(lambda: running.snapshot.checks["redis"].monitor_up, 2, period=0.005)
        redis_proc.kill()
        await until_async(lambda: not running.snapshot.ready, 0.25 * 2 + 1, period=0.005)

    async def test_pause_leaves_ready_within_the_detection_bound(self, running: Agent,
                                                                 redis_proc: RedisProcess) -> None:
        """SIGSTOP (no EOF ever comes): the checks time out and the agent leaves ready within the bound."""
        bound = running.timing.detection_bound
        redis_proc.pause()
        try:
            await until_async(lambda: not running.snapshot.ready, bound * 2 + 1, period=0.005)
        finally:
            redis_proc.resume()
        await until_async(lambda: running.snapshot.ready, 5, period=0.005)
        await until_async(lambda: agent_clients(redis_proc) == 1, 2, period=0.005)


class TestTls:
    async def test_tls_holds_one_connection_and_sees_a_kill(self, tmp_path: Path) -> None:
        """Over rediss:// the check passes with its one held connection, and a kill ends the watch at once."""
        ca = Authority(tmp_path)
        with TlsRedis(ca.issue("server", ips=("127.0.0.1",)), ca.path) as redis:
            redis.start()
            settings = load_settings({"redis_url": redis.tls_url, "redis_ca_file": str(ca.path)}, {},
                                     lambda _e: (Platform.LOCAL, "test"))
            check = RedisCheck(settings.checks[0], 1.0)
            try:
                for _ in range(3):
                    result = await check.run()
                    assert result.ok, result
                assert len(agent_ids(redis)) == 1
                lost = asyncio.create_task(check.wait_lost())
                killed = time.monotonic()
                redis.kill()
                await asyncio.wait_for(lost, 2)
                assert time.monotonic() - killed < 0.25
            finally:
                await check.close()
