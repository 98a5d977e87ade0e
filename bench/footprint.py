"""Figure 3, footprint: memory, start-up time, idle CPU and Redis load of one agent, against the floor.

Why: the agent runs beside every WebSocket pod (GKE packs them by the thousand) and in every Cloud Run
instance (billed for memory and CPU), so what it costs at rest matters more than what it costs under load.
The floor is the least any Python sidecar with the same libraries can cost: a bare process that imports
``aiohttp.web``, ``redis.asyncio`` and ``prometheus_client`` and serves a constant ``/livez``
(``bench.bare_server``). All variants are started alternately, in a shuffled order, in the same run, and
measured from outside through ``/proc``:

* start-up: spawn → first ``/livez`` 200 (a fresh interpreter each time, OS page cache warm), median;
* RSS after an idle window (steady) and the high-water mark after a little probe traffic (peak);
* idle CPU over the window at default intervals, from ``/proc/<pid>/stat``;
* Redis commands/s the agent causes, from ``INFO commandstats`` on a Redis only it uses;
* optional features priced by difference: JSON logs (google-cloud-logging) on the agent itself, and the
  Kubernetes client on the floor (``--kube-readiness-gate`` is refused by this version of the agent);
* one start under ``python -X importtime``, grouped by library, to show what could be deferred.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import (
    PYTHON,
    REAPER,
    Mode,
    Row,
    Section,
    answered,
    bench_agent,
    calls_delta,
    command_calls,
    cpu_seconds,
    free_port,
    http_status,
    log,
    median,
    memory_mib,
    ms,
    redis_client,
    redis_url,
)
from harness.redis_server import RedisProcess
from harness.wait import until

KUBE_MODULE = "kubernetes"
GCL_MODULE = "google.cloud.logging_v2.handlers"


@dataclass
class Running:
    """One started variant: its pid and port, how long it took to answer /livez, and how to stop it."""

    pid: int
    port: int
    live: float
    stop: Callable[[], None]


def _spawn_floor(extra: list[str]) -> Running:
    port = free_port()
    argv = [PYTHON, "-m", "bench.bare_server", "--port", str(port)]
    for module in extra:
        argv += ["--import", module]
    spawned = time.monotonic()
    proc = REAPER.spawn(argv)
    try:
        live = until(answered(port, "/livez", 200, proc), 30, period=0.002, what="/livez 200") - spawned
    except BaseException:
        REAPER.kill(proc)
        raise
    return Running(proc.pid, port, live, lambda: REAPER.kill(proc))


def _spawn_agent(url: str, log_format: str) -> Running:
    agent = bench_agent(["--redis-url", url, "--log-format", log_format]).spawn()
    try:
        live = agent.wait_live(timeout=30, period=0.002)
    except BaseException:
        agent.close()
        raise
    return Running(agent.pid, agent.port, live, agent.close)


def _spawn(name: str, url_text: str, url_json: str) -> Running:
    """The five things compared: the floor, the agent (text and JSON logs), the floor plus one library."""
    if name == "floor":
        return _spawn_floor([])
    if name == "floor+kubernetes":
        return _spawn_floor([KUBE_MODULE])
    if name == "floor+gcl":
        return _spawn_floor([GCL_MODULE])
    if name == "agent":
        return _spawn_agent(url_text, "text")
    if name == "agent json":
        return _spawn_agent(url_json, "json")
    raise ValueError(name)


NAMES = ("floor", "agent", "agent json", "floor+kubernetes", "floor+gcl")


def _import_profile(url: str) -> tuple[float, list[tuple[str, float]]]:
    """One agent start under ``-X importtime``: total import ms and self time grouped by top-level package."""
    agent = bench_agent(["--redis-url", url, "--log-format", "text"], python_flags=("-X", "importtime")).spawn()
    try:
        agent.wait_live(timeout=30)
        time.sleep(0.3)
        text = agent.output()
    finally:
        agent.close()
    by_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if not match:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        by_package[name.split(".")[0]] += int(self_us) / 1000
        if len(indent) == 1:
            total += int(cumulative_us) / 1000
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[:8]
    return total, top


def run(mode: Mode) -> Section:
    """Start-up A/B, then an idle window with everything running side by side."""
    section = Section("3. Footprint")
    reps = mode.reps(5, 2)
    idle = mode.pick(60.0, 4.0)
    rng = random.Random(3)
    with contextlib.ExitStack() as stack:
        redis_text = stack.enter_context(RedisProcess()).start()
        redis_json = stack.enter_context(RedisProcess()).start()
        urls = redis_url(redis_text.port), redis_url(redis_json.port)

        log(f"footprint: {reps} cold starts of each of {len(NAMES)} variants, shuffled")
        starts: dict[str, list[float]] = {name: [] for name in NAMES}
        for _ in range(reps):
            order = list(NAMES)
            rng.shuffle(order)
            for name in order:
                running = _spawn(name, *urls)
                running.stop()
                starts[name].append(running.live)

        log(f"footprint: all variants idle side by side for {idle:g} s")
        procs: dict[str, Running] = {}
        for name in NAMES:
            procs[name] = _spawn(name, *urls)
            stack.callback(procs[name].stop)
        until(answered(procs["agent"].port, "/readyz", 200), 15, period=0.002, what="/readyz 200")
        until(answered(procs["agent json"].port, "/readyz", 200), 15, period=0.002, what="/readyz 200")
        time.sleep(2.0)  # past the stability window and first round of checks: the steady schedule
        client = redis_client(redis_text.port)
        cpu0 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        calls0 = command_calls(client)
        t0 = time.monotonic()
        time.sleep(idle)
        calls1 = command_calls(client)
        cpu1 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        elapsed = time.monotonic() - t0
        steady = {name: memory_mib(p.pid)[0] for name, p in procs.items()}
        for p in procs.values():  # a little probe traffic, so the peak includes serving probes and a scrape
            for path in ["/readyz"] * 50 + ["/metrics"] * 5 + ["/livez"] * 5:
                http_status(p.port, path)
        peak = {name: memory_mib(p.pid)[1] for name, p in procs.items()}
        client.close()
        agent_calls = calls_delta(calls0, calls1, own={"info": 1})

        log("footprint: one start under -X importtime")
        import_total, import_top = _import_profile(redis_url(redis_text.port))

    cpu = {name: (cpu1[name] - cpu0[name]) / elapsed * 100 for name in procs}
    cmds = sum(agent_calls.values()) / elapsed
    start = {name: median(v) for name, v in starts.items()}
    rss_ratio = steady["agent"] / steady["floor"]
    peak_ratio = peak["agent"] / peak["floor"]
    section.rows += [
        Row("3", "steady RSS (text logs, gate off)", f"{steady['agent']:.1f} MiB ({rss_ratio:.2f} x)",
            f"floor {steady['floor']:.1f} MiB", "<= 1.10 x floor", rss_ratio <= 1.10),
        Row("3", "peak RSS (VmHWM)", f"{peak['agent']:.1f} MiB ({peak_ratio:.2f} x)",
            f"floor {peak['floor']:.1f} MiB", "<= 1.10 x floor", peak_ratio <= 1.10),
        Row("3", f"start -> first /livez 200, median of {reps}",
            f"{ms(start['agent'])} ({start['agent'] / start['floor']:.2f} x)",
            f"floor {ms(start['floor'])}", "<= 300 ms", start["agent"] <= 0.3),
        Row("3", f"idle CPU over {idle:g} s at defaults", f"{cpu['agent']:.2f} % of a core",
            f"floor {cpu['floor']:.2f} %", "<= 1 %", cpu["agent"] <= 1.0),
        Row("3", "Redis commands/s caused", f"{cmds:.2f} /s", "", "<= 3 /s", cmds <= 3.0),
        Row("3", "cost of JSON logs (google-cloud-logging)",
            f"+{steady['agent json'] - steady['agent']:.1f} MiB, +{ms(start['agent json'] - start['agent'])} start",
            f"floor+gcl: +{steady['floor+gcl'] - steady['floor']:.1f} MiB, "
            f"+{ms(start['floor+gcl'] - start['floor'])}"),
        Row("3", "cost of the Kubernetes client (gate)", "priced on the floor (gate needs an API server)",
            f"floor+kubernetes: +{steady['floor+kubernetes'] - steady['floor']:.1f} MiB, "
            f"+{ms(start['floor+kubernetes'] - start['floor'])}"),
    ]
    section.notes += [
        "Start-up samples (s): " + "; ".join(f"{n} {', '.join(f'{x:.3f}' for x in v)}" for n, v in starts.items()),
        "Steady RSS (MiB): " + ", ".join(f"{n} {v:.1f}" for n, v in steady.items())
        + "; peak: " + ", ".join(f"{n} {v:.1f}" for n, v in peak.items()) + ".",
        "Idle CPU (% of a core): " + ", ".join(f"{n} {v:.2f}" for n, v in cpu.items())
        + f"; agent's Redis commands over {elapsed:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(agent_calls.items())) + ".",
        f"`-X importtime` of one agent start: {import_total:.0f} ms of imports in all (importtime itself slows "
        "imports); self time by top-level package: "
        + ", ".join(f"{name} {value:.0f} ms" for name, value in import_top) + ".",
    ]
    return section
