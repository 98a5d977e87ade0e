"""The verdict store: the one writer. It feeds observations to the verdict and publishes snapshots.

Everything that changes the verdict goes through :class:`VerdictStore` (a check result, the monitor's state,
draining, the startup deadline); after each write it publishes a fresh :class:`AgentSnapshot` and tells its
listeners (metrics, logs, the Kubernetes notifier) what happened. Listeners only read; a failing listener
never stops the verdict.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.core.model import Check, CheckResult, ReadinessMode
from agent.core.snapshot import AgentSnapshot, CheckSnapshot
from agent.core.verdict import AgentVerdict, CheckVerdict, Timing, Transition
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")


@dataclass(frozen=True, slots=True)
class Change:
    """A transition of one check (``check`` set) or of the whole agent (``check`` None), with its context."""

    check: str | None
    transition: Transition
    result: CheckResult | None
    ready_flipped: bool | None  # the new /readyz answer if it flipped with this change, else None
    snapshot: AgentSnapshot


class Listener(Protocol):
    """Subscribes to the store: every observation, every transition, and the startup deadline."""

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None: ...

    def changed(self, change: Change) -> None: ...

    def deadline_passed(self, snapshot: AgentSnapshot) -> None: ...


@dataclass(slots=True)
class _CheckRecord:
    check: Check
    verdict: CheckVerdict
    last: CheckResult | None = None
    last_at: float | None = None
    checks_run: int = 0
    monitor_up: bool = False


class VerdictStore:
    """Owns the verdict; ``snapshot`` is what every reader sees, ``ready`` mirrors ``/readyz``."""

    def __init__(self, checks: Sequence[Check], timing: Timing, mode: ReadinessMode, startup_timeout: float,
                 clock: Callable[[], float]) -> None:
        self.clock = clock
        now = clock()
        self._records = {c.name: _CheckRecord(c, CheckVerdict(timing, since=now)) for c in checks}
        self._verdict = AgentVerdict(
            checks={n: r.verdict for n, r in self._records.items()},
            required=frozenset(n for n, r in self._records.items() if r.check.required),
            mode=mode, started_at=now, startup_timeout=startup_timeout,
        )
        self.listeners: list[Listener] = []
        self.ready = asyncio.Event()
        self.deadline_event = asyncio.Event()
        self.snapshot = self._take()

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def verdict_of(self, name: str) -> CheckVerdict:
        """The agent's loop asks a check's verdict when to run next (a pure query)."""
        return self._records[name].verdict

    # ------------------------------------------------------------------------------------------ the writes

    def record(self, name: str, result: CheckResult) -> None:
        """Feed one observation to the check's verdict; publish and notify."""
        record = self._records[name]
        now = self.clock()
        record.last, record.last_at = result, now
        record.checks_run += 1
        change = record.verdict.observe(result.ok, now, result.reason, result.conclusive)
        agent_change, flipped = self._refresh(now)
        self._notify(lambda listener: listener.observed(name, result, self.snapshot))
        if change is not None:
            self._publish_change(Change(name, change, result, flipped, self.snapshot))
        if agent_change is not None:
            self._publish_change(Change(None, agent_change, result, flipped, self.snapshot))

    def set_monitor(self, name: str, up: bool) -> None:
        """The agent's loop reports whether the check's monitor connection is held."""
        self._records[name].monitor_up = up
        self.snapshot = self._take()

    def drain(self) -> None:
        """Start draining: /readyz 503 from now on, for good."""
        if self._verdict.draining:
            return
        now = self.clock()
        change = self._verdict.drain(now)
        _, flipped = self._refresh(now, change_known=True)
        if change is not None:
            self._publish_change(Change(None, change, None, flipped, self.snapshot))

    def check_deadline(self) -> None:
        """Called when the startup deadline may have passed."""
        self._refresh(self.clock())

    # ------------------------------------------------------------------------------------------ internals

    def _refresh(self, now: float, change_known: bool = False) -> tuple[Transition | None, bool | None]:
        was_ready = self.ready.is_set()
        change = None if change_known else self._verdict.refresh(now)
        self._verdict.check_deadline(now)
        self.snapshot = self._take()
        if self.snapshot.ready:
            self.ready.set()
        else:
            self.ready.clear()
        if self._verdict.deadline_exceeded and not self.deadline_event.is_set():
            self.deadline_event.set()
            self._notify(lambda listener: listener.deadline_passed(self.snapshot))
        return change, (self.snapshot.ready if self.snapshot.ready != was_ready else None)

    def _publish_change(self, change: Change) -> None:
        self._notify(lambda listener: listener.changed(change))

    def _notify(self, call: Callable[[Listener], None]) -> None:
        for listener in self.listeners:
            try:
                call(listener)
            except Exception:  # a listener bug must not stop the verdict
                log.exception("verdict listener failed", extra=labels(event="listener_failed"))

    def _take(self) -> AgentSnapshot:
        v = self._verdict
        checks = {
            name: CheckSnapshot(
                name=name, kind=r.check.kind, target=r.check.target, required=r.check.required,
                state=r.verdict.state, since=r.verdict.since, last=r.last, last_at=r.last_at,
                last_reason=r.verdict.last_reason, consecutive_successes=r.verdict.consecutive_successes,
                consecutive_failures=r.verdict.consecutive_failures, window_ends_at=r.verdict.window_ends_at(),
                checks_run=r.checks_run, monitor_up=r.monitor_up,
            )
            for name, r in self._records.items()
        }
        return AgentSnapshot(
            state=v.state, since=v.since, ready=v.is_ready(), mode=v.mode, started_at=v.started_at,
            first_ready_at=v.first_ready_at, startup_timeout=v.startup_timeout,
            deadline_exceeded=v.deadline_exceeded, draining=v.draining, last_reason=v.last_reason(), checks=checks,
        )

