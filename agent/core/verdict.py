"""The readiness verdict: pure, clock-free state machines fed by check observations.

Nothing here does I/O or reads a clock. Every method takes ``now`` (monotonic seconds) from the caller, so
grace periods, thresholds, backoff and deadlines are tested exactly and instantly with a fake clock, and the
agent's loop (core/agent.py) feeds the same code with real time.

Two layers:

* :class:`CheckVerdict` — one per configured check: ``starting`` → ``stabilizing`` → ``ready`` →
  ``degraded`` → ``stabilizing`` → ``ready``; ``drain`` → ``draining`` (final; the agent does not drain its
  checks, see :meth:`AgentVerdict.drain`). It also says when the next check should run (fast retry while
  unsure, backoff after a long outage, ± jitter).
* :class:`AgentVerdict` — combines the required checks, the readiness mode, the startup deadline and draining
  into what ``/readyz``, ``/startupz``, the metrics and the logs report.

The stability-window rule (docs/design.md): the verdict *enters* ``ready`` at t only if every observation in
[t - window, t] passed and at least one passed at or before t - window. Unknown is never ready.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.core.model import ReadinessMode, Reason, State


@dataclass(frozen=True, slots=True)
class Timing:
    """The timing knobs of one check's state machine (seconds); defaults live in settings.py."""

    window: float
    interval: float
    retry_interval: float
    timeout: float
    failure_threshold: int
    flap_window: float
    backoff_after: float
    jitter: float

    @property
    def detection_bound(self) -> float:
        """Longest a ``ready`` check may stay ready after its dependency stops answering (docs/design.md)."""
        return self.interval * (1 + self.jitter) + self.failure_threshold * (
            self.timeout + self.retry_interval * (1 + self.jitter)
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for logs, metrics and the Kubernetes notifier."""

    old: State
    new: State
    reason: Reason | None


@dataclass(frozen=True, slots=True)
class Delay:
    """When to check next, and the backoff step the agent's loop passes back next time (None: no backoff)."""

    seconds: float
    backoff: float | None


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
    _recent_failures: deque[float] = field(default_factory=deque)

    def observe(self, ok: bool, now: float, reason: Reason | None = None,
                conclusive: bool = False) -> Transition | None:
        """Record one observation at ``now``; return the transition it caused, if any.

        A ``conclusive`` failure (nothing listens any more) takes a ready check out at once; every other
        failure counts toward the threshold and the flap window.
        """
        if self.state is State.DRAINING:
            return None
        self.last_ok = ok
        if ok:
            return self._on_success(now)
        return self._on_failure(now, reason or Reason.ERROR, conclusive)

    def drain(self, now: float) -> Transition | None:
        """Enter the final ``draining`` state."""
        return self._move(State.DRAINING, now, self.last_reason)

    def window_ends_at(self) -> float | None:
        """When the stability window could complete, while stabilizing."""
        if self.state is not State.STABILIZING or self.window_started is None:
            return None
        return self.window_started + self.timing.window

    def next_delay(self, now: float, rng: Callable[[], float], backoff: float | None = None) -> Delay:
        """When to check next, with ± jitter; ``backoff`` is the step this returned last time.

        Healthy and ready: ``interval``. Unsure (stabilizing, or ready with a recent failure) or failing:
        ``retry_interval``. Failing for longer than ``backoff_after``: doubling from ``retry_interval`` up to
        ``interval``. While stabilizing, never later than the end of the window, so ``ready`` is reached at
        the window's end rather than up to one retry later.
        """
        t = self.timing
        step: float | None = None
        if self.last_ok is False and self.failing_since is not None and now - self.failing_since >= t.backoff_after:
            step = min((backoff or t.retry_interval) * 2, t.interval)
            base = step
        elif self.state is State.READY and self.consecutive_failures == 0:
            base = t.interval
        else:
            base = t.retry_interval
        delay = base * (1 + t.jitter * (2 * rng() - 1))
        ends = self.window_ends_at()
        if ends is not None and self.last_ok:
            delay = min(delay, max(0.0, ends - now))
        return Delay(max(delay, 0.0), step)

    def _on_success(self, now: float) -> Transition | None:
        self.consecutive_failures = 0
        self.consecutive_successes += 1
        self.failing_since = None
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

    def _on_failure(self, now: float, reason: Reason, conclusive: bool) -> Transition | None:
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        self.last_reason = reason
        if self.failing_since is None:
            self.failing_since = now
        flap = self._recent_failures
        flap.append(now)
        while flap and flap[0] < now - self.timing.flap_window:
            flap.popleft()
        fallback = State.DEGRADED if self.ever_ready else State.STARTING
        if reason is Reason.MAINTENANCE or (conclusive and self.state is State.READY):
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
        return Transition(old, new, reason)


def aggregate_state(states: Iterable[State], draining: bool) -> State:
    """The agent-level state: ready only when every given check is ready; unknown is not ready."""
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


def readiness(
    states: Mapping[str, State],
    required: frozenset[str],
    *,
    mode: ReadinessMode,
    started: bool,
    draining: bool,
    exclude: frozenset[str] = frozenset(),
) -> bool:
    """What ``/readyz`` says: the verdict over required checks minus ``exclude``, or, in startup mode, started.

    Excluding every required check answers ready, as kube-apiserver's ``?exclude=`` does.
    """
    if draining:
        return False
    if mode is ReadinessMode.STARTUP and started:
        return True
    names = required - exclude
    if exclude and not names:
        return True
    return aggregate_state((states[n] for n in sorted(names)), draining=False) is State.READY


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

    def refresh(self, now: float) -> Transition | None:
        """Recompute the agent-level state after any check changed; return the agent transition."""
        new = aggregate_state((self.checks[n].state for n in sorted(self.required)), self.draining)
        if new is State.READY and self.first_ready_at is None:
            self.first_ready_at = now
        self.check_deadline(now)
        if new is self.state:
            return None
        old, self.state, self.since = self.state, new, now
        return Transition(old, new, self.last_reason())

    @property
    def started(self) -> bool:
        """What ``/startupz`` says: the first ``ready`` was reached."""
        return self.first_ready_at is not None

    def is_ready(self) -> bool:
        """What ``/readyz`` and the ``ready`` gauge say."""
        states = {n: c.state for n, c in self.checks.items()}
        return readiness(states, self.required, mode=self.mode, started=self.started, draining=self.draining)

    def check_deadline(self, now: float) -> None:
        """Set ``deadline_exceeded`` once the startup deadline passed without ``ready`` (it stays set)."""
        if self.first_ready_at is None and now - self.started_at >= self.startup_timeout:
            self.deadline_exceeded = True

    def deadline_remaining(self, now: float) -> float | None:
        """Seconds left before the startup deadline, or None once ready or exceeded."""
        if self.first_ready_at is not None or self.deadline_exceeded:
            return None
        return max(0.0, self.started_at + self.startup_timeout - now)

    def drain(self, now: float) -> Transition | None:
        """Enter ``draining`` for good; return the agent-level transition.

        Only the agent drains: each check's state machine keeps following its dependency, so while draining
        ``/readyz?verbose`` still shows every check's real state, with the drain as a line of its own.
        """
        self.draining = True
        return self.refresh(now)

    def last_reason(self) -> Reason | None:
        """The last failure reason among required checks that are not ready."""
        for name in sorted(self.required):
            check = self.checks[name]
            if check.state is not State.READY and check.last_reason is not None:
                return check.last_reason
        return None
