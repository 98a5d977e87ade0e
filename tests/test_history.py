"""The recent-transitions listener and its ``/status`` key: what happened, when (wall and age), why, and
whether ``/readyz`` flipped — bounded whatever the outage pattern; fed through the real store with fake clocks."""

from __future__ import annotations

from agent.config.loader import load_settings
from agent.config.settings import DEFAULT_TIMING, Platform
from agent.core.history import History
from agent.core.model import CheckResult, ReadinessMode, Reason
from agent.core.store import VerdictStore
from agent.server.status import status_document
from tests.support.storestub import Clock, StubCheck

T = DEFAULT_TIMING
WALL0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def harness(size: int = 50) -> tuple[VerdictStore, History, Clock]:
    clock = Clock()
    store = VerdictStore([StubCheck("redis")], T, ReadinessMode.ALWAYS, 1000.0, clock)
    history = History(clock, wall=lambda: WALL0 + clock.now, size=size)
    store.subscribe(history)
    return store, history, clock


def feed(store: VerdictStore, clock: Clock, at: float, ok: bool, reason: Reason | None = None,
         detail: str = "") -> None:
    clock.now = at
    store.record("redis", CheckResult(ok, 0.001, reason, detail))


class TestHistory:
    def test_three_transitions_with_time_reason_detail_and_readyz(self) -> None:
        """Starting → stabilizing → ready → degraded is kept in order with its reason, detail and /readyz flips."""
        store, history, clock = harness()
        feed(store, clock, 0.0, True)
        feed(store, clock, 0.5, True)
        for t in (1.0, 1.2, 1.4):
            feed(store, clock, t, False, Reason.LOADING, "Redis is loading the dataset in memory")
        clock.now = 2.0
        doc = history.document(clock.now)
        checks = [(e["check"], e["from"], e["to"], e["reason"], e["readyz"]) for e in doc if e["check"]]
        assert checks == [
            ("redis", "starting", "stabilizing", None, None),
            ("redis", "stabilizing", "ready", None, 200),
            ("redis", "ready", "degraded", "loading", 503),
        ]
        degraded = next(e for e in doc if e["to"] == "degraded" and e["check"])
        assert degraded["detail"] == "Redis is loading the dataset in memory"
        assert degraded["time"] == "2027-01-15T08:00:01.400Z" and degraded["age_seconds"] == 0.6
        agent_level = [(e["from"], e["to"]) for e in doc if e["check"] is None]
        assert agent_level == [("starting", "stabilizing"), ("stabilizing", "ready"), ("ready", "degraded")]

    def test_history_is_bounded(self) -> None:
        """A long flapping outage keeps only the newest ``size`` transitions."""
        store, history, clock = harness(size=10)
        t = 0.0
        for _ in range(100):  # success then failure: stabilizing <-> starting every time
            feed(store, clock, t, True)
            feed(store, clock, t + 0.1, False, Reason.REFUSED, "connection refused")
            t += 0.2
        doc = history.document(clock.now)
        assert len(doc) == 10
        assert doc[-1]["to"] == "starting" and doc[-1]["age_seconds"] == 0.0

    async def test_status_shows_the_subscribed_history(self) -> None:
        """``/status`` has ``transitions`` from the agent's History (empty without one)."""
        store, history, clock = harness()
        feed(store, clock, 0.0, True)
        settings = load_settings({"platform": "local"}, {}, lambda _env: (Platform.LOCAL, "test"))
        doc = status_document(store.snapshot, settings, clock.now, True, history)
        assert [(e["from"], e["to"]) for e in doc["transitions"] if e["check"]] == [("starting", "stabilizing")]
        assert status_document(store.snapshot, settings, clock.now, True)["transitions"] == []
