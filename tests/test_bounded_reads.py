"""Bounded reads: whatever answers on the Redis port, the agent reads a bounded amount and fails with ``protocol``.

Malformed and oversized replies come from ``harness.hostile_redis`` (no real redis-server sends them);
the positive controls run against a real redis-server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agent.checks.redis.errors as rx
from agent.checks.redis.check import RedisCheck
from agent.checks.redis.protocol import MIB, ByteBudget, Limits, ReplyParser, ReplyTooLarge
from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.model import Reason
from harness.agent_process import ROOT, agent_env
from harness.hostile_redis import HostileRedis
from harness.redis_server import RedisProcess

TIMEOUT = 1.0


def check_for(url: str, timeout: float = TIMEOUT) -> RedisCheck:
    settings = load_settings({"redis_url": url}, {}, lambda _e: (Platform.LOCAL, "test"))
    return RedisCheck(settings.checks[0], timeout)


async def run_once(url: str, timeout: float = TIMEOUT) -> tuple[Reason | None, str, float]:
    check = check_for(url, timeout)
    started = time.monotonic()
    try:
        result = await check.run()
    finally:
        await check.close()
    return result.reason, result.detail, time.monotonic() - started


class TestReplyParser:
    def test_a_reply_split_anywhere_parses_the_same(self) -> None:
        """Feeding a pipeline's replies one byte at a time gives the same replies as feeding them at once."""
        wire = b"+PONG\r\n*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n$-1\r\n-ERR x\r\n*2\r\n*1\r\n:1\r\n$2\r\nab\r\n"
        whole = ReplyParser().feed(wire)
        parser = ReplyParser()
        pieces = [r for i in range(len(wire)) for r in parser.feed(wire[i:i + 1])]
        assert [repr(r) for r in pieces] == [repr(r) for r in whole]
        assert whole[:3] == [b"PONG", [b"master", 0, []], None]
        assert isinstance(whole[3], rx.ResponseError) and whole[4] == [[1], b"ab"]

    def test_a_declared_length_past_the_cap_fails_before_any_body(self) -> None:
        """A bulk header declaring more than the reply cap fails at once, before its body is read."""
        with pytest.raises(ReplyTooLarge):
            ReplyParser(Limits(reply_bytes=1024)).feed(b"$1025\r\n")

    def test_resp3_types_are_protocol_errors(self) -> None:
        """The protocol is pinned to RESP2: a RESP3 map is not a reply here."""
        with pytest.raises(rx.InvalidResponse):
            ReplyParser().feed(b"%1\r\n+a\r\n:1\r\n")

    def test_the_budget_is_per_second(self) -> None:
        """The byte budget allows its amount within one second and starts again in the next."""
        now = [0.0]
        budget = ByteBudget(100, clock=lambda: now[0])
        budget.spend(100)
        with pytest.raises(ReplyTooLarge):
            budget.spend(1)
        now[0] = 1.0
        budget.spend(100)


class TestHostileServer:
    @pytest.mark.parametrize(("command", "mode"), [
        ("INFO", "huge"), ("PING", "stream"), ("PING", "garbage"), ("ROLE", "deep"), ("ROLE", "wide"),
        ("PING", "unasked"),
    ])
    async def test_bad_replies_fail_with_protocol_and_drop_the_connection(self, command: str, mode: str) -> None:
        """Oversized, endless, malformed, too deep, too wide or unasked replies: ``protocol``, connection closed."""
        async with HostileRedis(command, mode) as server:
            reason, detail, elapsed = await run_once(server.url)
            assert reason is Reason.PROTOCOL, detail
            assert elapsed < TIMEOUT * 2 + 1
            await server.wait_idle(3)  # the connection is dropped
            # The client stopped reading near the cap: far less than what the server had to send.
            assert server.bytes_sent < Limits().reply_bytes + 16 * MIB

    async def test_a_reply_larger_than_the_cap_names_the_cap(self) -> None:
        """The detail of an oversized reply says which cap it passed."""
        async with HostileRedis("INFO", "huge") as server:
            reason, detail, _ = await run_once(server.url)
        assert reason is Reason.PROTOCOL and "8 MiB" in detail

    async def test_a_large_valid_reply_within_the_cap_passes(self) -> None:
        """A 4 MiB reply (room for a large CLUSTER SHARDS or Sentinel answer) is read and judged normally."""
        async with HostileRedis("ROLE", "fat", size=4 * MIB) as server:
            reason, detail, _ = await run_once(server.url, timeout=5.0)
        assert reason is None, detail

    async def test_the_per_second_budget_stops_a_flood_of_valid_replies(self) -> None:
        """Valid 6 MiB replies, one per check: the third within one second passes the 16 MiB/s budget (WAIT
        renamed away, so ROLE goes with every check)."""
        async with HostileRedis("ROLE", "fat", size=6 * MIB, refuse=("WAIT",)) as server:
            check = check_for(server.url, timeout=5.0)
            try:
                results = [await check.run() for _ in range(3)]
            finally:
                await check.close()
        assert [r.ok for r in results[:2]] == [True, True]
        assert results[2].reason is Reason.PROTOCOL and "within one second" in results[2].detail

    async def test_a_gigabyte_reply_leaves_memory_bounded(self, tmp_path: Path) -> None:
        """`readiness-agent check` against a 1 GB INFO reply fails with protocol, its RSS far below the reply."""
        out_path = tmp_path / "out"
        async with HostileRedis("INFO", "huge", size=1024 * MIB) as server:
            argv = [sys.executable, "-m", "agent", "check", "--redis-url", server.url, "--platform", "local",
                    "--timeout", "5s"]
            code, peak_kib = await asyncio.to_thread(_run_measured, argv, out_path)
        text = out_path.read_text()
        assert code == 1, text
        assert "failed: protocol" in text
        peak_mib = peak_kib / 1024
        assert peak_mib < 120, f"peak RSS {peak_mib:.0f} MiB"


# Forks and execs argv, waits, and writes "maxrss_kib exit_code" to the file named first. The agent must be
# forked by a small process: a process's ru_maxrss keeps the high-water mark of the memory it was forked with
# (the kernel carries it over exec), so forked by a long pytest run it "peaked" at that run's size (143 MiB).
_MEASURE = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def _run_measured(argv: list[str], out_path: Path) -> tuple[int, int]:
    """Run ``argv`` to its end; its exit code and its own peak RSS in KiB."""
    measured = out_path.with_suffix(".rusage")
    with out_path.open("wb") as out:
        subprocess.run([sys.executable, "-c", _MEASURE, str(measured), *argv], stdout=out,
                       stderr=subprocess.STDOUT, cwd=ROOT, env=agent_env(), check=True, timeout=120)
    peak_kib, code = measured.read_text().split()
    return int(code), int(peak_kib)


class TestRealRedis:
    async def test_a_real_info_is_far_below_the_cap(self, redis_proc: RedisProcess) -> None:
        """A real server's full INFO is a few KB, three orders of magnitude under the reply cap."""
        size = len(str(redis_proc.cli("INFO", "everything")))
        assert size < Limits().reply_bytes / 1000
        reason, detail, _ = await run_once(redis_proc.url)
        assert reason is None, detail
