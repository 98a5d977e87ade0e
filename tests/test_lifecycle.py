"""The agent's tasks end when it is stopped, whatever its checks are doing: stop is bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.commands import build_agent, wait_ready
from agent.config.loader import load_settings
from agent.config.settings import Platform, Settings
from harness.redis_server import RedisProcess


def one_ready_one_failing(redis_proc: RedisProcess, tmp_path: Path) -> Settings:
    """Window 0; check ``a`` passes with an ACL user, optional check ``b`` fails auth on every round."""
    redis_proc.cli("ACL", "SETUSER", "u0", "on", ">pw0-Abcdefgh", "~*", "&*", "+@all")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "window: 0\nchecks:\n"
        f"  - {{name: a, url: 'redis://u0:pw0-Abcdefgh@127.0.0.1:{redis_proc.port}/0'}}\n"
        f"  - {{name: b, required: false, url: 'redis://x:wrong-password@127.0.0.1:{redis_proc.port}/0'}}\n"
    )
    return load_settings({"platform": "local"}, {}, lambda _e: (Platform.LOCAL, "t"), config_file=str(config))


class TestStop:
    async def test_stop_ends_every_task_with_a_failing_optional_check(self, redis_proc: RedisProcess,
                                                                       tmp_path: Path) -> None:
        """With one check ready and an optional one failing auth on every round, stop returns promptly.

        A cancelled check loop once swallowed its own cancellation while closing a connection and ran on for
        good, so ``wait`` printed "ready" and never exited.
        """
        settings = one_ready_one_failing(redis_proc, tmp_path)
        for pause in (0.0, 0.0, 0.001, 0.01, 0.05):  # the cancellation may land anywhere in a round
            before = len(asyncio.all_tasks())
            agent = build_agent(settings)
            await agent.start()
            async with asyncio.timeout(5):
                await agent.store.ready.wait()
            await asyncio.sleep(pause)
            started = time.monotonic()
            await asyncio.wait_for(agent.stop(), 3)
            assert time.monotonic() - started < 3
            assert len(asyncio.all_tasks()) == before

    async def test_stop_at_300_points_of_a_round_never_hangs(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """Stop lands at 300 points of the first round (150 loop passes, then 0-30 ms): every stop ends in 1 s.

        On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that lands while its inner await
        finishes (CPython gh-86296), and ``suppress(CancelledError)`` around an awaited task swallows the
        caller's own; either left check ``b`` running after ``stop()`` in about 1 stop in 30.
        """
        settings = one_ready_one_failing(redis_proc, tmp_path)
        points = [("passes", k) for k in range(150)] + [("ms", i * 0.2) for i in range(150)]
        hung: list[tuple[str, float, list[str]]] = []
        for unit, at in points:
            before = set(asyncio.all_tasks())
            agent = build_agent(settings)
            await agent.start()
            async with asyncio.timeout(5):
                await agent.store.ready.wait()
            if unit == "passes":
                for _ in range(int(at)):
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(at / 1000)
            try:
                async with asyncio.timeout(1.0):
                    await agent.stop()
            except TimeoutError:
                left = [t.get_name() for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
                hung.append((unit, at, left))
                for task in asyncio.all_tasks() - before:
                    task.cancel()
                continue
            left = [t.get_name() for t in asyncio.all_tasks() - before]
            assert not left, f"tasks left after stop at {at} {unit}: {left}"
        assert not hung, f"stop hung at {len(hung)} of {len(points)} points: {hung[:5]}"

    async def test_wait_command_returns_after_ready(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """``wait`` (the real command coroutine) returns 0 soon after ready, with a failing optional check."""
        settings = one_ready_one_failing(redis_proc, tmp_path)
        for _ in range(3):
            assert await asyncio.wait_for(wait_ready(settings, 2.0), 4) == 0
