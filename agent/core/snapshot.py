"""The read side: an immutable picture of the verdict that every reader uses, and "why not ready" in words.

The store publishes a new :class:`AgentSnapshot` after every write; HTTP handlers, the metrics collector, the
``check``/``wait`` commands and the Kubernetes notifier read only this, never the writer's live objects. Times
are monotonic seconds on the agent's clock; readers pass ``now`` for ages and remaining times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.model import CheckResult, ReadinessMode, Reason, State
from agent.core.verdict import readiness


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """One check as last seen: its verdict state, last result, counters and timings."""

    name: str
    kind: str
    target: str
    required: bool
    state: State
    since: float
    last: CheckResult | None
    last_at: float | None
    last_reason: Reason | None
    consecutive_successes: int
    consecutive_failures: int
    window_ends_at: float | None
    checks_run: int
    monitor_up: bool

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def why(self) -> str:
        """One word for why this check is not ready: the failure reason if the last check failed, else the state."""
        if self.last is not None and not self.last.ok and self.last_reason is not None:
            return str(self.last_reason)
        return str(self.state)

    def window_remaining(self, now: float) -> float | None:
        """Seconds until the stability window could complete, while stabilizing."""
        return None if self.window_ends_at is None else max(0.0, self.window_ends_at - now)


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """The whole verdict at one instant; ``checks`` keeps the configured order."""

    state: State
    since: float
    ready: bool
    mode: ReadinessMode
    started_at: float
    first_ready_at: float | None
    startup_timeout: float
    deadline_exceeded: bool
    draining: bool
    last_reason: Reason | None
    checks: Mapping[str, CheckSnapshot]

    @property
    def started(self) -> bool:
        """What ``/startupz`` says: the first ``ready`` was reached."""
        return self.first_ready_at is not None

    @property
    def required(self) -> frozenset[str]:
        return frozenset(n for n, c in self.checks.items() if c.required)

    def ready_excluding(self, exclude: frozenset[str]) -> bool:
        """``/readyz?exclude=``: readiness over the required checks not excluded."""
        states = {n: c.state for n, c in self.checks.items()}
        return readiness(states, self.required, mode=self.mode, started=self.started, draining=self.draining,
                         exclude=exclude & self.required)

    def deadline_remaining(self, now: float) -> float | None:
        """Seconds left before the startup deadline, or None once started or exceeded."""
        if self.started or self.deadline_exceeded:
            return None
        return max(0.0, self.started_at + self.startup_timeout - now)

    def why_not_ready(self) -> str:
        """``redis: refused; cache: stabilizing``: each required check that is not ready, and why."""
        if self.draining:
            return "draining"
        parts = [f"{n}: {c.why()}" for n, c in self.checks.items() if c.required and not c.ready]
        return "; ".join(parts) or str(self.state)
