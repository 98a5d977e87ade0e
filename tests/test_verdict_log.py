"""The verdict log as a store listener, on an injected clock: the first failure at once, each change of reason,
a reminder at a bounded rate, one line per transition, and never one line per check — asserted as records and
their fields (event, reason, check, state), with exact times."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from agent.config.settings import DEFAULT_TIMING
from agent.core.model import CheckResult, ReadinessMode, Reason
from agent.core.store import VerdictStore
from agent.logs.setup import importance
from agent.logs.verdict_log import MIN_GAP, REMIND_EVERY, VerdictLog
from agent.logs.writer import KEEP, WARNING
from tests.support.logcapture import AgentLogs, agent_logs
from tests.support.storestub import Clock, StubCheck

T = DEFAULT_TIMING


class Capture(AgentLogs):
    """The agent's records, with the fake-clock time each was made at."""

    def events(self) -> list[tuple[float, str | None, str | None]]:
        """(time the record was made by the fake clock, event, reason) of every record."""
        return [(getattr(r, "at", -1.0), r.labels.get("event"), r.labels.get("reason"))  # type: ignore[attr-defined]
                for r in self.records]


@pytest.fixture
def capture() -> Iterator[Capture]:
    with agent_logs(Capture()) as handler:
        yield handler


class Harness:
    """A store with one listener (the verdict log), fed observations at explicit times."""

    def __init__(self, capture: Capture, *, required: bool = True, serving: bool = True,
                 startup_timeout: float = 1000.0) -> None:
        self.clock = Clock()
        self.capture = capture
        self.store = VerdictStore([StubCheck("redis", required=required)], T, ReadinessMode.ALWAYS,
                                  startup_timeout, self.clock)
        self.store.subscribe(VerdictLog(self.clock, serving=serving))

    def feed(self, at: float, ok: bool, reason: Reason | None = None, detail: str = "") -> None:
        self.clock.now = at
        before = len(self.capture.records)
        self.store.record("redis", CheckResult(ok, 0.001, None if ok else reason or Reason.REFUSED, detail))
        for record in self.capture.records[before:]:
            record.at = at

    def fail_every(self, start: float, end: float, step: float, reason: Reason = Reason.REFUSED) -> None:
        t = start
        while t < end - 1e-9:
            self.feed(round(t, 6), False, reason, "connection refused")
            t += step

    def ready(self, at: float) -> None:
        self.feed(at, True)
        self.feed(at + T.window, True)


class TestVerdictLog:
    def test_first_failure_is_logged_at_once_with_reason_and_detail(self, capture: Capture) -> None:
        """A check that never leaves starting logs its first failure at that instant, with reason and detail."""
        h = Harness(capture)
        h.feed(0.0, False, Reason.AUTH, "authentication failed")
        [record] = capture.records
        assert record.levelno == logging.WARNING
        assert record.labels == {"check": "redis", "state": "starting", "event": "failing",  # type: ignore[attr-defined]
                                 "reason": "auth"}
        assert "authentication failed" in record.getMessage()

    def test_persistent_failure_reminds_at_a_bounded_rate(self, capture: Capture) -> None:
        """100 s of the same failure every 0.2 s: the first line at 0, then one reminder per REMIND_EVERY."""
        h = Harness(capture)
        h.fail_every(0.0, 100.0, 0.2)
        expected = [(0.0, "failing", "refused")] + [
            (k * REMIND_EVERY, "still_failing", "refused") for k in range(1, int(100 // REMIND_EVERY) + 1)
        ]
        assert capture.events() == expected

    def test_change_of_reason_is_logged_at_once(self, capture: Capture) -> None:
        """refused then timeout: the change is a line of its own when it happens."""
        h = Harness(capture)
        h.fail_every(0.0, 2.0, 0.2, Reason.REFUSED)
        h.fail_every(2.0, 3.0, 0.2, Reason.TIMEOUT)
        assert capture.events() == [(0.0, "failing", "refused"), (2.0, "reason_changed", "timeout")]

    def test_fast_reason_changes_are_folded_not_one_line_per_check(self, capture: Capture) -> None:
        """Reasons alternating on every check give at most one line per MIN_GAP, not one per check."""
        h = Harness(capture)
        for i in range(100):  # 10 s, alternating every 0.1 s
            h.feed(round(i * 0.1, 6), False, Reason.REFUSED if i % 2 == 0 else Reason.TIMEOUT, "x")
        times = [at for at, _, _ in capture.events()]
        assert len(times) <= 10 / MIN_GAP + 1
        assert all(b - a >= MIN_GAP - 1e-9 for a, b in itertools.pairwise(times))

    def test_a_change_too_soon_is_logged_once_the_gap_has_passed(self, capture: Capture) -> None:
        """refused at 0, then timeout from 0.2 on: the change is logged at the first failure after MIN_GAP."""
        h = Harness(capture)
        h.feed(0.0, False, Reason.REFUSED, "connection refused")
        h.fail_every(0.2, 3.0, 0.2, Reason.TIMEOUT)
        assert capture.events() == [(0.0, "failing", "refused"), (MIN_GAP, "reason_changed", "timeout")]

    def test_a_failure_that_moves_the_state_is_one_transition_line(self, capture: Capture) -> None:
        """Stabilizing → starting on a failure: one transition record carrying the reason, no extra failure line."""
        h = Harness(capture)
        h.feed(0.0, True)
        h.feed(0.2, False, Reason.LOADING, "LOADING")
        events = capture.events()
        assert events == [(0.0, "transition", None), (0.2, "transition", "loading")]
        assert capture.records[1].labels["state"] == "starting"  # type: ignore[attr-defined]

    def test_a_blip_absorbed_by_ready_is_logged_and_its_end_too(self, capture: Capture) -> None:
        """A ready check's single failure (below the threshold) gets a line, and so does its recovery."""
        h = Harness(capture)
        h.ready(0.0)
        capture.records.clear()
        h.feed(1.0, False, Reason.TIMEOUT, "no answer")
        h.feed(1.2, True)
        assert capture.events() == [(1.0, "failing", "timeout"), (1.2, "recovered", None)]
        assert capture.records[0].labels["state"] == "ready"  # type: ignore[attr-defined]

    def test_degraded_after_threshold_is_a_transition_with_the_reason(self, capture: Capture) -> None:
        """Three failures take a ready check out: first failure at once, then the transition, nothing else."""
        h = Harness(capture)
        h.ready(0.0)
        capture.records.clear()
        h.fail_every(1.0, 1.6, 0.2, Reason.REFUSED)
        assert capture.events() == [(1.0, "failing", "refused"), (1.4, "transition", "refused")]
        assert capture.records[1].labels["state"] == "degraded"  # type: ignore[attr-defined]

    def test_optional_check_failure_is_logged_at_info(self, capture: Capture) -> None:
        """An optional check that never succeeds still logs its failure, at INFO (it gates nothing)."""
        h = Harness(capture, required=False)
        h.feed(0.0, False, Reason.DNS, "name does not resolve")
        [record] = capture.records
        assert record.levelno == logging.INFO and record.labels["event"] == "failing"  # type: ignore[attr-defined]

    def test_wait_never_names_readyz(self, capture: Capture) -> None:
        """Without an HTTP server (wait) no line speaks of /readyz, and the deadline is left to --max-wait."""
        h = Harness(capture, serving=False, startup_timeout=1.0)
        h.fail_every(0.0, 2.0, 0.2)
        h.ready(2.0)
        assert [e for _, e, _ in capture.events()] == ["failing", "transition", "transition"]
        assert not any("/readyz" in r.getMessage() for r in capture.records)

    def test_startup_deadline_is_one_error_with_the_reason(self, capture: Capture) -> None:
        """run: the deadline is one ERROR record with the last failure reason."""
        h = Harness(capture, startup_timeout=1.0)
        h.fail_every(0.0, 3.0, 0.2)
        errors = [r for r in capture.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert errors[0].labels == {"state": "starting", "event": "deadline", "reason": "refused"}  # type: ignore[attr-defined]

    def test_transitions_and_the_deadline_are_never_dropped_by_the_log_writer(self, capture: Capture) -> None:
        """A full log queue (agent/logs/writer.py) drops failure lines before others, never a transition, the
        drain or the deadline: their records are in the writer's kept class, the others by level."""
        h = Harness(capture, startup_timeout=1.0)
        h.fail_every(0.0, 1.2, 0.2)
        h.ready(1.2)
        h.store.drain()
        kept = {r.labels["event"] for r in capture.records if importance(r) == KEEP}  # type: ignore[attr-defined]
        assert kept == {"transition", "deadline", "draining"}
        assert {importance(r) for r in capture.records if r.labels["event"] == "failing"} == {WARNING}  # type: ignore[attr-defined]
