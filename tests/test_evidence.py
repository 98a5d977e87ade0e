"""Weighing the evidence (issue 17): a dropped connection is a question answered by a fresh attempt; a fresh
attempt that is refused is conclusive; everything else keeps the threshold. Exact times, no I/O."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.settings import DEFAULT_TIMING
from agent.core.model import Reason, State
from agent.core.verdict import CheckVerdict

T = DEFAULT_TIMING
# What happens between two scheduled checks. A dropped connection is not an observation: the scheduler asks at
# once on a fresh connection, and only that answer is observed.
EVENTS = st.sampled_from(["ok", "drop_then_ok", "drop_then_refused", "timeout", "loading"])


def ready() -> CheckVerdict:
    """A check that has just entered ready at ``window``."""
    v = CheckVerdict(T)
    v.observe(True, 0.0)
    v.observe(True, T.window)
    assert v.state is State.READY
    return v


def apply(v: CheckVerdict, event: str, now: float) -> None:
    """Feed the observation(s) an event produces, the way the scheduler does."""
    if event in ("ok", "drop_then_ok"):
        v.observe(True, now)
    elif event == "drop_then_refused":
        v.observe(False, now, Reason.REFUSED, conclusive=True)
    elif event == "timeout":
        v.observe(False, now, Reason.TIMEOUT)
    else:
        v.observe(False, now, Reason.LOADING)


class TestConclusiveFailure:
    def test_refused_fresh_attempt_leaves_ready_at_once(self) -> None:
        """One conclusive failure takes a ready check out on that very observation, with its reason."""
        v = ready()
        change = v.observe(False, 1.0, Reason.REFUSED, conclusive=True)
        assert change is not None and change.new is State.DEGRADED and change.reason is Reason.REFUSED

    def test_inconclusive_failures_keep_the_threshold(self) -> None:
        """Timeouts and error replies still need failure_threshold failures."""
        v = ready()
        for i in range(T.failure_threshold - 1):
            v.observe(False, 1.0 + i * 0.2, Reason.TIMEOUT)
        assert v.state is State.READY
        v.observe(False, 2.0, Reason.TIMEOUT)
        assert v.state is State.DEGRADED

    def test_conclusive_before_ready_changes_nothing_special(self) -> None:
        """Before the first ready a conclusive failure is just a failure (still starting)."""
        v = CheckVerdict(T)
        v.observe(False, 0.0, Reason.REFUSED, conclusive=True)
        assert v.state is State.STARTING


class TestProperties:
    @settings(deadline=None, max_examples=300)
    @given(st.lists(st.sampled_from(["ok", "drop_then_ok"]), min_size=1, max_size=80),
           st.floats(0.05, 2.0))
    def test_drops_answered_by_a_fresh_success_never_leave_ready(self, events: list[str], gap: float) -> None:
        """Any number of connection drops, each followed by a successful fresh attempt, never leave ready."""
        v = ready()
        now = T.window
        for event in events:
            now += gap
            apply(v, event, now)
            assert v.state is State.READY and v.consecutive_failures == 0

    @settings(deadline=None, max_examples=300)
    @given(st.lists(EVENTS, min_size=1, max_size=60), st.floats(0.05, 1.0))
    def test_a_conclusive_failure_while_ready_always_leaves_ready(self, events: list[str], gap: float) -> None:
        """Whatever came before, a refused fresh attempt while ready leaves ready on that observation."""
        v = ready()
        now = T.window
        for event in events:
            now += gap
            was_ready = v.state is State.READY
            apply(v, event, now)
            if event == "drop_then_refused" and was_ready:
                assert v.state is State.DEGRADED

    @settings(deadline=None, max_examples=200)
    @given(st.sampled_from([0.2, 0.5, 1.0]), st.lists(st.floats(0.01, 0.3), min_size=1, max_size=30))
    def test_the_window_governs_the_way_back(self, window: float, gaps: list[float]) -> None:
        """After a conclusive failure the check is ready again only once a whole window has passed."""
        timing = replace(T, window=window)
        v = CheckVerdict(timing)
        v.observe(True, 0.0)
        v.observe(True, window)
        v.observe(False, window + 0.1, Reason.REFUSED, conclusive=True)
        first = now = window + 0.2
        for gap in gaps:
            v.observe(True, now)
            assert (v.state is State.READY) == (now - first >= window)
            now += gap
