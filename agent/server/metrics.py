"""Prometheus metrics (prefix ``readiness_agent_``), on an injected registry.

Event counts (check durations, failures, transitions) are fed by the store's listener interface as they
happen; everything derived from state (ready, state, redis_up, startup figures) is computed at scrape time by a
collector that calls a snapshot function, the way prometheus_client's ``ProcessCollector`` takes a pid
callable, so there is no push step to forget. prometheus_client's own process and platform collectors add
the standard ``process_*`` and ``python_info`` series (the sidecar's CPU, memory and file descriptors).
Label values come from fixed sets only: check names (from the configuration), kinds, states and reasons. No
URLs, hosts or error text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.checks import kind_gauges
from agent.core.model import CheckResult, Reason, State
from agent.core.snapshot import AgentSnapshot
from agent.core.store import Change
from agent.logs.setup import dropped_total

PREFIX = "readiness_agent_"
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
Snapshot = Callable[[], AgentSnapshot]


class Metrics:
    """The agent's metrics: a store listener for the counters, a collector for the state-derived gauges."""

    def __init__(self, registry: CollectorRegistry, snapshot: Snapshot, window: float) -> None:
        self.check_duration = Histogram(
            PREFIX + "check_duration_seconds", "Duration of one dependency check.", ["check"],
            buckets=DURATION_BUCKETS, registry=registry,
        )
        self.check_failures = Counter(
            PREFIX + "check_failures_total", "Failed checks by reason.", ["check", "reason"], registry=registry,
        )
        self.transitions = Counter(
            PREFIX + "transitions_total", "Agent verdict transitions.", ["from", "to"], registry=registry,
        )
        for old in State:  # pre-created at 0, so increase() counts a series' first transition (alert rules)
            for new in State:
                if old != new:
                    self.transitions.labels(old.value, new.value)
        for name in snapshot().checks:  # pre-created so rates start at zero
            self.check_duration.labels(name)
            for reason in Reason:
                self.check_failures.labels(name, reason.value)
        registry.register(StateCollector(snapshot, window))
        # The sidecar's own footprint (process_* CPU, memory, fds; python_info) for the dashboards that size it.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        """Record one check's duration and, when it failed, its reason."""
        self.check_duration.labels(name).observe(result.latency)
        if not result.ok:
            self.check_failures.labels(name, (result.reason or Reason.ERROR).value).inc()

    def changed(self, change: Change) -> None:
        """Count agent-level transitions."""
        if change.check is None:
            self.transitions.labels(change.transition.old.value, change.transition.new.value).inc()

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        """The deadline is a gauge, read by the collector."""


class StateCollector(Collector):
    """State-derived gauges, read from the snapshot at scrape time."""

    def __init__(self, snapshot: Snapshot, window: float) -> None:
        self.snapshot = snapshot
        self.window = window
        self.families = kind_gauges()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        yield GaugeMetricFamily(PREFIX + "ready", "1 when /readyz answers 200.", value=int(snap.ready))
        state = GaugeMetricFamily(PREFIX + "state", "Agent verdict state (1 for the current one).",
                                  labels=["state"])
        for s in State:
            state.add_metric([s.value], int(snap.state is s))
        yield state
        startup = GaugeMetricFamily(PREFIX + "startup_seconds", "Seconds from start to the first ready.")
        if snap.first_ready_at is not None:
            startup.add_metric([], snap.first_ready_at - snap.started_at)
        yield startup
        yield GaugeMetricFamily(PREFIX + "startup_deadline_exceeded",
                                "1 when the startup deadline passed without ready.",
                                value=int(snap.deadline_exceeded))
        yield GaugeMetricFamily(PREFIX + "stability_window_seconds", "Configured stability window.",
                                value=self.window)
        check_up = GaugeMetricFamily(PREFIX + "check_up", "1 when the check's last run passed (every kind).",
                                     labels=["check", "kind"])
        # The kinds' own gauges (agent.checks.KINDS: redis_up, redis_cluster_slots), in the order declared.
        families = {f.name: (f, GaugeMetricFamily(PREFIX + f.name, f.help, labels=["check", *f.labels]))
                    for f in self.families}
        for name, check in snap.checks.items():
            passed = int(bool(check.last and check.last.ok))
            check_up.add_metric([name, check.kind], passed)
            for family, gauge in families.values():
                if family.up and family.kind == check.kind:
                    gauge.add_metric([name], passed)
            facts = check.last.facts if check.last is not None else None
            for family_name, label_values, value in facts.gauges() if facts is not None else ():
                if family_name in families:
                    families[family_name][1].add_metric([name, *label_values], value)
        yield check_up
        yield from (gauge for _, gauge in families.values())
        yield CounterMetricFamily(PREFIX + "log_records_dropped", "Log records dropped because the log output did "
                                  "not accept them (least important first; agent/logs/writer.py).",
                                  value=dropped_total())
        info = GaugeMetricFamily(PREFIX + "build_info", "Build information.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
