"""docs/design.md claims that need a process: the agent itself (signals, the default ``/watch`` port taken) or
a real redis-server in cluster mode. docs/contract-tests.md names each; the in-process ones are in
tests/test_contract.py. Lower time bounds are exact, upper bounds have slack (a small shared machine)."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import time

import pytest

from agent.checks.redis.check import RedisCheck
from agent.core.model import Reason
from harness.agent_process import WATCH_OFF, AgentProcess
from harness.redis_server import RedisProcess
from tests.support.fast import FAST_WINDOW
from tests.support.fixtures import RedisFactory
from tests.test_contract import settings


class TestSignals:
    def test_sigint_drains_like_sigterm_and_a_second_signal_exits_at_once(self, redis_proc: RedisProcess) -> None:
        """SIGINT: /readyz 503 while /livez stays 200 (the drain); a second SIGINT ends the 30 s drain at once,
        exit 0."""
        with AgentProcess("--redis-url", redis_proc.url, "--drain-seconds", "30", *FAST_WINDOW) as agent:
            agent.wait_status("/readyz", 200, timeout=5)
            agent.signal(signal.SIGINT)
            agent.wait_status("/readyz", 503, timeout=2)
            assert agent.get_status("/livez") == 200 and agent.alive()
            second = time.monotonic()
            agent.signal(signal.SIGINT)
            assert agent.wait(timeout=5) == 0
            assert time.monotonic() - second < 5  # far inside the 30 s drain
            output = agent.output()
            assert "SIGINT received: draining for 30s" in output and "second signal: exiting now" in output


def hold_port(port: int) -> socket.socket | None:
    """Listen on 127.0.0.1:``port``; None when something else already holds it (taken either way)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        assert exc.errno == errno.EADDRINUSE, exc
        return None
    sock.listen()
    return sock


class TestWatchPortTaken:
    def test_the_default_port_taken_is_one_error_and_the_probes_run_on(self, redis_proc: RedisProcess) -> None:
        """Something else on 9181 (the default ``watch_port``, not set): one ERROR record, ``/watch`` off, and the
        agent serves its probes and becomes ready (an explicit taken port exits 2: tests/test_watch.py)."""
        held = hold_port(9181)  # the default watch_port (tests/test_contract.py pins the figure to the code)
        try:
            agent = AgentProcess("--redis-url", redis_proc.url, "--log-format", "json", *FAST_WINDOW)
            del agent.env[WATCH_OFF[0]]  # the default port, as in production
            with agent.start():
                agent.wait_status("/readyz", 200, timeout=5)
                (record,) = agent.events("watch_unavailable")
                assert record["severity"] == "ERROR" and "/watch is off" in record["message"], record
                assert not agent.events("watch_listening")
                assert [r["severity"] for r in agent.records()].count("ERROR") == 1
        finally:
            if held is not None:
                held.close()


async def cluster_reasons(redis: RedisProcess, user: str = "") -> list[Reason | None]:
    """Three checks' reasons against a cluster node, as ``user`` (``name:password``) or the default user."""
    auth = f"{user}@" if user else ""
    check = RedisCheck(settings(redis_url=f"redis://{auth}127.0.0.1:{redis.port}/0").checks[0], 1.0)
    try:
        return [(await check.run()).reason for _ in range(3)]
    finally:
        await check.close()


class TestClusterInfoRefused:
    async def test_cluster_info_refused_is_not_a_failure(self, redis_factory: RedisFactory) -> None:
        """A cluster node with no slots is ``cluster_down`` (``cluster_state:fail``); with ``CLUSTER`` outside the
        ACL user's rights every check passes and the cluster state is not checked."""
        redis = redis_factory("--cluster-enabled", "yes")
        redis.add_user("probe", "probe-pass", "+@all", "-cluster")
        assert await cluster_reasons(redis) == [Reason.CLUSTER_DOWN] * 3
        assert await cluster_reasons(redis, "probe:probe-pass") == [None] * 3

    async def test_cluster_info_refused_is_one_warning(
            self, redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture) -> None:
        """design.md: "``CLUSTER INFO`` refused (renamed, ACL) is not a failure: one warning"."""
        redis = redis_factory("--cluster-enabled", "yes")
        redis.add_user("probe", "probe-pass", "+@all", "-cluster")
        assert await cluster_reasons(redis, "probe:probe-pass") == [None] * 3
        (warning,) = [r.getMessage() for r in caplog.records
                      if r.name == "readiness_agent" and r.levelno == logging.WARNING]
        assert "refuses CLUSTER" in warning and "probe-pass" not in warning, warning
