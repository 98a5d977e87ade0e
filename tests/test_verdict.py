"""The verdict state machine, exactly, with explicit times (no clock, no sleeps)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.settings import DEFAULT_TIMING
from agent.core.model import ReadinessMode, Reason, State
from agent.core.verdict import AgentVerdict, CheckVerdict, Timing

T = DEFAULT_TIMING  # the documented defaults


def timing_with(**changes: float) -> Timing:
    """The defaults with some knobs changed."""
    return replace(T, **changes)


def feed(v: CheckVerdict, *obs: tuple[float, bool]) -> CheckVerdict:
    for at, ok in obs:
        v.observe(ok, at, None if ok else Reason.REFUSED)
    return v


def agent(mode: ReadinessMode = ReadinessMode.ALWAYS, timeout: float = 10.0, timing: Timing = T) -> AgentVerdict:
    return AgentVerdict({"redis": CheckVerdict(timing)}, frozenset({"redis"}), mode, started_at=0.0,
                        startup_timeout=timeout)


class TestStabilityWindow:
    def test_not_ready_before_window_elapses(self) -> None:
        """Successes for less than the window leave the check stabilizing."""
        v = feed(CheckVerdict(T), (1.0, True), (1.2, True), (1.4, True), (1.499, True))
        assert v.state is State.STABILIZING

    def test_ready_exactly_at_window_end(self) -> None:
        """A success exactly `window` after the first one enters ready."""
        v = feed(CheckVerdict(T), (1.0, True), (1.2, True), (1.5, True))
        assert v.state is State.READY

    def test_window_restarts_after_failure(self) -> None:
        """A failure inside the window sends it back to starting; the window restarts at the next success."""
        v = feed(CheckVerdict(T), (1.0, True), (1.3, False))
        assert v.state is State.STARTING
        feed(v, (1.4, True), (1.6, True), (1.8, True))
        assert v.state is State.STABILIZING  # 1.8 - 1.4 < 0.5
        feed(v, (1.9, True))
        assert v.state is State.READY

    def test_window_zero_is_ready_on_first_success(self) -> None:
        """With window 0 the first success is enough."""
        v = feed(CheckVerdict(timing_with(window=0)), (0.1, True))
        assert v.state is State.READY

    def test_failure_while_stabilizing_after_ready_goes_to_degraded(self) -> None:
        """Once ever ready, a failed re-stabilization falls back to degraded, not starting."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True), (1, False), (1.2, False), (1.4, False))
        assert v.state is State.DEGRADED
        feed(v, (2.0, True), (2.1, False))
        assert v.state is State.DEGRADED

    def test_next_check_lands_on_window_end(self) -> None:
        """While stabilizing, the next check is scheduled no later than the end of the window."""
        v = feed(CheckVerdict(timing_with(window=0.3, retry_interval=0.2)), (1.0, True), (1.2, True))
        assert abs(v.next_delay(1.2, rng=lambda: 1.0).seconds - 0.1) < 1e-9


class TestThresholds:
    def test_one_failure_never_leaves_ready(self) -> None:
        """A single failed observation between successes keeps the check ready."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True), (1.5, False), (1.7, True))
        assert v.state is State.READY

    def test_threshold_consecutive_failures_degrade(self) -> None:
        """failure_threshold consecutive failures take a ready check to degraded."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True), (1.5, False), (1.7, False))
        assert v.state is State.READY
        feed(v, (1.9, False))
        assert v.state is State.DEGRADED

    def test_flapping_within_flap_window_degrades(self) -> None:
        """Three failures within flap_window degrade even when separated by successes."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True))
        feed(v, (1, False), (1.2, True), (3, False), (3.2, True), (5, False))
        assert v.state is State.DEGRADED

    def test_failures_spread_beyond_flap_window_do_not_degrade(self) -> None:
        """Isolated failures further apart than flap_window never degrade."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True))
        feed(v, (1, False), (1.2, True), (12, False), (12.2, True), (23, False), (23.2, True))
        assert v.state is State.READY

    def test_maintenance_degrades_at_once(self) -> None:
        """A maintenance observation degrades without waiting for the threshold."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True))
        v.observe(False, 1.0, Reason.MAINTENANCE)
        assert v.state is State.DEGRADED

    def test_recovery_from_degraded_needs_a_full_window(self) -> None:
        """Degraded goes back through stabilizing: ready again only after a full window."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True), (1, False), (1.2, False), (1.4, False))
        feed(v, (2.0, True), (2.4, True))
        assert v.state is State.STABILIZING
        feed(v, (2.5, True))
        assert v.state is State.READY


class TestDraining:
    def test_draining_is_final(self) -> None:
        """After drain, no observation changes the state."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True))
        v.drain(1.0)
        feed(v, (1.1, True), (2, False), (3, True))
        assert v.state is State.DRAINING

    def test_agent_drain_makes_readyz_fail_in_both_modes(self) -> None:
        """Draining is not ready even in startup mode."""
        for mode in ReadinessMode:
            a = agent(mode)
            feed(a.checks["redis"], (0, True), (0.5, True))  # type: ignore[arg-type]
            a.refresh(0.5)
            assert a.is_ready()
            a.drain(1.0)
            assert not a.is_ready() and a.state is State.DRAINING


class TestReadinessMode:
    def test_startup_mode_ignores_later_failures(self) -> None:
        """In startup mode, once ready, later failures do not flip /readyz."""
        a = agent(ReadinessMode.STARTUP)
        check = a.checks["redis"]
        feed(check, (0, True), (0.5, True))  # type: ignore[arg-type]
        a.refresh(0.5)
        feed(check, (1, False), (1.2, False), (1.4, False))  # type: ignore[arg-type]
        a.refresh(1.4)
        assert check.state is State.DEGRADED
        assert a.is_ready()

    def test_always_mode_follows_the_verdict(self) -> None:
        """In always mode /readyz follows the check."""
        a = agent(ReadinessMode.ALWAYS)
        check = a.checks["redis"]
        feed(check, (0, True), (0.5, True), (1, False), (1.2, False), (1.4, False))  # type: ignore[arg-type]
        a.refresh(1.4)
        assert not a.is_ready() and a.state is State.DEGRADED

    def test_startup_mode_still_gates_until_first_ready(self) -> None:
        """Before the first ready, startup mode is not ready either."""
        a = agent(ReadinessMode.STARTUP)
        feed(a.checks["redis"], (0, True))  # type: ignore[arg-type]
        a.refresh(0.2)
        assert not a.is_ready()


class TestStartupDeadline:
    def test_deadline_60s_on_gcp(self) -> None:
        """With the GCP deadline (60 s) the flag stays off at 59.9 s and is set at 60 s."""
        a = agent(timeout=60.0)
        a.refresh(59.9)
        assert not a.deadline_exceeded
        a.refresh(60.0)
        assert a.deadline_exceeded

    def test_deadline_10s_local(self) -> None:
        """With the local deadline (10 s) the flag is set at 10 s."""
        a = agent(timeout=10.0)
        a.refresh(9.99)
        assert not a.deadline_exceeded
        a.refresh(10.0)
        assert a.deadline_exceeded and a.deadline_remaining(10.0) is None

    def test_no_deadline_once_ready(self) -> None:
        """Reaching ready before the deadline means it can never be exceeded."""
        a = agent(timeout=10.0)
        feed(a.checks["redis"], (1, True), (1.5, True))  # type: ignore[arg-type]
        a.refresh(1.5)
        a.refresh(100)
        assert not a.deadline_exceeded and a.started

    def test_deadline_is_a_flag_not_a_state(self) -> None:
        """Exceeding the deadline keeps checking: a later stable window still reaches ready."""
        a = agent(timeout=10.0)
        a.refresh(11)
        feed(a.checks["redis"], (12, True), (12.5, True))  # type: ignore[arg-type]
        a.refresh(12.5)
        assert a.deadline_exceeded and a.is_ready()


class TestBackoff:
    def test_healthy_uses_interval(self) -> None:
        """A ready, healthy check waits `interval` (±20 %)."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True))
        assert v.next_delay(0.5, rng=lambda: 0.5).seconds == T.interval

    def test_failing_uses_retry_interval_until_backoff_after(self) -> None:
        """Failing for less than backoff_after re-checks at retry_interval."""
        v = feed(CheckVerdict(T), (0, False), (4.9, False))
        assert v.next_delay(4.9, rng=lambda: 0.5).seconds == T.retry_interval

    def test_backoff_doubles_up_to_interval(self) -> None:
        """After backoff_after, delays double from retry_interval and cap at interval."""
        v = CheckVerdict(T)
        delays = []
        now = 0.0
        backoff = None
        for _ in range(34):  # 25 x 0.2 s reach backoff_after (5 s), then 0.4, 0.8, 1.0, ...
            v.observe(False, now, Reason.REFUSED)
            delay = v.next_delay(now, rng=lambda: 0.5, backoff=backoff)
            backoff = delay.backoff
            delays.append(round(delay.seconds, 6))
            now += delay.seconds
        assert delays[0] == T.retry_interval
        backed = [d for d in delays if d != T.retry_interval]
        assert backed[:3] == [0.4, 0.8, 1.0] and set(backed[3:]) == {1.0}

    def test_backoff_resets_after_success(self) -> None:
        """One success ends the backoff."""
        v = CheckVerdict(T)
        backoff = None
        for t in range(0, 8):
            v.observe(False, float(t), Reason.REFUSED)
            backoff = v.next_delay(float(t), rng=lambda: 0.5, backoff=backoff).backoff
        assert backoff is not None
        v.observe(True, 8.0)
        assert v.next_delay(8.0, rng=lambda: 0.5, backoff=backoff).backoff is None
        v.observe(False, 8.1, Reason.REFUSED)
        assert v.next_delay(8.1, rng=lambda: 0.5, backoff=None).seconds == T.retry_interval

    @given(st.floats(0, 1, exclude_max=True))
    def test_jitter_bounds(self, r: float) -> None:
        """Every delay stays within ±20 % of its base."""
        v = feed(CheckVerdict(T), (0, True), (0.5, True))
        assert 0.8 * T.interval <= v.next_delay(0.5, rng=lambda: r).seconds <= 1.2 * T.interval
        v.observe(False, 1.0, Reason.TIMEOUT)
        assert 0.8 * T.retry_interval <= v.next_delay(1.0, rng=lambda: r).seconds <= 1.2 * T.retry_interval


# ----------------------------------------------------------------------------------------- property tests

observations = st.lists(
    st.tuples(st.floats(0.001, 2.0, allow_nan=False), st.booleans()), min_size=1, max_size=60
)
timings = st.builds(
    timing_with,
    window=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    failure_threshold=st.integers(2, 5),
    flap_window=st.sampled_from([1.0, 10.0]),
)


class TestProperties:
    @settings(deadline=None, max_examples=300)
    @given(timings, observations)
    def test_never_enters_ready_without_a_full_passing_window(
        self, timing: Timing, obs: list[tuple[float, bool]]
    ) -> None:
        """Entering ready at t implies every observation in [t - window, t] passed and one at or before t - window."""
        v = CheckVerdict(timing)
        history: list[tuple[float, bool]] = []
        now = 0.0
        for gap, ok in obs:
            now += gap
            history.append((now, ok))
            change = v.observe(ok, now, None if ok else Reason.REFUSED)
            if change is not None and change.new is State.READY:
                # Ages, as the verdict measures them (now - t): "t >= now - window" in floats can disagree with
                # "now - t <= window" by one rounding (0.25 - 0.2 < 0.05), which is not a property of the rule.
                inside = [o for t, o in history if now - t <= timing.window]
                assert all(inside)
                assert any(o for t, o in history if now - t >= timing.window)

    @settings(deadline=None, max_examples=200)
    @given(timings, st.lists(st.floats(0.01, 3.0), min_size=2, max_size=20), st.integers(0, 19))
    def test_one_failure_between_successes_never_leaves_ready(
        self, timing: Timing, gaps: list[float], fail_at: int
    ) -> None:
        """A single failed observation amid successes never takes a ready check out of ready."""
        v = CheckVerdict(timing)
        now = 0.0
        v.observe(True, now)
        now += timing.window
        v.observe(True, now)
        assert v.state is State.READY
        for i, gap in enumerate(gaps):
            now += gap
            v.observe(i != fail_at % len(gaps), now, Reason.TIMEOUT)
            assert v.state is State.READY

    @settings(deadline=None, max_examples=200)
    @given(timings, st.floats(0.0, 5.0), st.floats(0, 1))
    def test_leaves_ready_within_the_detection_bound(self, timing: Timing, fault_at: float, r: float) -> None:
        """Once every check fails (each taking the full timeout), ready ends within the detection bound."""
        v = CheckVerdict(timing)
        v.observe(True, 0.0)
        now = timing.window
        v.observe(True, now)
        while now < fault_at:  # healthy checks on the agent's own schedule
            now += v.next_delay(now, rng=lambda: r).seconds
            if now < fault_at:
                v.observe(True, now)
        fault = fault_at
        while v.state is State.READY:
            now = max(now, fault)  # the first check at or after the fault fails
            now += timing.timeout
            v.observe(False, now, Reason.TIMEOUT)
            if v.state is State.READY:
                now += v.next_delay(now, rng=lambda: r).seconds
        assert now - fault <= timing.detection_bound + 1e-9
