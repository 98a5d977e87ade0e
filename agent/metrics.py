"""Prometheus metrics (prefix ``readiness_agent_``), on an injected registry.

Event counts (check durations, failures, transitions) are updated as they happen; everything derived from
state (ready, state, redis_up, startup figures) is computed by a collector at scrape time from the agent's
cached state, so there is no push step to forget. Label values come from fixed sets only: check names (from
the configuration), states and reasons. No URLs, hosts or error text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.checks import CheckResult, Reason
from agent.verdict import State

if TYPE_CHECKING:
    from agent.runner import Agent

PREFIX = "readiness_agent_"
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The agent's metrics. Create one per registry; ``attach`` it to the agent it describes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self._collector: _StateCollector | None = None

    def attach(self, agent: Agent) -> None:
        """Start exporting ``agent``'s state; pre-create per-check series so rates start at zero."""
        for name in agent.status:
            self.check_duration.labels(name)
            for reason in Reason:
                self.check_failures.labels(name, reason.value)
        self._collector = _StateCollector(agent)
        self.registry.register(self._collector)

    def observe_check(self, name: str, result: CheckResult) -> None:
        """Record one check's duration and, when it failed, its reason."""
        self.check_duration.labels(name).observe(result.latency)
        if not result.ok:
            self.check_failures.labels(name, (result.reason or Reason.ERROR).value).inc()

    def transition(self, old: State, new: State) -> None:
        """Count one agent-level transition."""
        self.transitions.labels(old.value, new.value).inc()


class _StateCollector(Collector):
    """State-derived gauges, read from the agent at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        verdict = agent.verdict
        yield GaugeMetricFamily(PREFIX + "ready", "1 when /readyz answers 200.", value=int(verdict.is_ready()))
        state = GaugeMetricFamily(PREFIX + "state", "Agent verdict state (1 for the current one).",
                                  labels=["state"])
        for s in State:
            state.add_metric([s.value], int(verdict.state is s))
        yield state
        startup = GaugeMetricFamily(PREFIX + "startup_seconds", "Seconds from start to the first ready.")
        if verdict.first_ready_at is not None:
            startup.add_metric([], verdict.first_ready_at - verdict.started_at)
        yield startup
        yield GaugeMetricFamily(PREFIX + "startup_deadline_exceeded",
                                "1 when the startup deadline passed without ready.",
                                value=int(verdict.deadline_exceeded))
        yield GaugeMetricFamily(PREFIX + "stability_window_seconds", "Configured stability window.",
                                value=agent.timing.window)
        up = GaugeMetricFamily(PREFIX + "redis_up", "1 when the last Redis check passed.", labels=["check"])
        for name, status in agent.status.items():
            if getattr(status.check, "kind", "") == "redis":
                up.add_metric([name], int(bool(status.last and status.last.ok)))
        yield up
        info = GaugeMetricFamily(PREFIX + "build_info", "Build information.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
