"""The agent-level verdict across several checks: required and optional, exclusions, draining, startup mode,
the deadline, and the worst-state order — each with explicit times."""

from __future__ import annotations

from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.settings import DEFAULT_TIMING
from agent.core.model import ReadinessMode, Reason, State
from agent.core.verdict import AgentVerdict, CheckVerdict, aggregate_state, readiness

T = DEFAULT_TIMING


def ready_at(v: CheckVerdict, start: float) -> CheckVerdict:
    """Two successes a window apart: the check is ready at ``start + window``."""
    v.observe(True, start)
    v.observe(True, start + T.window)
    assert v.state is State.READY
    return v


def fail(v: CheckVerdict, *at: float, reason: Reason = Reason.REFUSED) -> CheckVerdict:
    for t in at:
        v.observe(False, t, reason)
    return v


def agent(names: dict[str, bool], mode: ReadinessMode = ReadinessMode.ALWAYS, timeout: float = 10.0) -> AgentVerdict:
    """An agent verdict over checks ``name → required``."""
    return AgentVerdict({n: CheckVerdict(T) for n in names}, frozenset(n for n, r in names.items() if r), mode,
                        started_at=0.0, startup_timeout=timeout)


class TestRequiredChecks:
    def test_two_required_need_both_ready(self) -> None:
        """With two required checks the agent is ready only once both are."""
        a = agent({"redis": True, "cache": True})
        ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        a.refresh(0.5)
        assert not a.is_ready() and a.state is State.STARTING
        ready_at(a.checks["cache"], 1.0)  # type: ignore[arg-type]
        a.refresh(1.5)
        assert a.is_ready() and a.state is State.READY and a.first_ready_at == 1.5

    def test_one_required_degraded_takes_the_agent_out(self) -> None:
        """One degraded required check makes the agent degraded, with that check's reason."""
        a = agent({"redis": True, "cache": True})
        ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        ready_at(a.checks["cache"], 0.0)  # type: ignore[arg-type]
        a.refresh(0.5)
        fail(a.checks["cache"], 1.0, 1.2, 1.4, reason=Reason.LOADING)  # type: ignore[arg-type]
        change = a.refresh(1.4)
        assert change is not None and change.new is State.DEGRADED and change.reason is Reason.LOADING
        assert not a.is_ready() and a.last_reason() is Reason.LOADING

    def test_optional_check_never_gates(self) -> None:
        """A failing optional check leaves a ready agent ready and gives no agent-level reason."""
        a = agent({"redis": True, "audit": False})
        ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        fail(a.checks["audit"], 0.1, 0.2, 0.3)  # type: ignore[arg-type]
        a.refresh(0.5)
        assert a.is_ready() and a.last_reason() is None

    def test_optional_check_alone_is_not_enough(self) -> None:
        """A ready optional check does not make an agent whose required check is starting ready."""
        a = agent({"redis": True, "audit": False})
        ready_at(a.checks["audit"], 0.0)  # type: ignore[arg-type]
        a.refresh(0.5)
        assert not a.is_ready()


class TestWorstState:
    def test_degraded_is_worse_than_stabilizing(self) -> None:
        """Degraded wins over stabilizing and starting; starting over stabilizing."""
        assert aggregate_state([State.STABILIZING, State.DEGRADED], False) is State.DEGRADED
        assert aggregate_state([State.DEGRADED, State.STARTING], False) is State.DEGRADED
        assert aggregate_state([State.STABILIZING, State.STARTING], False) is State.STARTING
        assert aggregate_state([State.READY, State.STABILIZING], False) is State.STABILIZING

    def test_no_checks_and_draining(self) -> None:
        """No required check is starting (unknown is not ready); draining overrides everything."""
        assert aggregate_state([], False) is State.STARTING
        assert aggregate_state([State.READY], True) is State.DRAINING


class TestExclusions:
    STATES: ClassVar[dict[str, State]] = {"redis": State.DEGRADED, "cache": State.READY}
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"redis", "cache"})

    def ready(self, exclude: frozenset[str], **kw: bool) -> bool:
        return readiness(self.STATES, self.REQUIRED, mode=ReadinessMode.ALWAYS, started=kw.get("started", True),
                         draining=kw.get("draining", False), exclude=exclude)

    def test_excluding_the_failing_check_answers_ready(self) -> None:
        """?exclude= of the only failing check answers ready."""
        assert not self.ready(frozenset())
        assert self.ready(frozenset({"redis"}))

    def test_excluding_every_check_answers_ready(self) -> None:
        """Excluding every required check answers ready, as kube-apiserver's ?exclude= does."""
        states = {"redis": State.STARTING}
        assert readiness(states, frozenset({"redis"}), mode=ReadinessMode.ALWAYS, started=False, draining=False,
                         exclude=frozenset({"redis"}))

    def test_exclusions_never_override_draining(self) -> None:
        """While draining nothing answers ready, whatever is excluded."""
        assert not self.ready(frozenset({"redis", "cache"}), draining=True)


class TestAgentLifecycle:
    def test_drain_is_final_for_every_check(self) -> None:
        """Draining the agent is not ready in both modes and stays so after successes."""
        for mode in ReadinessMode:
            a = agent({"redis": True, "audit": False}, mode)
            ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
            a.refresh(0.5)
            change = a.drain(1.0)
            assert change is not None and change.new is State.DRAINING
            a.checks["redis"].observe(True, 2.0)
            a.refresh(2.0)
            assert not a.is_ready() and a.state is State.DRAINING

    def test_startup_mode_stays_ready_when_a_required_check_degrades(self) -> None:
        """In startup mode, after the first ready, a degraded required check does not flip readiness."""
        a = agent({"redis": True, "cache": True}, ReadinessMode.STARTUP)
        ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        ready_at(a.checks["cache"], 0.0)  # type: ignore[arg-type]
        a.refresh(0.5)
        fail(a.checks["redis"], 1.0, 1.2, 1.4)  # type: ignore[arg-type]
        a.refresh(1.4)
        assert a.state is State.DEGRADED and a.is_ready() and a.started

    def test_deadline_counts_from_start_and_only_without_ready(self) -> None:
        """The deadline passes at started_at + timeout when the agent never became ready; remaining shrinks."""
        a = agent({"redis": True, "cache": True}, timeout=2.0)
        ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        a.refresh(0.5)
        assert a.deadline_remaining(0.5) == 1.5
        a.refresh(1.99)
        assert not a.deadline_exceeded
        a.refresh(2.0)
        assert a.deadline_exceeded and a.deadline_remaining(2.0) is None


class TestFlapHistory:
    def test_entering_ready_forgets_earlier_failures(self) -> None:
        """Failures from before the last recovery do not count toward the flap window after it."""
        v = ready_at(CheckVerdict(T), 0.0)
        fail(v, 1.0, 1.2, 1.4)
        assert v.state is State.DEGRADED
        v.observe(True, 2.0)
        v.observe(True, 2.5)
        assert v.state is State.READY
        v.observe(False, 3.0, Reason.TIMEOUT)  # one blip after recovery: within 10 s of three old failures
        assert v.state is State.READY

    def test_flapping_within_the_window_degrades(self) -> None:
        """Failures that are not consecutive but fall within the flap window take a ready check out."""
        v = ready_at(CheckVerdict(T), 0.0)
        for t in (1.0, 2.0):
            v.observe(False, t, Reason.TIMEOUT)
            v.observe(True, t + 0.1)
        assert v.state is State.READY
        v.observe(False, 3.0, Reason.TIMEOUT)
        assert v.state is State.DEGRADED

    def test_last_reason_of_a_recovered_check_is_kept_but_not_reported(self) -> None:
        """A ready agent reports no reason, even though a check remembers its last failure."""
        a = agent({"redis": True})
        v = ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        v.observe(False, 1.0, Reason.TIMEOUT)
        a.refresh(1.0)
        assert v.last_reason is Reason.TIMEOUT and a.last_reason() is None


class TestProperties:
    @settings(deadline=None, max_examples=200)
    @given(st.lists(st.sampled_from(list(State)), min_size=1, max_size=6))
    def test_ready_iff_every_required_check_ready(self, states: list[State]) -> None:
        """Without exclusions or startup mode, the agent is ready exactly when every required check is ready."""
        named = {f"c{i}": s for i, s in enumerate(states)}
        expected = all(s is State.READY for s in states)
        assert readiness(named, frozenset(named), mode=ReadinessMode.ALWAYS, started=False,
                         draining=False) is expected


class TestTransitionsCarryTheirFacts:
    def test_each_transition_names_old_new_reason_and_sets_since(self) -> None:
        """Every transition reports old, new and reason exactly, and ``since`` moves to its time."""
        v = CheckVerdict(T)
        seen = []
        for t, ok, reason in [(1.0, True, None), (1.2, False, Reason.LOADING), (2.0, True, None),
                              (2.5, True, None), (3.0, False, Reason.MAINTENANCE), (4.0, True, None),
                              (4.1, False, Reason.BUSY)]:
            change = v.observe(ok, t, reason)
            assert change is not None
            seen.append((change.old, change.new, change.reason, v.since))
        assert seen == [
            (State.STARTING, State.STABILIZING, None, 1.0),
            (State.STABILIZING, State.STARTING, Reason.LOADING, 1.2),
            (State.STARTING, State.STABILIZING, None, 2.0),
            (State.STABILIZING, State.READY, None, 2.5),
            (State.READY, State.DEGRADED, Reason.MAINTENANCE, 3.0),
            (State.DEGRADED, State.STABILIZING, None, 4.0),
            (State.STABILIZING, State.DEGRADED, Reason.BUSY, 4.1),
        ]

    def test_threshold_transition_carries_the_last_reason(self) -> None:
        """Leaving ready by the threshold reports the reason of the failure that crossed it, at its time."""
        v = ready_at(CheckVerdict(T), 0.0)
        fail(v, 1.0, 1.2, reason=Reason.TIMEOUT)
        change = v.observe(False, 1.4, Reason.REFUSED)
        assert change is not None and (change.old, change.new, change.reason) == (State.READY, State.DEGRADED,
                                                                                  Reason.REFUSED)
        assert v.since == 1.4

    def test_window_zero_enters_ready_at_the_success(self) -> None:
        """With window 0 the first success is a transition to ready at that time."""
        from dataclasses import replace

        v = CheckVerdict(replace(T, window=0.0))
        change = v.observe(True, 3.0)
        assert change is not None and change.new is State.READY and v.since == 3.0

    def test_drain_transition(self) -> None:
        """Draining a check is a transition from its state, with its last reason, at that time."""
        v = ready_at(CheckVerdict(T), 0.0)
        v.observe(False, 1.0, Reason.TIMEOUT)
        change = v.drain(2.0)
        assert change is not None and (change.old, change.new, change.reason) == (State.READY, State.DRAINING,
                                                                                  Reason.TIMEOUT)
        assert v.since == 2.0

    def test_counters(self) -> None:
        """Consecutive counters count exactly and reset on the other outcome."""
        v = CheckVerdict(T)
        for t in (0.0, 0.1, 0.2):
            v.observe(True, t)
        assert (v.consecutive_successes, v.consecutive_failures) == (3, 0)
        fail(v, 0.3, 0.4)
        assert (v.consecutive_successes, v.consecutive_failures) == (0, 2)
        v.observe(True, 0.5)
        assert (v.consecutive_successes, v.consecutive_failures) == (1, 0)


class TestBoundaries:
    def test_backoff_starts_exactly_at_backoff_after(self) -> None:
        """Failing for exactly ``backoff_after`` already doubles the delay."""
        v = fail(CheckVerdict(T), 0.0, T.backoff_after)
        assert v.next_delay(T.backoff_after, rng=lambda: 0.5).seconds == T.retry_interval * 2

    def test_jitter_direction(self) -> None:
        """rng 1 stretches a delay by +jitter, rng 0 shrinks it by -jitter."""
        v = ready_at(CheckVerdict(T), 0.0)
        assert v.next_delay(1.0, rng=lambda: 1.0).seconds == T.interval * (1 + T.jitter)
        assert v.next_delay(1.0, rng=lambda: 0.0).seconds == T.interval * (1 - T.jitter)

    def test_failure_exactly_a_flap_window_old_still_counts(self) -> None:
        """A failure exactly ``flap_window`` before the latest one is still inside the window."""
        v = ready_at(CheckVerdict(T), 0.0)
        for t in (1.0, 1.0 + T.flap_window / 2):
            v.observe(False, t, Reason.TIMEOUT)
            v.observe(True, t + 0.1)
        v.observe(False, 1.0 + T.flap_window, Reason.TIMEOUT)
        assert v.state is State.DEGRADED

    def test_no_required_checks_is_not_ready(self) -> None:
        """An agent with nothing required is unknown, and unknown is not ready."""
        assert not readiness({}, frozenset(), mode=ReadinessMode.ALWAYS, started=False, draining=False)

    def test_deadline_counts_from_a_nonzero_start(self) -> None:
        """The deadline is start + timeout on the agent's clock, whatever the clock's origin."""
        a = AgentVerdict({"redis": CheckVerdict(T)}, frozenset({"redis"}), ReadinessMode.ALWAYS, started_at=5.0,
                         startup_timeout=10.0)
        assert a.since == 5.0
        a.refresh(14.9)
        assert not a.deadline_exceeded and a.deadline_remaining(14.99) is not None
        assert abs((a.deadline_remaining(14.99) or 0) - 0.01) < 1e-9
        a.refresh(15.0)
        assert a.deadline_exceeded

    def test_agent_transitions_name_old_and_new(self) -> None:
        """Agent-level transitions report where they came from, and drain sets ``since``."""
        a = agent({"redis": True})
        ready_at(a.checks["redis"], 0.0)  # type: ignore[arg-type]
        change = a.refresh(0.5)
        assert change is not None and (change.old, change.new) == (State.STARTING, State.READY)
        drained = a.drain(1.0)
        assert drained is not None and (drained.old, drained.new) == (State.READY, State.DRAINING)
        assert a.since == 1.0
