"""The WebSocket 1011 race, reproduced and prevented: ``python -m examples.websocket_app.race``.

Why: the in-app fix of docs/origin.md was never proven, because its mocks could not reproduce the race. This runs
the race for real, twice, under identical faults, and counts what clients see:

(a) the platform's prober watches the backend's naive ``/healthz`` (TCP connect to Redis succeeds), as before
    this project (``--naive none``: no readiness probe at all);
(b) the prober watches readiness-agent's ``/readyz``.

The scenario, on a real ``redis-server`` (recipes from ``tests/support/redisproc.py``): the backend and the
clients are up first; Redis starts with a dataset to load (``-LOADING`` for a few seconds); after a steady
phase Redis is SIGKILLed, restarted on the same port, and loads again. Clients arrive every 40 ms throughout.

1011s are split by when they happened. Nobody can foresee an unannounced kill, so 1011s inside the agent's
detection time after it (docs/design.md's bound + 1 s slack) are counted apart from those later in the recovery.
Run it from the repository root (it uses the test harness in ``tests/support``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from agent.settings import DEFAULT_TIMING
from agent.verdict import Timing
from examples.websocket_app.app import start_backend
from examples.websocket_app.platform_sim import ClientLoad, Outcome, ProbeSpec, Router
from tests.support.agentproc import AgentProcess
from tests.support.redisproc import SLOW_LOAD_ARGS, RedisProcess, RespError

# RedisProcess.start_loading's recipe (docs/design.md): load slowly, but answer -LOADING promptly. Reused here so
# that the start of each run and the restart after the kill both load the dump it saved, slowly.
SLOW_LOAD = list(SLOW_LOAD_ARGS)

STARTUP, STEADY, DETECTION, RECOVERY = "start-up/LOADING", "steady", "kill: inside detection time", "kill: recovery"
PHASES = (STARTUP, STEADY, DETECTION, RECOVERY)
# kubelet's minimum period is 1 s; a faster prober keeps the demo short without changing what it shows.
FAST_PROBE = ProbeSpec(period=0.2, timeout=0.5, failure_threshold=2, success_threshold=1)
CAUSES = ("-LOADING", "refused", "other")
MODES = {"naive": "(a) naive /healthz", "none": "(a) no readiness probe", "agent": "(b) agent /readyz"}


def timing_args(timing: Timing) -> list[str]:
    """The agent's flags for ``timing`` (the demo runs the agent with its defaults, spelled out)."""
    return ["--window", str(timing.window), "--interval", str(timing.interval), "--retry-interval",
            str(timing.retry_interval), "--timeout", str(timing.timeout), "--failure-threshold",
            str(timing.failure_threshold), "--jitter", str(timing.jitter)]


@dataclass(frozen=True)
class Scenario:
    """Durations in seconds. Pauses here pace the scenario; every fact is waited for with a deadline."""

    loading: float = 2.5  # -LOADING at start-up, and again after the restart
    steady: float = 1.5  # traffic with a ready backend (and the held clients served) before the kill
    down: float = 0.5  # SIGKILL → restart, as a supervisor would take
    recovery: float = 1.0  # traffic after the backend is routed to again and the held clients are served
    spacing: float = 0.04  # a new client every 40 ms
    messages: int = 3
    probe: ProbeSpec = FAST_PROBE
    agent: Timing = DEFAULT_TIMING  # the detection bound comes from the agent's own code
    slack: float = 1.0  # docs/design.md: tests allow the detection bound + 1 s

    @property
    def detection_time(self) -> float:
        return self.agent.detection_bound + self.slack


@dataclass
class Marks:
    """When things happened to Redis (``time.monotonic()``)."""

    loading: float = 0.0  # started; PING answers -LOADING
    usable: float = 0.0  # first PONG
    kill: float = 0.0  # just before SIGKILL
    restarted: float = 0.0  # answering again (-LOADING)
    recovered: float = 0.0  # first PONG after the restart
    end: float = 0.0


@dataclass
class RunResult:
    """One run: its mode, the Redis timeline, every client's outcome, the prober's changes of mind."""

    mode: str
    scenario: Scenario
    marks: Marks
    outcomes: list[Outcome]
    prober: list[tuple[float, bool]]

    def phase(self, at: float) -> str:
        if at < self.marks.usable:
            return STARTUP
        if at < self.marks.kill:
            return STEADY
        return DETECTION if at <= self.marks.kill + self.scenario.detection_time else RECOVERY

    @property
    def closed_1011(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "1011"]

    def by_phase(self) -> dict[str, int]:
        counts = Counter(self.phase(o.ended) for o in self.closed_1011)
        return {p: counts[p] for p in PHASES}

    def by_cause(self) -> dict[str, int]:
        """What Redis did to the 1011s: said -LOADING (the race), refused the connection, or something else."""
        counts = Counter(cause(o.detail) for o in self.closed_1011)
        return {c: counts[c] for c in CAUSES}

    def count(self, result: str) -> int:
        return sum(o.result == result for o in self.outcomes)

    @property
    def pinned(self) -> Outcome | None:
        return next((o for o in self.outcomes if o.pinned), None)

    def summary(self) -> dict[str, object]:
        gated = [o.gated for o in self.outcomes]
        return {
            "mode": self.mode, "clients": len(self.outcomes), "served": self.count("served"),
            "closed_1011": len(self.closed_1011), "by_phase": self.by_phase(),
            "by_cause": self.by_cause(), "errors": self.count("error"),
            "gave_up": self.count("gave_up"), "pinned": self.pinned.result if self.pinned else None,
            "gating_total": sum(gated), "gating_max": max(gated, default=0.0),
            "detection_time": self.scenario.detection_time,
            "marks": {k: v - self.marks.loading for k, v in asdict(self.marks).items()},
            "prober_ready": [(at - self.marks.loading, ready) for at, ready in self.prober],
        }


def cause(detail: str) -> str:
    """Why a 1011 happened, from its close reason: -LOADING (the race), refused, or other."""
    if "LOADING" in detail or "BusyLoadingError" in detail:
        return "-LOADING"
    if "Error 111" in detail or "refused" in detail.lower():
        return "refused"
    return "other"


async def _until_routed(router: Router, timeout: float) -> None:
    """Wait until the router would send a new connection to a backend again (a deadline, never a guess)."""
    if await router.route(timeout) is None:
        raise TimeoutError(f"no backend was routable within {timeout:g} s")


def _prepare_dump(redis: RedisProcess, loading: float) -> None:
    """Save a dataset that takes about ``loading`` s to load, then stop: the run starts Redis itself."""
    redis.start()
    redis.start_loading(loading)
    redis.kill()


async def run_once(mode: str, sc: Scenario) -> RunResult:
    """One run of the scenario with the prober watching ``mode``'s readiness URL. Cleans up on any exit."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}")
    marks = Marks()
    clock = time.monotonic
    fact_timeout = sc.loading * 4 + 10  # generous: only a broken harness gets near it
    async with contextlib.AsyncExitStack() as stack:
        redis = RedisProcess()
        stack.callback(redis.close)
        await asyncio.to_thread(_prepare_dump, redis, sc.loading)

        backend = await start_backend(redis.url)
        stack.push_async_callback(backend.stop)
        readiness: str | None = None
        if mode == "agent":
            agent = AgentProcess("--redis-url", redis.url, *timing_args(sc.agent))
            stack.callback(agent.close)
            await asyncio.to_thread(agent.start)
            readiness = agent.base + "/readyz"
        elif mode == "naive":
            readiness = backend.healthz_url
        router = Router()
        target = router.add("backend-0", backend.ws_url, readiness, sc.probe)
        probing = asyncio.create_task(target.prober.run(), name="prober")
        stack.push_async_callback(_cancel, probing)
        load = await ClientLoad(router, sc.spacing, sc.messages).start()
        stack.push_async_callback(load.stop)

        # Start-up: Redis comes up loading its dataset while the backend already accepts.
        marks.loading = clock()
        await asyncio.to_thread(redis.restart, SLOW_LOAD)
        reply = await asyncio.to_thread(redis.ping)
        if not (isinstance(reply, RespError) and reply.code == "LOADING"):
            raise RuntimeError(f"the scenario needs a loading Redis, PING said {reply!r}")
        load.spawn(pinned=True)  # a client at a known moment inside LOADING: (a) cannot escape a 1011
        await asyncio.to_thread(redis.wait_loaded, fact_timeout)
        marks.usable = clock()

        # Steady, then the unannounced kill and a restart on the same port (loading again).
        await _until_routed(router, fact_timeout)
        await load.settled(timeout=fact_timeout)  # the kill hits a steady state, not the burst released at start
        await asyncio.sleep(sc.steady)
        marks.kill = clock()
        await asyncio.to_thread(redis.kill)
        await asyncio.sleep(sc.down)
        await asyncio.to_thread(redis.restart, SLOW_LOAD)
        marks.restarted = clock()
        await asyncio.to_thread(redis.wait_loaded, fact_timeout)
        marks.recovered = clock()
        await _until_routed(router, fact_timeout)
        await load.settled(timeout=fact_timeout)
        await asyncio.sleep(sc.recovery)

        marks.end = clock()
        outcomes = await load.stop()
        transitions = list(target.prober.transitions)
    return RunResult(mode, sc, marks, outcomes, transitions)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_race(sc: Scenario | None = None, naive: str = "naive") -> tuple[RunResult, RunResult]:
    """Both runs, one after the other (they would compete for this machine's cores side by side)."""
    sc = sc or Scenario()
    return await run_once(naive, sc), await run_once("agent", sc)


def format_table(a: RunResult, b: RunResult) -> str:
    """Both runs side by side, for people evaluating the tool."""
    sc = a.scenario
    rows: list[tuple[str, str, str]] = []

    def row(label: str, fn: Callable[[RunResult], object]) -> None:
        rows.append((label, str(fn(a)), str(fn(b))))

    def gating(r: RunResult) -> str:
        gated = [o.gated for o in r.outcomes]
        mean = sum(gated) / len(gated) if gated else 0.0
        return f"{sum(gated):.1f} s / {mean * 1000:.0f} ms / {max(gated, default=0):.2f} s"

    row("clients", lambda r: len(r.outcomes))
    row("  served (every echo came back)", lambda r: r.count("served"))
    row("  closed with 1011", lambda r: len(r.closed_1011))
    row("    during start-up / LOADING", lambda r: r.by_phase()[STARTUP])
    row("    steady", lambda r: r.by_phase()[STEADY])
    row("    kill -> recovery", lambda r: r.by_phase()[DETECTION] + r.by_phase()[RECOVERY])
    row(f"      inside detection time (<= {sc.detection_time:.2f} s)", lambda r: r.by_phase()[DETECTION])
    row("      after it (restart, LOADING, recovery)", lambda r: r.by_phase()[RECOVERY])
    row("    Redis said -LOADING / refused / other",
        lambda r: " / ".join(str(n) for n in r.by_cause().values()))
    row("  other errors / gave up waiting", lambda r: f"{r.count('error')} / {r.count('gave_up')}")
    row("client pinned inside LOADING", lambda r: r.pinned.result if r.pinned else "-")
    row("time lost to gating: total / mean / max", gating)
    widths = [max(len(r[i]) for r in [*rows, ("", MODES[a.mode], MODES[b.mode])]) for i in range(3)]
    p = sc.probe
    header = [
        "The WebSocket 1011 race: same backend, same Redis faults, two readiness URLs",
        f"Redis: -LOADING ~{sc.loading:g} s at start-up; SIGKILL after {sc.steady:g} s steady, restarted "
        f"{sc.down:g} s later, -LOADING again.",
        f"Clients: one every {sc.spacing * 1000:g} ms, {sc.messages} echoes each, through a router gated by a "
        f"prober (period {p.period:g} s, timeout {p.timeout:g} s, failure {p.failure_threshold}, "
        f"success {p.success_threshold}).",
        f"Detection time after the kill: detection bound {sc.agent.detection_bound:.2f} s + {sc.slack:g} s.",
        "",
        f"{'':<{widths[0]}}  {MODES[a.mode]:>{widths[1]}}  {MODES[b.mode]:>{widths[2]}}",
    ]
    body = [f"{label:<{widths[0]}}  {x:>{widths[1]}}  {y:>{widths[2]}}" for label, x, y in rows]
    return "\n".join(header + body)


def main() -> None:
    """``python -m examples.websocket_app.race``: run both scenarios, print them side by side."""
    parser = argparse.ArgumentParser(description="The WebSocket 1011 race, without and with readiness-agent")
    parser.add_argument("--naive", choices=["naive", "none"], default="naive",
                        help="run (a): the backend's TCP /healthz (default) or no readiness probe at all")
    parser.add_argument("--json", action="store_true", help="print both runs' summaries as JSON instead")
    parser.add_argument("--probe-period", type=float, default=FAST_PROBE.period, metavar="S",
                        help="the prober's period (a pushed readiness gate acts like a very short one)")
    parser.add_argument("--probe-failures", type=int, default=FAST_PROBE.failure_threshold, metavar="N",
                        help="failed probes before the router stops sending new clients")
    args = parser.parse_args()
    probe = replace(FAST_PROBE, period=args.probe_period, failure_threshold=args.probe_failures)
    a, b = asyncio.run(run_race(Scenario(probe=probe), naive=args.naive))
    print(json.dumps([a.summary(), b.summary()], indent=2) if args.json else format_table(a, b))


if __name__ == "__main__":
    main()
