"""Weighing the evidence against a real redis-server (issue 17): a kill is conclusive at once; connections the
server drops while Redis stays usable cost nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.agent import Agent
from agent.core.model import State
from harness.fault_proxy import FaultProxy
from harness.redis_server import RedisProcess
from harness.wait import until_async


def agent_for(url: str) -> Agent:
    """An in-process agent at the documented defaults (the schedule of a real deployment)."""
    return build_agent(load_settings({"redis_url": url, "platform": "local"}, {}, lambda _e: (Platform.LOCAL, "t")))


async def ready(agent: Agent) -> None:
    async with asyncio.timeout(5):
        await agent.store.ready.wait()


@contextlib.asynccontextmanager
async def steady(url: str) -> AsyncIterator[Agent]:
    """An in-process agent at the defaults, ready, after a check or two on its held connection."""
    agent = agent_for(url)
    await agent.start()
    try:
        await ready(agent)
        await asyncio.sleep(0.3)
        yield agent
    finally:
        await agent.stop()


async def left_ready_on_one_conclusive_refusal(agent: Agent) -> None:
    """Not ready within the bound (with slack), on one failed observation, conclusive, reason ``refused``."""
    await until_async(lambda: not agent.snapshot.ready, agent.timing.detection_bound * 2 + 1, period=0.002)
    check = agent.snapshot.checks["redis"]
    assert check.state is State.DEGRADED and check.consecutive_failures == 1
    assert check.last is not None and check.last.conclusive and str(check.last.reason) == "refused"


class TestKill:
    async def test_a_killed_redis_leaves_ready_on_the_first_observation(self, redis_proc: RedisProcess) -> None:
        """SIGKILL: the held connection's EOF prompts a fresh attempt, refused, so ready ends with one failure."""
        async with steady(redis_proc.url) as agent:
            killed = time.monotonic()
            redis_proc.kill()
            await left_ready_on_one_conclusive_refusal(agent)
            elapsed = time.monotonic() - killed
            assert elapsed < agent.timing.detection_bound  # the figure itself is a benchmark (docs/benchmarks.md)


class TestServerDrops:
    async def test_client_kill_rounds_never_leave_ready(self, redis_proc: RedisProcess) -> None:
        """CLIENT KILL TYPE normal five times while Redis is usable: /readyz never 503, no failure counted."""
        agent = agent_for(redis_proc.url)
        await agent.start()
        try:
            await ready(agent)
            samples: list[bool] = []

            async def sample() -> None:
                while True:
                    samples.append(agent.snapshot.ready)
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            for _ in range(5):
                await asyncio.sleep(0.3)
                before = agent.connection_drops["redis"]
                assert int(redis_proc.cli("CLIENT", "KILL", "TYPE", "normal")) >= 1  # type: ignore[arg-type]
                # the agent saw the drop and checked again on a fresh connection
                await until_async(lambda: agent.connection_drops["redis"] > before, 3, period=0.002)  # noqa: B023 (awaited at once)
            await asyncio.sleep(0.3)
            sampler.cancel()
            check = agent.snapshot.checks["redis"]
            assert samples and all(samples)
            assert check.state is State.READY and check.consecutive_failures == 0
            assert agent.connection_drops["redis"] >= 5
        finally:
            await agent.stop()

    async def test_a_reused_connection_dropped_unseen_is_retried_once(self, redis_proc: RedisProcess) -> None:
        """A check whose held connection was dropped before it ran succeeds on a fresh one within the same check."""
        from agent.checks.redis.check import RedisCheck

        settings = load_settings({"redis_url": redis_proc.url, "platform": "local"}, {},
                                 lambda _e: (Platform.LOCAL, "t"))
        check = RedisCheck(settings.checks[0], 0.5)
        try:
            assert (await check.run()).ok
            assert (await check.run()).ok  # the connection is now a reused one
            redis_proc.cli("CLIENT", "KILL", "TYPE", "normal")
            result = await check.run()
            assert result.ok, result
        finally:
            await check.close()


class TestKillBehindAProxy:
    async def test_a_fresh_connection_ended_before_a_reply_is_conclusive(self, redis_proc: RedisProcess) -> None:
        """Through a TCP proxy (it accepts, then closes once its upstream is gone) a kill is still one
        observation: the fresh attempt ends before its first reply, so nothing usable listens."""
        proxy = await FaultProxy(("127.0.0.1", redis_proc.port)).start()
        try:
            async with steady(proxy.url()) as agent:
                accepted = proxy.accepted
                redis_proc.kill()
                await left_ready_on_one_conclusive_refusal(agent)
                assert proxy.accepted > accepted  # the fresh attempt was accepted, not refused
        finally:
            await proxy.stop()
