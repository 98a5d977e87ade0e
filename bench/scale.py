"""Figure 4a, scale in dependencies: 1, 10 and 100 configured checks in one agent.

Why: one pod may gate on several Redis instances and other dependencies, and the design runs each check in
its own task so a slow dependency never delays another. Two things must hold as the count grows:

* **cost grows linearly**: the agent's CPU per check stays flat (here: CPU per check at 100 checks within
  1.2 x of that at 10; at 1 check the fixed cost of the event loop dominates, so 1 is shown, not judged);
* **rounds stay concurrent**: every check still runs about once per ``interval`` and its latency does not
  grow with the number of checks. To make any serialisation visible, the checks go through a proxy that adds
  20 ms each way (so one check, PING + INFO, takes about 80 ms): run one after another, 100 checks would need
  about 8 s per round, and each check would run every 8 s instead of every second.

The baseline is the same agent with one check, in the same run. ``/metrics`` grows with the number of checks
(a histogram and 14 failure counters per check), so its render time at each size is reported too.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from dataclasses import dataclass

from bench.common import (
    Mode,
    Row,
    Section,
    answered,
    bench_agent,
    cpu_seconds,
    fault_proxy,
    http_get,
    log,
    median,
    ms,
    write_config,
)
from harness.redis_server import RedisProcess
from harness.wait import until

SIZES = (1, 10, 100)
LATENCY = 0.020  # added by the proxy in each direction
COUNT = re.compile(rb"^readiness_agent_check_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$", re.M)
TOTAL = re.compile(rb"^readiness_agent_check_duration_seconds_sum\{[^}]*\} ([0-9.e+]+)$", re.M)


@dataclass(frozen=True, slots=True)
class Size:
    """What one agent with ``n`` checks did over ``seconds``."""

    n: int
    seconds: float
    checks: float  # checks completed
    check_seconds: float  # summed check latency
    cpu: float  # agent CPU seconds
    metrics_latency: float  # one /metrics render, median

    @property
    def rate_per_check(self) -> float:
        """Checks per second per configured check (about 1 / interval when nothing waits)."""
        return self.checks / self.n / self.seconds

    @property
    def mean_latency(self) -> float:
        return self.check_seconds / self.checks if self.checks else float("nan")

    @property
    def cpu_per_check(self) -> float:
        return self.cpu / self.checks if self.checks else float("nan")

    @property
    def cpu_percent(self) -> float:
        return self.cpu / self.seconds * 100


def _counters(port: int) -> tuple[float, float, float]:
    started = time.monotonic()
    _, body = http_get(port, "/metrics", timeout=10)
    took = time.monotonic() - started
    return sum(float(x) for x in COUNT.findall(body)), sum(float(x) for x in TOTAL.findall(body)), took


def _measure(n: int, proxy_port: int, seconds: float) -> Size:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        config = write_config([(f"r{i:03d}", proxy_port) for i in range(n)], tmp)
        with bench_agent(["--config", config]).start() as agent:
            until(answered(agent.port, "/readyz", 200), 30, period=0.05, what="/readyz 200")
            time.sleep(1.5)  # every check past its window and on the steady schedule
            count0, sum0, _ = _counters(agent.port)
            cpu0 = cpu_seconds(agent.pid)
            t0 = time.monotonic()
            time.sleep(seconds)
            cpu1 = cpu_seconds(agent.pid)
            elapsed = time.monotonic() - t0
            count1, sum1, _ = _counters(agent.port)
            renders = [_counters(agent.port)[2] for _ in range(5)]
    # The two /metrics reads themselves cost CPU: small next to 10 s of checks, and the same at every size.
    return Size(n, elapsed, count1 - count0, sum1 - sum0, cpu1 - cpu0, median(renders))


def run(mode: Mode) -> Section:
    """One agent per size, one after another, against one Redis behind a latency proxy."""
    section = Section("4a. Scale in dependencies")
    seconds = mode.pick(10.0, 2.5)
    results: dict[int, Size] = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess()).start()
        proxy = stack.enter_context(fault_proxy(server.address))
        proxy.set_latency(LATENCY, LATENCY)
        for n in SIZES:
            log(f"scale: {n} checks for {seconds:g} s")
            results[n] = _measure(n, proxy.port, seconds)
    one, ten, hundred = (results[n] for n in SIZES)
    growth = hundred.cpu_per_check / ten.cpu_per_check
    rate_ratio = hundred.rate_per_check / one.rate_per_check
    latency_ratio = hundred.mean_latency / one.mean_latency
    section.rows += [
        Row("4", "agent CPU per check, 100 checks vs 10 (linear = 1)",
            f"{hundred.cpu_per_check * 1000:.2f} ms ({growth:.2f} x)",
            f"10: {ten.cpu_per_check * 1000:.2f} ms; 1: {one.cpu_per_check * 1000:.2f} ms",
            "<= 1.2 x", growth <= 1.2),
        Row("4", "checks/s per check at 100 (concurrent rounds)",
            f"{hundred.rate_per_check:.2f} /s ({rate_ratio:.2f} x)", f"1 check: {one.rate_per_check:.2f} /s",
            ">= 0.9 x 1 check", rate_ratio >= 0.9),
        Row("4", "mean check latency at 100 (+40 ms proxy RTT)",
            f"{ms(hundred.mean_latency)} ({latency_ratio:.2f} x)", f"1 check: {ms(one.mean_latency)}",
            "<= 1.5 x 1 check", latency_ratio <= 1.5),
        Row("4", "agent CPU at 1 / 10 / 100 checks",
            " / ".join(f"{r.cpu_percent:.1f} %" for r in results.values())),
        Row("4", "/metrics render at 1 / 10 / 100 checks",
            " / ".join(ms(r.metrics_latency) for r in results.values())),
    ]
    section.notes.append(
        "Scale: " + "; ".join(
            f"{r.n} checks: {r.checks:.0f} checks in {r.seconds:.1f} s, {r.rate_per_check:.2f}/s per check, "
            f"mean latency {ms(r.mean_latency)}, CPU {r.cpu:.2f} s ({r.cpu_per_check * 1000:.2f} ms per check), "
            f"/metrics {ms(r.metrics_latency)}" for r in results.values()) + ".")
    return section
