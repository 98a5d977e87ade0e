"""A rolling deploy, measured: ``python -m examples.websocket_app.deploy``.

Why: every rolling deploy replaces pods, and the WebSockets of a replaced pod end when its app exits. Without
help they are cut (1006 at the client, all at once), and every client reconnects in the same instant: a storm on
the pods left. With readiness_client the app closes them itself on SIGTERM, with 1012 (Service Restart) at random
moments over its drain window, and the reconnects arrive spread over it.

The scenario, everything real: a ``redis-server``; pod A's app (``examples.websocket_app.app`` as its own
process, ``web.run_app`` with its own SIGTERM handling) and, with the client, its agent (``--watch-port``); pod B's
app in-process. ``clients`` WebSockets are connected to A; A gets SIGTERM, and SIGKILL ``grace`` seconds later if
it is still running (the platform's terminationGracePeriodSeconds, scaled down). Each client, when its socket
ends, records the close code and reconnects at once to B (the load balancer has already taken A out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from examples.websocket_app.app import READY, start_backend
from harness.agent_process import ROOT, AgentProcess
from harness.redis_server import RedisProcess, free_port
from harness.wait import until_async

MODES = {"without": "without the client", "with": "with readiness_client"}
NORMAL = {1000, 1001, 1012, 1013}  # closes a client treats as "reconnect", not as a failure


@dataclass(frozen=True)
class DeployScenario:
    clients: int = 200
    window: float = 2.0  # the app's drain window (with the client)
    grace: float = 4.0  # SIGTERM → SIGKILL
    bucket: float = 0.1  # seconds per bar of the reconnect histogram


@dataclass
class DeployResult:
    """Times are seconds since pod A got SIGTERM."""

    mode: str
    scenario: DeployScenario
    closes: list[tuple[float, int | None]] = field(default_factory=list)
    reconnects: list[float] = field(default_factory=list)
    exit_code: int | None = None

    def codes(self) -> dict[str, int]:
        return dict(sorted(Counter(str(code) for _, code in self.closes).items()))

    def abnormal(self) -> int:
        return sum(code not in NORMAL for _, code in self.closes)

    def histogram(self) -> list[int]:
        """Reconnects per ``bucket`` from SIGTERM to the last one."""
        b = self.scenario.bucket
        bars = [0] * (int(max(self.reconnects, default=0.0) / b) + 1)
        for at in self.reconnects:
            bars[max(0, int(at / b))] += 1
        return bars

    def peak_per_s(self) -> float:
        return max(self.histogram(), default=0) / self.scenario.bucket

    def summary(self) -> dict[str, object]:
        spread = (min(self.reconnects), max(self.reconnects)) if self.reconnects else (0.0, 0.0)
        return {"mode": self.mode, "clients": self.scenario.clients, "codes": self.codes(),
                "abnormal": self.abnormal(), "reconnected": len(self.reconnects),
                "peak_reconnects_per_s": self.peak_per_s(), "first_reconnect_s": round(spread[0], 3),
                "last_reconnect_s": round(spread[1], 3), "exit_code": self.exit_code,
                "bucket_s": self.scenario.bucket, "histogram": self.histogram(),
                "window_s": self.scenario.window, "grace_s": self.scenario.grace}


async def _client(session: aiohttp.ClientSession, a_url: str, b_url: str, connected: asyncio.Event,
                  result: DeployResult, t0: list[float], user: int) -> None:
    async with session.ws_connect(f"{a_url}?user=u{user}") as ws:
        assert (await ws.receive_str()) == READY
        connected.set()
        msg = await ws.receive()
        code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code
    result.closes.append((time.monotonic() - t0[0], code))
    async with session.ws_connect(f"{b_url}?user=u{user}") as ws:  # the load balancer sends it to pod B
        assert (await ws.receive_str()) == READY
        result.reconnects.append(time.monotonic() - t0[0])


async def _accepting(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.ws_connect(url) as ws:
            return (await ws.receive_str()) == READY
    except (aiohttp.ClientError, OSError):
        return False


async def run_deploy(mode: str, sc: DeployScenario) -> DeployResult:
    """One rolling deploy of pod A, ``without`` or ``with`` readiness_client in its app."""
    result = DeployResult(mode, sc)
    async with contextlib.AsyncExitStack() as stack:
        redis = RedisProcess()
        stack.callback(redis.close)
        await asyncio.to_thread(redis.start)
        args = ["--redis-url", redis.url, "--name", "a", "--port", str(port := free_port())]
        if mode == "with":
            watch_port = free_port()
            agent = AgentProcess("--redis-url", redis.url, "--watch-port", str(watch_port))
            stack.callback(agent.close)
            await asyncio.to_thread(agent.start)
            args += ["--watch-url", f"http://127.0.0.1:{watch_port}/watch", "--drain-window", str(sc.window)]
        cmd = [sys.executable, "-m", "examples.websocket_app.app", *args]
        pod_a = await asyncio.to_thread(subprocess.Popen, cmd, cwd=ROOT)
        stack.callback(lambda: pod_a.poll() is None and pod_a.kill())
        pod_b = await start_backend(redis.url, name="b")
        stack.push_async_callback(pod_b.stop)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        a_url = f"http://127.0.0.1:{port}/ws"
        await until_async(lambda: _accepting(session, a_url), 15, what="pod A accepting WebSockets")
        t0 = [0.0]
        events = [asyncio.Event() for _ in range(sc.clients)]
        tasks = [asyncio.create_task(_client(session, a_url, pod_b.ws_url, events[i], result, t0, i))
                 for i in range(sc.clients)]
        async with asyncio.timeout(30):
            await asyncio.gather(*(e.wait() for e in events))
        t0[0] = time.monotonic()
        pod_a.send_signal(signal.SIGTERM)
        kill = asyncio.get_running_loop().call_later(sc.grace, lambda: pod_a.poll() is None and pod_a.kill())
        async with asyncio.timeout(sc.grace + 30):
            await asyncio.gather(*tasks)
        kill.cancel()
        result.exit_code = await asyncio.to_thread(pod_a.wait, 10)
    return result


def format_deploy(runs: list[DeployResult]) -> str:
    """Markdown: one column per mode."""
    rows = [("clients on the replaced pod", lambda r: r.scenario.clients),
            ("close codes seen by the clients", lambda r: ", ".join(f"{c}: {n}" for c, n in r.codes().items())),
            ("abnormal closures (not 1000/1001/1012/1013)", DeployResult.abnormal),
            ("peak reconnect rate (per s, 100 ms bars)", lambda r: f"{r.peak_per_s():g}"),
            ("reconnects from first to last (s after SIGTERM)",
             lambda r: f"{min(r.reconnects):.2f} – {max(r.reconnects):.2f}" if r.reconnects else "-"),
            ("pod A's exit", lambda r: "SIGKILL" if r.exit_code == -signal.SIGKILL else f"exit {r.exit_code}")]
    lines = ["| | " + " | ".join(MODES[r.mode] for r in runs) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(str(fn(r)) for r in runs) + " |" for label, fn in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="A rolling deploy: clients of a pod that gets SIGTERM")
    parser.add_argument("--clients", type=int, default=DeployScenario.clients)
    parser.add_argument("--window", type=float, default=DeployScenario.window)
    parser.add_argument("--grace", type=float, default=DeployScenario.grace)
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the summaries as JSON here")
    args = parser.parse_args()
    sc = DeployScenario(clients=args.clients, window=args.window, grace=args.grace)
    runs = [asyncio.run(run_deploy(mode, sc)) for mode in MODES]
    print(format_deploy(runs))
    if args.out:
        with open(args.out, "w") as out:
            json.dump([r.summary() for r in runs], out, indent=1)


if __name__ == "__main__":
    main()
