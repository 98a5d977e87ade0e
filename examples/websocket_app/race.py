"""The WebSocket 1011 race, reproduced and prevented: ``python -m examples.websocket_app.race``.

Why: the in-app fix of docs/origin.md was never proven, because its mocks could not reproduce the race. This runs
the race for real, once per mode, under identical faults, and counts what clients see:

(a) the platform's prober watches the backend's naive ``/healthz`` (TCP connect to Redis succeeds), as before
    this project (``--naive none``: no readiness probe at all);
(b) the prober watches readiness-agent's ``/readyz``;
(c) as (b), and the agent also pushes its verdict into the pod's readiness gate (``--kube-readiness-gate``,
    against the Kubernetes API stand-in, examples/websocket_app/gate.py): the router drops the pod when the
    condition goes False, without waiting for the prober's period;
(d) as (b), and the backend itself follows the agent's verdict with readiness_client (``GET /watch``): it answers
    a WebSocket handshake with 503 while the agent says not ready, whatever the router still sends it. Refused
    handshakes are counted apart from 1011s; the 1011s left are handshakes completed before the agent knew.

The scenario, on a real ``redis-server`` (recipes from ``harness/redis_server.py``): the backend and the
clients are up first; Redis starts with a dataset to load (``-LOADING`` for a few seconds); after a steady
phase Redis is SIGKILLed, restarted on the same port, and loads again (``--kills N``: N such cycles). A client
arrives every 40 ms throughout (``--spacing``).

1011s after a kill are split by when their handshake was let through. Nobody can foresee an unannounced kill, so
a handshake the backend accepted before the agent could know of it is *inside*: before the agent's detection time
after the kill (docs/design.md's bound + 1 s slack) ran out, and in mode (d) before the app's watcher learned "not
ready" (measured: milliseconds). A 1011 whose handshake came later is *outside*: what readiness is for. With
``--down`` past the detection time (``make demo-race``: 5 s), Redis is still unusable when it runs out.
``--propagation S`` delays every readiness change before the router acts on it, as EndpointSlice, kube-proxy and
load-balancer programming do on a real cluster (default 0: only the mechanisms' own latency).
Run it from the repository root (it uses the test harness in ``harness/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import replace

from agent.core.verdict import Timing
from examples.websocket_app import gate
from examples.websocket_app.app import start_backend
from examples.websocket_app.platform_sim import ClientLoad, Router
from examples.websocket_app.race_model import (
    CAUSES,
    DETECTION,
    FAST_PROBE,
    MODES,
    PHASES,
    RECOVERY,
    STARTUP,
    STEADY,
    Marks,
    RunResult,
    Scenario,
    cause,
)
from harness.agent_process import AgentProcess
from harness.redis_server import SLOW_LOAD_ARGS, RedisProcess, RespError, free_port
from harness.wait import until_async

__all__ = ["CAUSES", "DETECTION", "FAST_PROBE", "MODES", "PHASES", "RECOVERY", "STARTUP", "STEADY", "Marks",
           "RunResult", "Scenario", "cause", "format_table", "run_modes", "run_once", "run_race"]

# RedisProcess.start_loading's recipe (docs/design.md): load slowly, but answer -LOADING promptly. Reused here so
# that the start of each run and the restart after the kill both load the dump it saved, slowly.
SLOW_LOAD = list(SLOW_LOAD_ARGS)


def timing_args(timing: Timing) -> list[str]:
    """The agent's flags for ``timing`` (the demo runs the agent with its defaults, spelled out)."""
    return ["--window", str(timing.window), "--interval", str(timing.interval), "--retry-interval",
            str(timing.retry_interval), "--timeout", str(timing.timeout), "--failure-threshold",
            str(timing.failure_threshold), "--jitter", str(timing.jitter)]


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

        watch = f"http://127.0.0.1:{free_port()}/watch" if mode == "client" else None
        backend = await start_backend(redis.url, watch_url=watch)
        stack.push_async_callback(backend.stop)
        readiness: str | None = None
        api = await gate.start_api(stack) if mode == "gate" else None
        if mode in ("agent", "gate", "client"):
            watch_args = ("--watch-port", watch.split(":")[2].split("/")[0]) if watch else ()
            args = ("--redis-url", redis.url, *timing_args(sc.agent), *watch_args)
            agent = gate.agent_process(stack, api, *args) if api is not None else AgentProcess(*args)
            stack.callback(agent.close)
            await asyncio.to_thread(agent.start)  # the loop keeps serving the API stand-in meanwhile
            readiness = agent.base + "/readyz"
        elif mode == "naive":
            readiness = backend.healthz_url
        router = Router(sc.propagation)
        target = router.add(gate.POD, backend.ws_url, readiness, sc.probe)
        if api is not None:
            gate.follow(api, router, target)
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

        for _ in range(sc.kills):  # steady, then the unannounced kill and a restart on the same port (loading)
            await until_async(lambda: router.route(fact_timeout), fact_timeout, what="a routable backend")
            await load.settled(timeout=fact_timeout)  # the kill hits a steady state, not a burst released earlier
            await asyncio.sleep(sc.steady)
            marks.kills.append(clock())
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(sc.down)
            await asyncio.to_thread(redis.restart, SLOW_LOAD)
            marks.restarts.append(clock())
            await asyncio.to_thread(redis.wait_loaded, fact_timeout)
            marks.recoveries.append(clock())
        await until_async(lambda: router.route(fact_timeout), fact_timeout, what="a routable backend")
        await load.settled(timeout=fact_timeout)
        await asyncio.sleep(sc.recovery)

        marks.end = clock()
        outcomes = await load.stop()
        for outcome in outcomes:  # the backend's own record of when it let each handshake through
            outcome.accepted = backend.accepted.get(f"c{outcome.client}")
        result = RunResult(mode, sc, marks, outcomes, list(target.prober.transitions),
                           list(target.routable_changes), gate.condition_changes(api) if api else [],
                           list(backend.verdicts))
    return result


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])  # not ``await task`` under suppress(CancelledError): that swallows our own


async def run_race(sc: Scenario | None = None, naive: str = "naive") -> tuple[RunResult, RunResult]:
    """Runs (a) and (b), one after the other (they would compete for this machine's cores side by side)."""
    sc = sc or Scenario()
    return await run_once(naive, sc), await run_once("agent", sc)


async def run_modes(modes: list[str], sc: Scenario | None = None) -> list[RunResult]:
    """One run per mode, one after the other, under the same scenario."""
    sc = sc or Scenario()
    return [await run_once(mode, sc) for mode in modes]


def _ms(values: list[float | None]) -> str:
    return " ".join("-" if v is None else f"{v * 1000:.0f}" for v in values) or "-"


def format_table(*runs: RunResult) -> str:
    """The runs side by side, for people evaluating the tool."""
    sc = runs[0].scenario
    rows: list[tuple[str, ...]] = []

    def row(label: str, fn: Callable[[RunResult], object]) -> None:
        rows.append((label, *(str(fn(r)) for r in runs)))

    def gating(r: RunResult) -> str:
        gated = [o.gated for o in r.outcomes]
        mean = sum(gated) / len(gated) if gated else 0.0
        return f"{sum(gated):.1f} s / {mean * 1000:.0f} ms / {max(gated, default=0):.2f} s"

    row("clients", lambda r: len(r.outcomes))
    row("  served (every echo came back)", lambda r: r.count("served"))
    row("  closed with 1011", lambda r: len(r.closed_1011))
    row("    during start-up / LOADING", lambda r: r.by_phase()[STARTUP])
    row("    steady", lambda r: r.by_phase()[STEADY])
    row("    after a kill", lambda r: r.by_phase()[DETECTION] + r.by_phase()[RECOVERY])
    row("      per kill", lambda r: " ".join(map(str, r.per_kill())) or "-")
    row("      inside: handshake before the agent could know", lambda r: r.by_phase()[DETECTION])
    row("      outside: handshake after it", lambda r: r.by_phase()[RECOVERY])
    row("    Redis said -LOADING / refused / other",
        lambda r: " / ".join(str(n) for n in r.by_cause().values()))
    row("  handshakes refused by the app (503)", lambda r: r.count("refused"))
    row("  other errors / gave up waiting", lambda r: f"{r.count('error')} / {r.count('gave_up')}")
    row("client pinned inside LOADING", lambda r: r.pinned.result if r.pinned else "-")
    row("time lost to gating: total / mean / max", gating)
    row("kill -> the agent could know, ms (per kill)", lambda r: _ms(list(r.known_after())))
    row("kill -> out of rotation, ms (per kill)", lambda r: _ms(r.out_of_rotation()))
    row("clients routed while the gate was False", lambda r: len(r.routed_while_gate_false()) if r.gate else "-")
    names = ("", *(MODES[r.mode] for r in runs))
    widths = [max(len(r[i]) for r in [*rows, names]) for i in range(len(names))]
    p = sc.probe
    header = [
        "The WebSocket 1011 race: same backend, same Redis faults, different readiness",
        f"Redis: -LOADING ~{sc.loading:g} s at start-up; {sc.kills} x (SIGKILL after {sc.steady:g} s steady, "
        f"restarted {sc.down:g} s later, -LOADING again).",
        f"Clients: one every {sc.spacing * 1000:g} ms, {sc.messages} echoes each, through a router gated by a "
        f"prober (period {p.period:g} s, timeout {p.timeout:g} s, failure {p.failure_threshold}, "
        f"success {p.success_threshold}); (c) also by the pushed gate condition.",
        f"Readiness change -> router: {sc.propagation * 1000:g} ms propagation delay (0: not modelled).",
        f"The agent could know of a kill: detection bound {sc.agent.detection_bound:.2f} s + {sc.slack:g} s after "
        f"it; (d): when the app's watcher learned it, if sooner.",
        "",
        "  ".join(f"{n:<{w}}" if i == 0 else f"{n:>{w}}" for i, (n, w) in enumerate(zip(names, widths, strict=True))),
    ]
    body = ["  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
    return "\n".join(header + body)


# Load-balancer programming delays of the sweep (make demo-race); 3 s is GKE's health check as the chart ships
# it (1 s interval x unhealthy after 2 + 1 s timeout: tests/test_gke.py LB_DETECTION_SECONDS).
DELAYS = (0.0, 0.05, 1.0, 3.0, 5.0)


def sweep_row(run: RunResult) -> dict[str, object]:
    """One cell of the sweep: 1011s per kill, inside and outside (by handshake), and refused handshakes."""
    phases = run.by_phase()
    kills = max(1, len(run.marks.kills))
    return {"mode": run.mode, "delay": run.scenario.propagation, "down": run.scenario.down,
            "kills": len(run.marks.kills), "per_kill": (phases[DETECTION] + phases[RECOVERY]) / kills,
            "inside": phases[DETECTION], "outside": phases[RECOVERY], "startup": phases[STARTUP],
            "steady": phases[STEADY], "known_after_ms": [round(s * 1000, 1) for s in run.known_after()],
            "refused": run.count("refused"), "served": run.count("served"), "clients": len(run.outcomes)}


def format_sweep(runs: list[RunResult]) -> str:
    """Markdown: one row per mode, one column per delay; 1011 per kill (inside / outside), refused handshakes."""
    rows = [sweep_row(r) for r in runs]
    delays = sorted({float(str(r["delay"])) for r in rows})
    modes = list(dict.fromkeys(str(r["mode"]) for r in rows))
    head = "| LB delay → | " + " | ".join(f"{d * 1000:g} ms" if d < 1 else f"{d:g} s" for d in delays) + " |"
    lines = [head, "|---|" + "---:|" * len(delays)]
    for mode in modes:
        cells = []
        for d in delays:
            r = next((x for x in rows if x["mode"] == mode and x["delay"] == d), None)
            cells.append("-" if r is None else f"{r['per_kill']:g} ({r['inside']} in / {r['outside']} out)"
                         + (f", {r['refused']} refused" if r["refused"] else ""))
        lines.append(f"| {MODES[mode]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """``python -m examples.websocket_app.race``: run both scenarios, print them side by side."""
    parser = argparse.ArgumentParser(description="The WebSocket 1011 race, without and with readiness-agent")
    parser.add_argument("--naive", choices=["naive", "none"], default="naive",
                        help="run (a): the backend's TCP /healthz (default) or no readiness probe at all")
    parser.add_argument("--modes", default="abcd", help="which runs, in order: a, b, c and/or d (default abcd)")
    parser.add_argument("--kills", type=int, default=1, metavar="N", help="kill/restart cycles per run")
    parser.add_argument("--spacing", type=float, default=0.04, metavar="S", help="seconds between new clients")
    parser.add_argument("--down", type=float, default=Scenario.down, metavar="S",
                        help="seconds from each SIGKILL to the restart (make demo-race: 5, past the detection time)")
    parser.add_argument("--propagation", type=float, default=0.0, metavar="S",
                        help="delay before the router acts on a readiness change (EndpointSlice, kube-proxy, NEG)")
    parser.add_argument("--json", action="store_true", help="print the runs' summaries as JSON instead")
    parser.add_argument("--delays", default=None, metavar="S,S,...",
                        help=f"sweep: every mode at each load-balancer delay (make demo-race: "
                             f"{','.join(f'{d:g}' for d in DELAYS)}); prints the sweep table")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the sweep's rows as JSON here")
    parser.add_argument("--probe-period", type=float, default=FAST_PROBE.period, metavar="S",
                        help="the prober's period (a pushed readiness gate acts like a very short one)")
    parser.add_argument("--probe-failures", type=int, default=FAST_PROBE.failure_threshold, metavar="N",
                        help="failed probes before the router stops sending new clients")
    args = parser.parse_args()
    probe = replace(FAST_PROBE, period=args.probe_period, failure_threshold=args.probe_failures)
    by_letter = {"a": args.naive, "b": "agent", "c": "gate", "d": "client"}
    if not args.modes or set(args.modes) - set(by_letter):
        parser.error("--modes takes the letters a, b, c, d")
    sc = Scenario(probe=probe, kills=args.kills, spacing=args.spacing, propagation=args.propagation, down=args.down)
    modes = [by_letter[m] for m in args.modes]
    if args.delays is None:
        runs = asyncio.run(run_modes(modes, sc))
        print(json.dumps([r.summary() for r in runs], indent=2) if args.json else format_table(*runs))
        return
    runs = []
    for delay in (float(d) for d in args.delays.split(",")):
        batch = asyncio.run(run_modes(modes, replace(sc, propagation=delay)))
        print(format_table(*batch), flush=True)
        runs.extend(batch)
    print(format_sweep(runs))
    if args.out:
        with open(args.out, "w") as out:
            json.dump([sweep_row(r) for r in runs], out, indent=1)


if __name__ == "__main__":
    main()
