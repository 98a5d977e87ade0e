"""The readiness verdict: pure, clock-free state machines fed by check observations.

Nothing here does I/O or reads a clock. Every method takes ``now`` (monotonic seconds) from the caller, so
grace periods, thresholds, backoff and deadlines are tested exactly and instantly with a fake clock, and the
runtime (``runner.py``) feeds the same code with real time.

Two layers:

* :class:`CheckVerdict` — one per configured check: ``starting`` → ``stabilizing`` → ``ready`` →
  ``degraded`` → ``stabilizing`` → ``ready``; any → ``draining`` (final). It also decides when the next check
  runs (fast retry while unsure, backoff after a long outage, ±20 % jitter).
* :class:`AgentVerdict` — combines the required checks, the readiness mode, the startup deadline and draining
  into what ``/readyz``, ``/startupz``, the metrics and the logs report.

The stability-window rule (design.md): the verdict *enters* ``ready`` at t only if every observation in
[t - window, t] passed and at least one passed at or before t - window. Unknown is never ready.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.checks import Reason


class State(enum.StrEnum):
    """Per-check and agent-level states, as named by design.md and the ``state`` metric."""

    STARTING = "starting"
    STABILIZING = "stabilizing"
    READY = "ready"
    DEGRADED = "degraded"
    DRAINING = "draining"


class ReadinessMode(enum.StrEnum):
    """``always``: /readyz follows the verdict. ``startup``: gate only until the first ready."""

    ALWAYS = "always"
    STARTUP = "startup"


@dataclass(frozen=True, slots=True)
class Timing:
    """The timing knobs of one check's state machine (seconds)."""

    window: float = 0.5
    interval: float = 1.0
    retry_interval: float = 0.2
    timeout: float = 0.5
    failure_threshold: int = 3
    flap_window: float = 10.0
    backoff_after: float = 5.0
    jitter: float = 0.2

    @property
    def detection_bound(self) -> float:
        """Longest a ``ready`` check may stay ready after its dependency stops answering (design.md)."""
        return self.interval * (1 + self.jitter) + self.failure_threshold * (
            self.timeout + self.retry_interval * (1 + self.jitter)
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for logs, metrics and the Kubernetes notifier."""

    at: float
    old: State
    new: State
    reason: Reason | None


@dataclass(slots=True)
class CheckVerdict:
    """The state machine of one check. Feed it observations in time order; read ``state``."""

    timing: Timing
    state: State = State.STARTING
    since: float = 0.0
    window_started: float | None = None
    ever_ready: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    failing_since: float | None = None
    last_reason: Reason | None = None
    last_ok: bool | None = None
    last_observed: float | None = None
    _backoff_delay: float | None = None
    _recent_failures: deque[float] = field(default_factory=deque)

    def observe(self, ok: bool, now: float, reason: Reason | None = None) -> Transition | None:
        """Record one observation at ``now``; return the transition it caused, if any."""
        if self.state is State.DRAINING:
            return None
        self.last_ok = ok
        self.last_observed = now
        if ok:
            return self._on_success(now)
        return self._on_failure(now, reason or Reason.ERROR)

    def drain(self, now: float) -> Transition | None:
        """Enter the final ``draining`` state."""
        return self._move(State.DRAINING, now, self.last_reason)

    def window_remaining(self, now: float) -> float | None:
        """Seconds until the stability window could complete, while stabilizing."""
        if self.state is not State.STABILIZING or self.window_started is None:
            return None
        return max(0.0, self.window_started + self.timing.window - now)

    def next_delay(self, now: float, rng: Callable[[], float] = random.random) -> float:
        """Seconds until the next check, with ±jitter.

        Healthy and ready: ``interval``. Unsure (stabilizing, or ready with a recent failure) or failing:
        ``retry_interval``. Failing for longer than ``backoff_after``: doubling from ``retry_interval`` up to
        ``interval``. While stabilizing, never later than the end of the window, so ``ready`` is reached at
        the window's end rather than up to one retry later.
        """
        t = self.timing
        if self.last_ok is False and self.failing_since is not None and (
            now - self.failing_since >= t.backoff_after
        ):
            prev = self._backoff_delay or t.retry_interval
            base = min(prev * 2, t.interval)
            self._backoff_delay = base
        elif self.state is State.READY and self.consecutive_failures == 0:
            base = t.interval
        else:
            base = t.retry_interval
        delay = base * (1 + t.jitter * (2 * rng() - 1))
        remaining = self.window_remaining(now)
        if remaining is not None and self.last_ok:
            delay = min(delay, remaining)
        return max(delay, 0.0)

    def _on_success(self, now: float) -> Transition | None:
        self.consecutive_failures = 0
        self.consecutive_successes += 1
        self.failing_since = None
        self._backoff_delay = None
        if self.state in (State.STARTING, State.DEGRADED):
            self.window_started = now
            if self.timing.window <= 0:
                return self._enter_ready(now)
            return self._move(State.STABILIZING, now, None)
        if self.state is State.STABILIZING:
            assert self.window_started is not None
            if now - self.window_started >= self.timing.window:
                return self._enter_ready(now)
        return None

    def _on_failure(self, now: float, reason: Reason) -> Transition | None:
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        self.last_reason = reason
        if self.failing_since is None:
            self.failing_since = now
        self.window_started = None
        flap = self._recent_failures
        flap.append(now)
        while flap and flap[0] < now - self.timing.flap_window:
            flap.popleft()
        fallback = State.DEGRADED if self.ever_ready else State.STARTING
        if reason is Reason.MAINTENANCE:
            return self._move(State.DEGRADED, now, reason)
        if self.state is State.STABILIZING:
            return self._move(fallback, now, reason)
        if self.state is State.READY and (
            self.consecutive_failures >= self.timing.failure_threshold
            or len(flap) >= self.timing.failure_threshold
        ):
            return self._move(State.DEGRADED, now, reason)
        return None

    def _enter_ready(self, now: float) -> Transition | None:
        self.ever_ready = True
        self._recent_failures.clear()
        return self._move(State.READY, now, None)

    def _move(self, new: State, now: float, reason: Reason | None) -> Transition | None:
        if new is self.state:
            return None
        old, self.state, self.since = self.state, new, now
        return Transition(now, old, new, reason)


def aggregate_state(states: Iterable[State], draining: bool) -> State:
    """The agent-level state: ready only when every required check is ready; unknown is not ready."""
    if draining:
        return State.DRAINING
    states = list(states)
    if not states:
        return State.STARTING
    if all(s is State.READY for s in states):
        return State.READY
    for worst in (State.DEGRADED, State.STARTING, State.STABILIZING):
        if worst in states:
            return worst
    return State.STARTING


@dataclass(slots=True)
class AgentVerdict:
    """The whole agent's verdict: required checks, readiness mode, startup deadline and draining.

    ``checks`` maps a check name to its state machine; ``required`` names those that gate readiness.
    """

    checks: Mapping[str, CheckVerdict]
    required: frozenset[str]
    mode: ReadinessMode
    started_at: float
    startup_timeout: float
    state: State = State.STARTING
    since: float = 0.0
    draining: bool = False
    first_ready_at: float | None = None
    deadline_exceeded: bool = False

    def __post_init__(self) -> None:
        self.since = self.started_at

    def refresh(self, now: float, exclude: frozenset[str] = frozenset()) -> Transition | None:
        """Recompute the agent-level state after any check changed; return the agent transition."""
        new = self.compute(exclude)
        if new is State.READY and self.first_ready_at is None:
            self.first_ready_at = now
        self.check_deadline(now)
        if new is self.state:
            return None
        old, self.state, self.since = self.state, new, now
        return Transition(now, old, new, self.last_reason())

    def compute(self, exclude: frozenset[str] = frozenset()) -> State:
        """The state over required checks, minus ``exclude`` (for ``/readyz?exclude=``)."""
        names = sorted(self.required - exclude)
        if exclude and not names and not self.draining:
            return State.READY  # everything explicitly excluded, as kube-apiserver's ?exclude= does
        return aggregate_state((self.checks[n].state for n in names), self.draining)

    def is_ready(self, exclude: frozenset[str] = frozenset()) -> bool:
        """What ``/readyz`` and the ``ready`` gauge say: the verdict, or, in startup mode, first-ready."""
        if self.draining:
            return False
        if self.mode is ReadinessMode.STARTUP and self.first_ready_at is not None:
            return True
        return self.compute(exclude) is State.READY

    def is_started(self) -> bool:
        """What ``/startupz`` says: 200 once the first ``ready`` was reached."""
        return self.first_ready_at is not None

    def check_deadline(self, now: float) -> bool:
        """Set and return ``deadline_exceeded`` when the startup deadline passed without ``ready``."""
        if (
            not self.deadline_exceeded
            and self.first_ready_at is None
            and now - self.started_at >= self.startup_timeout
        ):
            self.deadline_exceeded = True
            return True
        return False

    def deadline_remaining(self, now: float) -> float | None:
        """Seconds left before the startup deadline, or None once ready or exceeded."""
        if self.first_ready_at is not None or self.deadline_exceeded:
            return None
        return max(0.0, self.started_at + self.startup_timeout - now)

    def drain(self, now: float) -> Transition | None:
        """Enter ``draining`` for good, every check with it; return the agent-level transition."""
        self.draining = True
        for check in self.checks.values():
            check.drain(now)
        return self.refresh(now)

    def last_reason(self) -> Reason | None:
        """The last failure reason among required checks that are not ready."""
        for name in sorted(self.required):
            check = self.checks[name]
            if check.state is not State.READY and check.last_reason is not None:
                return check.last_reason
        return None
