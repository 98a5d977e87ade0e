"""Soak: the agent for N minutes while Redis restarts every 30 s and a client probes at 50 req/s.

Not part of CI. Reports what a long run can show and a short test cannot: RSS growth, asyncio task growth,
and false readies over many restart cycles. A *false ready* is a ``/readyz`` 200 answered while Redis was
down for longer than the detection bound, or sooner than the stability window after Redis came back.

    python -m bench.soak --minutes 10          # (make soak runs the default 30 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from harness import wait
from harness.agent_process import AgentProcess
from harness.redis_server import RedisProcess

WINDOW, INTERVAL, RETRY, TIMEOUT, THRESHOLD = 0.5, 1.0, 0.2, 0.5, 3  # the agent's defaults
DETECTION_BOUND = INTERVAL * 1.2 + THRESHOLD * (TIMEOUT + RETRY * 1.2)


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Timeline:
    """When Redis went down and came back, as the soak drove it."""

    downs: list[float] = field(default_factory=list)
    ups: list[float] = field(default_factory=list)

    def false_ready(self, at: float) -> bool:
        """A 200 at ``at`` is false if Redis had been down longer than the bound, or up shorter than the window."""
        last_down = max((t for t in self.downs if t <= at), default=None)
        last_up = max((t for t in self.ups if t <= at), default=None)
        if last_down is not None and (last_up is None or last_up < last_down):
            return at - last_down > DETECTION_BOUND
        return last_up is not None and at - last_up < WINDOW


async def probe(url: str, rate: float, until: float, timeline: Timeline, stats: dict[str, float]) -> None:
    """GET ``url`` at ``rate`` per second until ``until``; count answers, errors, false readies, latency."""
    period = 1.0 / rate
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        next_at = time.monotonic()
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                async with session.get(url) as response:
                    await response.read()
                    stats["requests"] += 1
                    if response.status == 200 and timeline.false_ready(sent):
                        stats["false_ready"] += 1
            except (aiohttp.ClientError, TimeoutError):
                stats["errors"] += 1
            latencies.append(time.monotonic() - sent)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    latencies.sort()
    stats["p99_ms"] = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    stats["max_ms"] = latencies[-1] * 1000 if latencies else float("nan")


async def restarts(redis: RedisProcess, every: float, down: float, until: float, timeline: Timeline) -> int:
    """Kill Redis every ``every`` seconds, keep it down ``down`` seconds, restart it on the same port."""
    cycles = 0
    while time.monotonic() + every < until:
        await asyncio.sleep(every - down)
        timeline.downs.append(time.monotonic())
        await asyncio.to_thread(redis.kill)
        await asyncio.sleep(down)
        timeline.ups.append(time.monotonic())  # before start(): Redis cannot answer earlier than this
        await asyncio.to_thread(redis.restart)
        cycles += 1
    return cycles


def status(agent: AgentProcess) -> dict[str, object]:
    result: dict[str, object] = json.loads(agent.get("/status")[1])
    return result


async def soak(minutes: float, every: float, down: float, rate: float) -> dict[str, object]:
    """Run the soak and return its figures."""
    with RedisProcess() as redis:
        redis.start()
        with AgentProcess("--redis-url", redis.url) as agent:
            assert agent.proc is not None
            pid = agent.proc.pid
            await asyncio.to_thread(wait.until, lambda: agent.get_status("/readyz") == 200, 10, what="agent ready")
            rss_start, tasks_start = rss_mib(pid), status(agent)["runtime"]  # type: ignore[index]
            timeline = Timeline()
            stats = {"requests": 0.0, "errors": 0.0, "false_ready": 0.0}
            until = time.monotonic() + minutes * 60
            cycles, _ = await asyncio.gather(
                restarts(redis, every, down, until, timeline),
                probe(agent.base + "/readyz", rate, until, timeline, stats),
            )
            await asyncio.to_thread(wait.until, lambda: agent.get_status("/readyz") == 200, 10, what="agent ready")
            end = status(agent)
            return {
                "minutes": minutes,
                "restart_cycles": cycles,
                "rss_start_mib": round(rss_start, 1),
                "rss_end_mib": round(rss_mib(pid), 1),
                "tasks_start": tasks_start["asyncio_tasks"],  # type: ignore[index]
                "tasks_end": end["runtime"]["asyncio_tasks"],  # type: ignore[index]
                "probes": int(stats["requests"]),
                "probe_errors": int(stats["errors"]),
                "false_ready": int(stats["false_ready"]),
                "probe_p99_ms": round(stats["p99_ms"], 2),
                "probe_max_ms": round(stats["max_ms"], 2),
                "agent_alive": agent.proc.poll() is None,
                "livez": agent.get("/livez")[0],
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--restart-every", type=float, default=30.0, help="seconds between Redis kills")
    parser.add_argument("--down", type=float, default=5.0, help="seconds Redis stays down each cycle")
    parser.add_argument("--rate", type=float, default=50.0, help="/readyz probes per second")
    args = parser.parse_args()
    figures = asyncio.run(soak(args.minutes, args.restart_every, args.down, args.rate))
    width = max(len(k) for k in figures)
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
