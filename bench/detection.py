"""Figure 1, detection latency: how soon ``/readyz`` follows Redis down and back up, against an exec probe.

Why: the agent exists so a pod stops taking new WebSockets before they meet a dead Redis, and takes them
again soon after Redis is usable. The usual alternative is a kubelet ``exec`` probe running ``redis-cli ping``,
so that is the baseline, run in the same process, on the same faults, at the same instants:

* **kill**: SIGKILL redis-server (its connections get an RST/EOF; the agent's monitor connection should see
  it at once), hold a short outage (< ``backoff_after``), restart it on the same port;
* **long outage**: the same, held longer than ``backoff_after``, so recovery runs on backed-off re-checks;
* **pause**: SIGSTOP (the kernel still accepts connections, nothing answers), then SIGCONT;
* **blackhole**: a proxy that stops forwarding (a vanished peer, no RST), then forwards again.

The agent runs at its defaults. Each fault lands at a random phase of its check schedule (a random settle
after ready). The exec probe is measured at the aggressive setting (period 1 s, thresholds 1); the
Kubernetes-defaults case (period 10 s, failureThreshold 3, timeout 1 s) is computed from the measured exec
times, because running it would take minutes per sample.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from agent.config.settings import DEFAULT_TIMING
from bench.common import (
    ExecProbe,
    Mode,
    Row,
    Section,
    bench_agent,
    fault_proxy,
    log,
    median,
    ms,
    quantile,
    redis_url,
    secs,
)
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess

TIMING = DEFAULT_TIMING  # the agent's defaults: the bench runs it with no timing flags
K8S_PERIOD, K8S_THRESHOLD, K8S_TIMEOUT = 10.0, 3, 1.0  # kubelet defaults for a probe


@dataclass
class Samples:
    """Detection (fault → 503) and recovery (back → 200) times of the agent and of the exec probe."""

    agent_down: list[float] = field(default_factory=list)
    exec_down: list[float] = field(default_factory=list)
    agent_up: list[float] = field(default_factory=list)
    exec_up: list[float] = field(default_factory=list)
    missed: int = 0  # faults the agent did not report within twice its bound (counted as misses)


def _settle(watcher: ReadyzSampler, probe: ExecProbe, rng: random.Random) -> None:
    """Both ready, then a random pause so the fault lands at a random phase of the check schedule."""
    if not watcher.wait_steady(200, 15):
        raise RuntimeError("agent did not become ready")
    probe.wait_steady(True, 5)
    time.sleep(rng.uniform(0.2, 0.2 + TIMING.interval))


def _fault_cycle(samples: Samples, watcher: ReadyzSampler, probe: ExecProbe, rng: random.Random,
                 fault: Callable[[], object], repair: Callable[[], object], hold: float) -> None:
    """One fault: inject, time both detections, hold the outage for ``hold`` s, repair, time both recoveries."""
    _settle(watcher, probe, rng)
    start = time.monotonic()
    fault()
    bound = TIMING.detection_bound
    down = watcher.wait_for(503, start, timeout=bound * 2 + 1)
    if down is None:
        samples.missed += 1
    else:
        samples.agent_down.append(down - start)
    # Keep the fault until the exec probe has seen it too (it must, within period + timeout), and for `hold`.
    exec_down = probe.wait_for(False, start, timeout=probe.period + probe.timeout + 1)
    if exec_down is not None:
        samples.exec_down.append(exec_down - start)
    time.sleep(max(0.0, start + hold - time.monotonic()))
    back = time.monotonic()
    repair()
    up = watcher.wait_for(200, back, timeout=TIMING.window + TIMING.interval * 2 + 3)
    if up is not None:
        samples.agent_up.append(up - back)
    exec_up = probe.wait_for(True, back, timeout=probe.period + probe.timeout + 2)
    if exec_up is not None:
        samples.exec_up.append(exec_up - back)


def _k8s_detect(exec_fail: float) -> float:
    """Median detection of the default exec probe, on paper: phase (uniform over 10 s), two more failing
    periods, and the failing exec itself (its measured time, or the 1 s timeout when the exec hangs)."""
    return K8S_PERIOD / 2 + (K8S_THRESHOLD - 1) * K8S_PERIOD + exec_fail


def run(mode: Mode) -> Section:
    """Measure every fault kind; return the rows of figure 1."""
    section = Section("1. Detection latency")
    rng = random.Random(4)
    kills, long_outages, pauses, blackholes = Samples(), Samples(), Samples(), Samples()
    n_kill, n_long = mode.reps(10, 3), mode.reps(3, 1)
    n_pause, n_black = mode.reps(5, 1), mode.reps(5, 1)
    short_hold = 1.5  # < backoff_after (5 s): recovery runs at retry_interval
    long_hold = TIMING.backoff_after + 2.0  # > backoff_after: recovery runs on backed-off re-checks

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess()).start()
        agent = stack.enter_context(bench_agent(["--redis-url", redis_url(server.port)]).start())
        watcher = stack.enter_context(ReadyzSampler(agent.port))
        probe = stack.enter_context(ExecProbe(server.port, period=1.0, timeout=1.0))
        log(f"detection: {n_kill} kills with a {short_hold:g} s outage")
        for _ in range(n_kill):
            _fault_cycle(kills, watcher, probe, rng, server.kill, server.start, short_hold)
        log(f"detection: {n_long} kills with a {long_hold:g} s outage")
        for _ in range(n_long):
            _fault_cycle(long_outages, watcher, probe, rng, server.kill, server.start, long_hold)
        exec_refused = probe.exec_seconds(False)  # before the pauses: those failures are 1 s timeouts
        log(f"detection: {n_pause} pauses (SIGSTOP)")
        for _ in range(n_pause):
            _fault_cycle(pauses, watcher, probe, rng, server.pause, server.resume, 0.0)
        exec_ok = probe.exec_seconds(True)

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess()).start()
        proxy = stack.enter_context(fault_proxy(server.address))
        agent = stack.enter_context(bench_agent(["--redis-url", redis_url(proxy.port)]).start())
        watcher = stack.enter_context(ReadyzSampler(agent.port))
        probe = stack.enter_context(ExecProbe(proxy.port, period=1.0, timeout=1.0))
        log(f"detection: {n_black} blackholes (proxy stops forwarding)")
        blackhole, forward = partial(proxy.set_mode, "blackhole"), partial(proxy.set_mode, "pass")
        for _ in range(n_black):
            _fault_cycle(blackholes, watcher, probe, rng, blackhole, forward, 0.0)
        exec_ok += probe.exec_seconds(True)

    _rows(section, kills, long_outages, pauses, blackholes, exec_ok, exec_refused)
    return section


def _rows(section: Section, kills: Samples, long_outages: Samples, pauses: Samples, blackholes: Samples,
          exec_ok: list[float], exec_refused: list[float]) -> None:
    t = TIMING
    bound = t.detection_bound
    all_kills = kills.agent_down + long_outages.agent_down
    all_exec_kills = kills.exec_down + long_outages.exec_down
    missed_kills = kills.missed + long_outages.missed
    kill_median = median(all_kills) if not missed_kills else float("inf")
    section.rows.append(Row(
        "1", f"kill -> /readyz 503, median (p90) of {len(all_kills) + missed_kills}",
        f"{ms(kill_median)} ({ms(quantile(all_kills, 0.9))})",
        f"exec 1s/1: {ms(median(all_exec_kills))}; k8s defaults (paper): {secs(_k8s_detect(median(exec_refused)))}",
        "<= 250 ms", kill_median <= 0.25))
    for name, samples in (("pause (SIGSTOP)", pauses), ("blackhole", blackholes)):
        worst = max(samples.agent_down) if samples.agent_down and not samples.missed else float("inf")
        section.rows.append(Row(
            "1", f"{name} -> 503, median / max of {len(samples.agent_down) + samples.missed}",
            f"{secs(median(samples.agent_down))} / {secs(worst)}",
            f"exec 1s/1: {secs(median(samples.exec_down))}; k8s defaults (paper): {secs(_k8s_detect(K8S_TIMEOUT))}",
            f"max <= bound {bound:.2f} s", worst <= bound))
    short_bound = t.window + t.retry_interval * (1 + t.jitter) + 0.1
    long_bound = t.window + t.interval * (1 + t.jitter) + 0.1
    k8s_up = K8S_PERIOD / 2 + median(exec_ok)
    for name, samples, limit in (("short outage", kills, short_bound), ("long outage", long_outages, long_bound)):
        worst = max(samples.agent_up) if samples.agent_up else float("inf")
        section.rows.append(Row(
            "1", f"Redis back after {name} -> 200, median / max of {len(samples.agent_up)}",
            f"{secs(median(samples.agent_up))} / {secs(worst)}",
            f"exec 1s/1: {secs(median(samples.exec_up))}; k8s defaults (paper): {secs(k8s_up)}",
            f"max <= {limit:.2f} s", worst <= limit))
    section.notes += [
        f"Agent at its defaults: interval {t.interval:g} s, retry_interval {t.retry_interval:g} s, timeout "
        f"{t.timeout:g} s, failure_threshold {t.failure_threshold}, window {t.window:g} s, backoff_after "
        f"{t.backoff_after:g} s; detection bound {bound:.2f} s. /readyz polled every 5 ms over keep-alive.",
        "Recovery is timed from the restart/SIGCONT/forward call; an outage is held until the exec probe has "
        "seen it too (short outage: 1.5 s; long: backoff_after + 2 s).",
        "Exec baseline: `redis-cli ping` run by this process every 1 s with a 1 s timeout (kubelet `exec` "
        "probe, periodSeconds 1, failure/successThreshold 1), without CRI exec overhead, so if anything faster "
        f"than real: one exec took {ms(median(exec_ok))} (PONG) / {ms(median(exec_refused))} (refused), median. "
        "Kubernetes defaults (period 10 s, failureThreshold 3, timeout 1 s) on paper: detection = period/2 + "
        "2 x period + the failing exec (or the 1 s timeout when the exec hangs), recovery = period/2 + exec.",
        f"Agent samples (s): kill {_list(all_kills)}; pause {_list(pauses.agent_down)}; blackhole "
        f"{_list(blackholes.agent_down)}; back after short outage {_list(kills.agent_up)}; after long "
        f"{_list(long_outages.agent_up)}.",
    ]


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values) or "none"
