"""What one run of the 1011 race is and what it measured: the scenario, Redis's timeline, each client's fate.

Why a module of its own: the race (``race.py``) drives real processes; this is the pure part that the demo's
table, its JSON and the tests read (phases, 1011s per kill, when the router gave up on the backend, whether
anyone was routed while the readiness gate said False).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

from agent.config.settings import DEFAULT_TIMING
from agent.core.verdict import Timing
from examples.websocket_app.platform_sim import Outcome, ProbeSpec

STARTUP, STEADY = "start-up/LOADING", "steady"
# A 1011 after a kill is *inside* when its handshake was let through before the agent could know of the kill (no
# readiness can refuse it), *outside* when after: what readiness is for. See RunResult.knew.
DETECTION, RECOVERY = "kill: handshake before the agent could know", "kill: handshake after it"
PHASES = (STARTUP, STEADY, DETECTION, RECOVERY)
# kubelet's minimum period is 1 s; a faster prober keeps the demo short without changing what it shows.
FAST_PROBE = ProbeSpec(period=0.2, timeout=0.5, failure_threshold=2, success_threshold=1)
CAUSES = ("-LOADING", "refused", "other")
MODES = {"naive": "(a) naive /healthz", "none": "(a) no readiness probe", "agent": "(b) agent /readyz",
         "gate": "(c) agent + readiness gate", "client": "(d) agent + app client"}


@dataclass(frozen=True)
class Scenario:
    """Durations in seconds. Pauses here pace the scenario; every fact is waited for with a deadline."""

    loading: float = 2.5  # -LOADING at start-up, and again after the restart
    steady: float = 1.5  # traffic with a ready backend (and the held clients served) before the kill
    # SIGKILL → restart, as a supervisor would take. make demo-race: 5 s, so that Redis stays unusable well past
    # the detection time (restart + LOADING), and a 1011 outside it is possible in every mode.
    down: float = 0.5
    recovery: float = 1.0  # traffic after the backend is routed to again and the held clients are served
    spacing: float = 0.04  # a new client every 40 ms
    messages: int = 3
    kills: int = 1  # steady → SIGKILL → restart → loaded cycles
    propagation: float = 0.0  # readiness change → router acts (EndpointSlice, kube-proxy, NEG: 0 = not modelled)
    probe: ProbeSpec = FAST_PROBE
    agent: Timing = DEFAULT_TIMING  # the detection bound comes from the agent's own code
    slack: float = 1.0  # docs/design.md: tests allow the detection bound + 1 s

    @property
    def detection_time(self) -> float:
        return self.agent.detection_bound + self.slack


@dataclass
class Marks:
    """When things happened to Redis (``time.monotonic()``)."""

    loading: float = 0.0  # started; PING answers -LOADING
    usable: float = 0.0  # first PONG
    kills: list[float] = field(default_factory=list)  # just before each SIGKILL
    restarts: list[float] = field(default_factory=list)  # answering again (-LOADING)
    recoveries: list[float] = field(default_factory=list)  # first PONG after each restart
    end: float = 0.0

    @property
    def kill(self) -> float:
        """The first kill (the only one in the default scenario)."""
        return self.kills[0] if self.kills else math.inf

    def relative(self) -> dict[str, object]:
        """Every mark in seconds since Redis started loading."""
        def rel(v: float) -> float:
            return round(v - self.loading, 4)
        return {"usable": rel(self.usable), "kills": [rel(k) for k in self.kills],
                "restarts": [rel(r) for r in self.restarts], "recoveries": [rel(r) for r in self.recoveries],
                "end": rel(self.end)}


@dataclass
class RunResult:
    """One run: its mode, the Redis timeline, every client's outcome, the prober's and the router's changes of
    mind, (mode c) the gate condition as the API server held it, and (mode d) each verdict the app's watcher
    learned: (when, ready)."""

    mode: str
    scenario: Scenario
    marks: Marks
    outcomes: list[Outcome]
    prober: list[tuple[float, bool]]
    routable: list[tuple[float, bool]] = field(default_factory=list)
    gate: list[tuple[float, bool]] = field(default_factory=list)
    app_verdicts: list[tuple[float, bool]] = field(default_factory=list)

    def knew(self, kill: float) -> float:
        """When the agent could know of ``kill``: at the latest its detection time after it (docs/design.md's
        bound + slack); in mode (d) the instant the app's watcher learned "not ready", if that came first (it
        does, by milliseconds): from then on the app refuses every handshake, whatever the router sends."""
        learned = next((at for at, ready in self.app_verdicts if at >= kill and not ready), math.inf)
        return min(kill + self.scenario.detection_time, learned)

    @staticmethod
    def handshake(o: Outcome) -> float:
        """When the backend let ``o``'s handshake through (its own record; else when the router sent it)."""
        return o.accepted if o.accepted is not None else o.routed if o.routed is not None else o.ended

    def kill_before(self, o: Outcome) -> float | None:
        """The last kill before ``o`` ended (None: it ended before any)."""
        return max((k for k in self.marks.kills if k <= o.ended), default=None)

    def phase(self, o: Outcome) -> str:
        """Start-up, steady, or after a kill: inside (handshake before the agent could know) or outside."""
        if o.ended < self.marks.usable:
            return STARTUP
        kill = self.kill_before(o)
        if kill is None:
            return STEADY
        return DETECTION if self.handshake(o) < self.knew(kill) else RECOVERY

    def per_kill(self) -> list[int]:
        """1011s after each kill (until the next), inside and outside."""
        return [sum(self.kill_before(o) == k for o in self.closed_1011) for k in self.marks.kills]

    def known_after(self) -> list[float]:
        """Seconds from each kill to :meth:`knew` (mode d: measured; else the detection time)."""
        return [self.knew(k) - k for k in self.marks.kills]

    def out_of_rotation(self) -> list[float | None]:
        """Seconds from each kill until the router stopped sending new clients (None: it never did)."""
        return [next((at - k for at, ok in self.routable if at >= k and not ok), None) for k in self.marks.kills]

    def routed_while_gate_false(self) -> list[Outcome]:
        """Clients routed while the gate condition, as the API server held it ``propagation`` s earlier, was not
        True (before its first write it is absent: not True). Empty for the modes without a gate."""
        if self.mode != "gate":
            return []
        times = [at for at, _ in self.gate]
        bad = []
        for o in self.outcomes:
            if o.routed is not None:
                i = bisect_right(times, o.routed - self.scenario.propagation) - 1
                if i < 0 or not self.gate[i][1]:
                    bad.append(o)
        return bad

    @property
    def closed_1011(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "1011"]

    def by_phase(self) -> dict[str, int]:
        counts = Counter(self.phase(o) for o in self.closed_1011)
        return {p: counts[p] for p in PHASES}

    def by_cause(self) -> dict[str, int]:
        """What Redis did to the 1011s: said -LOADING (the race), refused the connection, or something else."""
        counts = Counter(cause(o.detail) for o in self.closed_1011)
        return {c: counts[c] for c in CAUSES}

    def count(self, result: str) -> int:
        return sum(o.result == result for o in self.outcomes)

    @property
    def pinned(self) -> Outcome | None:
        return next((o for o in self.outcomes if o.pinned), None)

    def summary(self) -> dict[str, object]:
        gated = [o.gated for o in self.outcomes]
        t0 = self.marks.loading
        return {
            "mode": self.mode, "clients": len(self.outcomes), "served": self.count("served"),
            "connections_per_s": round(1 / self.scenario.spacing, 1), "propagation": self.scenario.propagation,
            "closed_1011": len(self.closed_1011), "by_phase": self.by_phase(),
            "per_kill_1011": self.per_kill(),
            "known_after_ms": [round(s * 1000, 1) for s in self.known_after()],
            "out_of_rotation_ms": [None if s is None else round(s * 1000, 1) for s in self.out_of_rotation()],
            "routed_while_gate_false": len(self.routed_while_gate_false()),
            "by_cause": self.by_cause(), "refused_handshakes": self.count("refused"), "errors": self.count("error"),
            "gave_up": self.count("gave_up"), "pinned": self.pinned.result if self.pinned else None,
            "gating_total": sum(gated), "gating_max": max(gated, default=0.0),
            "detection_time": self.scenario.detection_time,
            "marks": self.marks.relative(),
            "prober_ready": [(round(at - t0, 4), ready) for at, ready in self.prober],
            "routable": [(round(at - t0, 4), ready) for at, ready in self.routable],
            "gate_condition": [(round(at - t0, 4), ready) for at, ready in self.gate],
            "app_verdicts": [(round(at - t0, 4), ready) for at, ready in self.app_verdicts],
        }


def cause(detail: str) -> str:
    """Why a 1011 happened, from its close reason: -LOADING (the race), refused, or other."""
    if "LOADING" in detail or "BusyLoadingError" in detail:
        return "-LOADING"
    if "Error 111" in detail or "refused" in detail.lower():
        return "refused"
    return "other"
