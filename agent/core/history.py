"""The recent transitions, kept in the pod itself: "why did this pod leave rotation at 03:12" from ``/status``.

A store listener that keeps the last ``size`` transitions (checks and the agent) in a bounded ring: wall time
(for matching against other logs and dashboards), which check (None for the agent), old → new state, the
failure reason and detail, and the ``/readyz`` answer when it flipped with that transition. ``/status`` shows
them under ``transitions``, oldest first. Memory is bounded by ``size`` whatever the outage pattern.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.core.model import CheckResult
from agent.core.snapshot import AgentSnapshot
from agent.core.store import Change

SIZE = 50  # a bad hour of flapping at the default timings stays well inside a few kilobytes of /status


@dataclass(frozen=True, slots=True)
class Entry:
    """One transition as ``/status`` shows it; ``at`` is monotonic (for ages), ``wall`` is epoch seconds."""

    at: float
    wall: float
    check: str | None
    old: str
    new: str
    reason: str | None
    detail: str
    readyz: int | None  # 200/503 when /readyz flipped with this transition, else None

    def document(self, now: float) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(self.wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "age_seconds": round(now - self.at, 3),
            "check": self.check,
            "from": self.old,
            "to": self.new,
            "reason": self.reason,
            "detail": self.detail,
            "readyz": self.readyz,
        }


class History:
    """A listener keeping the last ``size`` transitions; ``clock`` is monotonic, ``wall`` the epoch clock."""

    def __init__(self, clock: Callable[[], float], wall: Callable[[], float] = time.time, size: int = SIZE) -> None:
        self.clock = clock
        self.wall = wall
        self.entries: deque[Entry] = deque(maxlen=size)

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        """Observations are counted by the metrics; only transitions are kept."""

    def changed(self, change: Change) -> None:
        t, result = change.transition, change.result
        failed = result is not None and not result.ok
        self.entries.append(Entry(
            at=self.clock(), wall=self.wall(), check=change.check, old=str(t.old), new=str(t.new),
            reason=str(t.reason) if failed and t.reason is not None else None,  # a recovery has no reason
            detail=result.detail if failed and result is not None else "",
            readyz=None if change.ready_flipped is None else (200 if change.ready_flipped else 503),
        ))

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        """The deadline is a flag in ``/status`` (``startup.deadline_exceeded``), not a transition."""

    def document(self, now: float) -> list[dict[str, Any]]:
        """The transitions for ``/status``, oldest first."""
        return [entry.document(now) for entry in self.entries]

