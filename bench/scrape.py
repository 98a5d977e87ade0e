"""Figure 2b, what an expensive endpoint costs the probes: ``/readyz`` under a flood of ``/metrics`` or ``/status``.

Why: anyone on the pod network reaches the HTTP port, and the probes share the agent's one event loop with
``/metrics`` and ``/status``. Before the render cache a 32-connection ``/metrics`` flood held ``/readyz`` at
146 ms (median) and delayed a Redis kill's 503 by 345 ms (issue 22). Three parts, each against its same-run
baseline:

* **flood**: ``wrk -c32`` on nothing, ``/readyz``, ``/status`` or ``/metrics`` (one check), while
  ``harness.readyz_sampler`` polls ``/readyz`` every 5 ms from this process; then Redis is killed mid-flood and
  the first 503 timed. The baseline is the ``/readyz`` flood: the loop saturated by the cheapest request there
  is. Target: under a ``/metrics`` or ``/status`` flood, ``/readyz`` p90 <= 1.5 x that row's p90 and kill ->
  503 <= 50 ms. Latency: 6 rounds of 2 s floods, the endpoints in a rotating order, samples pooled (a tail
  figure on a shared machine moves with the neighbours' load: short, interleaved floods spread it evenly);
  kill -> 503: 2 more rounds, Redis killed 0.5 s into each flood.
* **CPU at 100 checks, one scrape per second**: the agent's CPU (all threads) in 2 s windows with scrapers
  asking for OpenMetrics (as Prometheus does) once a second, paired with windows without (order flipped every
  pair, so drift cancels); the extra CPU per render it caused, i.e. the cost of one scrape per second. Four
  scrapers, one per OpenMetrics variant (each its own cached format), so that the figure stands above the
  idle agent's noise. Target <= 2 % of a core. The in-process CPU of one
  render (this repository's exposition and prometheus_client's own encoders) is shown beside it.
* **renders under concurrent scrapers at 100 checks**: 32 scrapers at once, then 8 scrapers each once a second
  for a few seconds; renders counted by the agent (``/status`` ``runtime.renders``). Target: one render for
  the burst.

Run it on an older commit with ``--only scrape`` from a worktree (the agent is the worktree's, the harness
too): parts the old agent cannot report (renders, the fast exposition) say n/a.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Mode, Row, Section, log, median, ms, quantile
from harness.agent_process import AgentProcess
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess
from harness.wait import until

FLOODS = ("nothing", "/readyz", "/status", "/metrics")
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"  # Prometheus 2.x
# In the CPU windows one scraper per OpenMetrics variant: each is its own cached format, so each second costs
# four renders, which lifts the figure above the idle agent's noise; the row divides by the renders counted.
VARIANTS = (OPENMETRICS, *(f"application/openmetrics-text;version=1.0.0;escaping={e}"
                           for e in ("allow-utf-8", "values", "dots")))
RAMP = 0.5  # s of flood before sampling
WINDOW = 1.5  # s of /readyz samples per flood
LATENCY_ROUNDS = 6  # floods of each endpoint for the latency figures (full run)
AGENT_FLAGS = ("--window", "0.5")
CPU_WINDOW = 2.0  # s per CPU window: two scrapes in a scraped one


@dataclass(slots=True)
class Flood:
    """One endpoint's rounds: /readyz latencies during the flood, kill -> 503 per round, wrk's requests/s."""

    latencies: list[float] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return quantile(self.latencies, q)


def _wrk(url: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(["wrk", "-t1", "-c32", f"-d{round(seconds)}s", url], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _rps(out: str) -> float:
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return float("nan")


def _flood(agent: AgentProcess, server: RedisProcess | None, sampler: ReadyzSampler, target: str,
           into: Flood) -> None:
    """One flood of ``target``: without ``server``, /readyz samples after the ramp; with it, Redis killed after
    the ramp, the 503 timed and the flood stopped."""
    proc = _wrk(f"{agent.base}{target}", RAMP + WINDOW) if target != "nothing" else None
    try:
        started = time.monotonic()
        time.sleep(RAMP if server is not None else RAMP + WINDOW)
        ended = time.monotonic()
        if server is None:
            into.latencies += [s.latency for s in sampler.samples if started + RAMP <= s.at < ended and s.status]
            if proc is not None:
                into.rps.append(_rps(proc.communicate(timeout=30)[0]))
            return
        server.kill()
        down = sampler.wait_for(503, ended, 5)
        if down is None:
            raise RuntimeError(f"/readyz never answered 503 after the kill (flood of {target})")
        into.kills.append(down - ended)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    server.start()
    until(common.answered(agent.port, "/readyz", 200), 15, period=0.01, what="/readyz 200 after the restart")


def floods(mode: Mode) -> dict[str, Flood]:
    """Against one agent with one check: latency rounds (the endpoints in a rotating order, so the machine's
    slow drift and bursts of neighbours' load fall on every endpoint alike), then kill rounds."""
    results = {name: Flood() for name in FLOODS}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess()).start()
        url = common.redis_url(server.port)
        agent = stack.enter_context(common.bench_agent(["--redis-url", url, *AGENT_FLAGS]).start())
        until(common.answered(agent.port, "/readyz", 200), 10, period=0.01, what="/readyz 200")
        sampler = stack.enter_context(ReadyzSampler(agent.port, period=0.005))
        for i in range(LATENCY_ROUNDS if not mode.quick else 2):
            for name in FLOODS[i % 4:] + FLOODS[:i % 4]:
                _flood(agent, None, sampler, name, results[name])
        for _ in range(mode.reps(2, 1)):
            for name in FLOODS:
                _flood(agent, server, sampler, name, results[name])
    return results


# ------------------------------------------------------------------------------------------------ 100 checks


def _renders(agent: AgentProcess) -> dict[str, int] | None:
    """The agent's render counts from a /status rendered now (None when the agent has no render cache)."""
    first = json.loads(common.http_get(agent.port, "/status")[1])["runtime"]
    if "renders" not in first:
        return None

    def fresh() -> dict[str, int] | None:
        renders: dict[str, int] = json.loads(common.http_get(agent.port, "/status")[1])["runtime"]["renders"]
        return renders if renders["status"] > first["renders"]["status"] else None

    return until(fresh, 5, "a fresh /status", period=0.05)


def _scrape(agent: AgentProcess, accept: str = OPENMETRICS) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": accept})
        conn.getresponse().read()
    finally:
        conn.close()


def _scrapers(agent: AgentProcess, count: int, seconds: float, period: float,
              accepts: tuple[str, ...] = (OPENMETRICS,)) -> int:
    """``count`` scrapers, each once per ``period`` (phases spread over it) for ``seconds``: each scrapes
    ``seconds / period`` times, and the call returns when ``seconds`` have passed; the scrapes made."""
    started = time.monotonic()
    made = [0] * count
    rounds = round(seconds / period)

    def scraper(i: int) -> None:
        for k in range(rounds):
            time.sleep(max(0.0, started + period * (k + i / count) - time.monotonic()))
            _scrape(agent, accepts[i % len(accepts)])
            made[i] += 1

    threads = [threading.Thread(target=scraper, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    time.sleep(max(0.0, started + seconds - time.monotonic()))
    return sum(made)


def _burst(agent: AgentProcess, count: int) -> None:
    barrier = threading.Barrier(count)

    def one() -> None:
        barrier.wait(10)
        _scrape(agent)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def _parts(tree: Path) -> dict[str, Any]:
    """The agent's pieces render_cpu needs, in ``tree``'s layout: agent/ in folders (now) or flat (the commits
    before 7931bfc, which a before/after comparison runs); ``Exposition`` is None before the render cache."""
    def get(module: str, name: str) -> Any:
        return getattr(importlib.import_module(module), name)

    if (tree / "agent" / "server").is_dir():
        return {"load_settings": get("agent.config.loader", "load_settings"),
                "Platform": get("agent.config.settings", "Platform"),
                "CheckResult": get("agent.core.model", "CheckResult"),
                "Metrics": get("agent.server.metrics", "Metrics"), "agent": get("agent.commands", "build_agent"),
                "Exposition": get("agent.server.exposition", "Exposition")}
    return {"load_settings": get("agent.config", "load_settings"), "Platform": get("agent.settings", "Platform"),
            "CheckResult": get("agent.model", "CheckResult"), "Metrics": get("agent.metrics", "Metrics"),
            "agent": get("agent.scheduler", "Agent"),
            # the editable install would lend this tree the newer module: look in the tree itself
            "Exposition": get("agent.exposition", "Exposition") if (tree / "agent" / "exposition.py").exists()
            else None}


def render_cpu(checks: int = 100, reps: int = 10) -> dict[str, float]:
    """In-process CPU ms of one render at ``checks`` checks, median: prometheus_client's text and OpenMetrics
    encoders, and the agent's exposition (absent on an older agent)."""
    from prometheus_client import CollectorRegistry, disable_created_metrics
    from prometheus_client.exposition import choose_encoder

    parts = _parts(common.ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        config = common.write_config([(f"r{i:03d}", 1) for i in range(checks)], tmp)
        settings = parts["load_settings"]({"platform": "local"}, {}, lambda _e: (parts["Platform"].LOCAL, "bench"),
                                          config)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as `run` does
    now = [0.0]
    agent = parts["agent"](settings, clock=lambda: now[0])
    registry = CollectorRegistry()
    agent.store.subscribe(parts["Metrics"](registry, lambda: agent.snapshot, settings.window))
    for t in (0.0, settings.timing.window / 2, settings.timing.window):
        now[0] = t
        for name in agent.snapshot.checks:
            agent.record(name, parts["CheckResult"](True, 0.001))
    jobs: dict[str, Callable[[], object]] = {}
    for label, accept in (("text", ""), ("openmetrics", OPENMETRICS)):
        encoder, content_type = choose_encoder(accept)
        jobs[f"library {label}"] = functools.partial(encoder, registry)
        if parts["Exposition"] is not None:
            jobs[f"agent {label}"] = functools.partial(parts["Exposition"](registry).render, content_type, encoder)
    out: dict[str, float] = {}
    gc.freeze()  # as the agent does after start-up: the collector skips the long-lived objects
    for name, job in jobs.items():
        job()  # warm (the agent's memo fills on the first render)
        times = []
        for _ in range(reps):
            started = time.thread_time()
            job()
            times.append(time.thread_time() - started)
        out[name] = median(times) * 1000
    return out


@dataclass(slots=True)
class Hundred:
    """At 100 checks: CPU % per window pair (idle, scraped once a second), scrapes made, renders counted (None:
    the agent does not report them)."""

    pairs: list[tuple[float, float]] = field(default_factory=list)
    scrapes: int = 0
    window_renders: int | None = None
    burst: int = 32
    burst_renders: int | None = None
    sustained_scrapes: int = 0
    sustained_renders: int | None = None
    sustained_seconds: float = 0.0

    @property
    def extra(self) -> float:
        """The scraper's cost in % of a core: the median of the paired differences (drift cancels)."""
        return median([scraped - idle for idle, scraped in self.pairs])

    @property
    def per_render(self) -> float:
        """CPU seconds a scraped window costs beyond its idle twin (the median pair), per render it caused (per
        scrape when the agent does not count renders: then every scrape renders)."""
        renders = self.window_renders if self.window_renders is not None else self.scrapes
        return self.extra / 100 * CPU_WINDOW * len(self.pairs) / renders


def _cpu_window(agent: AgentProcess, seconds: float, scrape: bool) -> tuple[float, int]:
    cpu0, t0 = common.cpu_seconds(agent.pid), time.monotonic()
    made = _scrapers(agent, len(VARIANTS) if scrape else 0, seconds, 1.0, VARIANTS)
    return (common.cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0) * 100, made


def _delta(before: dict[str, int] | None, after: dict[str, int] | None) -> int | None:
    return None if before is None or after is None else after["metrics"] - before["metrics"]


def hundred(mode: Mode) -> Hundred:
    """One agent with 100 checks against one Redis: CPU in short windows with and without a 1/s scraper,
    alternated (the order flipped every pair), then the render counts."""
    result = Hundred()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        server = stack.enter_context(RedisProcess()).start()
        config = common.write_config([(f"r{i:03d}", server.port) for i in range(100)], tmp)
        agent = stack.enter_context(common.bench_agent(["--config", config, *AGENT_FLAGS]).start())
        until(common.answered(agent.port, "/readyz", 200), 30, period=0.05, what="/readyz 200")
        time.sleep(1.5)  # past the window, every check on its steady schedule
        for accept in VARIANTS:  # each format's first render fills its memo (and checks the direct reads)
            _scrape(agent, accept)
        before = _renders(agent)
        for i in range(mode.reps(8, 4)):
            windows = {}
            for scrape in (False, True) if i % 2 else (True, False):
                windows[scrape], made = _cpu_window(agent, CPU_WINDOW, scrape)
                result.scrapes += made
            result.pairs.append((windows[False], windows[True]))
        between = _renders(agent)
        result.window_renders = _delta(before, between)
        _burst(agent, result.burst)
        after_burst = _renders(agent)
        result.burst_renders = _delta(between, after_burst)
        result.sustained_seconds = mode.pick(5.0, 3.0)
        result.sustained_scrapes = _scrapers(agent, 8, result.sustained_seconds, 1.0)
        result.sustained_renders = _delta(after_burst, _renders(agent))
    return result


def _n(value: int | None, otherwise: str) -> str:
    return otherwise if value is None else str(value)


def run(mode: Mode) -> Section:
    """The three parts, one after another."""
    section = Section("2b. Expensive endpoints vs the probes")
    log(f"scrape: floods of {', '.join(FLOODS)}: {LATENCY_ROUNDS if not mode.quick else 2} latency rounds, "
        f"{mode.reps(2, 1)} kill rounds")
    flooded = floods(mode)
    log("scrape: 100 checks, CPU with and without a scraper once a second, then concurrent scrapers")
    big = hundred(mode)
    cost = render_cpu(reps=mode.reps(10, 3))
    base = flooded["/readyz"]
    baseline = f"/readyz flood: {ms(base.p(0.5))} / {ms(base.p(0.9))}; {ms(median(base.kills))}"
    for name in FLOODS:
        f = flooded[name]
        judged = name in ("/status", "/metrics")
        ok = f.p(0.9) <= 1.5 * base.p(0.9) and median(f.kills) <= 0.050
        section.rows.append(Row(
            "2b", f"/readyz median / p90; kill -> 503, flood of {name} (wrk -c32)",
            f"{ms(f.p(0.5))} / {ms(f.p(0.9))}; {ms(median(f.kills))}",
            "" if name == "/readyz" else baseline,
            "p90 <= 1.5 x /readyz flood, kill <= 50 ms" if judged else "", ok if judged else None))
    renders = _n(big.window_renders, "n/a, one per request")
    section.rows.append(Row(
        "2b", "agent CPU at 100 checks: /metrics (OpenMetrics) once a second, per render",
        f"{big.per_render * 100:.1f} % of a core at one render/s",
        f"{len(VARIANTS)} scrapers: median paired +{big.extra:.1f} % ({big.scrapes} scrapes, {renders} renders)",
        "<= 2 %", big.per_render <= 0.020))
    if cost:
        section.rows.append(Row(
            "2b", "CPU of one render at 100 checks, in-process (text; OpenMetrics)",
            f"{cost.get('agent text', float('nan')):.1f} ms; {cost.get('agent openmetrics', float('nan')):.1f} ms",
            f"prometheus_client: {cost['library text']:.1f} ms; {cost['library openmetrics']:.1f} ms"))
    section.rows.append(Row(
        "2b", f"renders for {big.burst} concurrent scrapers at 100 checks",
        _n(big.burst_renders, f"n/a (one per request: {big.burst})"), "", "1",
        None if big.burst_renders is None else big.burst_renders == 1))
    section.rows.append(Row(
        "2b", f"renders, 8 scrapers each once a second for {big.sustained_seconds:g} s",
        _n(big.sustained_renders, "n/a (one per request)"), f"{big.sustained_scrapes} scrapes"))
    rps = ", ".join(f"{n} {median(f.rps):,.0f}" for n, f in flooded.items() if f.rps)
    counts = ", ".join(f"{n}: {len(f.latencies)}" for n, f in flooded.items())
    section.notes += [
        f"Floods: wrk -t1 -c32; /readyz sampled every 5 ms over one keep-alive connection during {WINDOW:g} s "
        f"after a {RAMP:g} s ramp, the floods in a rotating order, samples pooled ({counts}); then one flood per "
        f"endpoint and kill round with Redis killed {RAMP:g} s in. wrk requests/s: {rps}.",
        f"100 checks: CPU of the agent's threads (/proc schedstat) in {len(big.pairs)} pairs of {CPU_WINDOW:g} s "
        "windows, idle vs scraped once a second, % of a core: "
        + ", ".join(f"{i:.1f}/{s:.1f}" for i, s in big.pairs) + "; the row: "
        "the scraped windows' extra CPU over the renders they caused.",
    ]
    return section
