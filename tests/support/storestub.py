"""A check and a clock for driving the real :class:`agent.core.store.VerdictStore` at explicit times, in-process.

The store only reads a check's name, kind, target and required flag; listeners (logs, history, metrics) are
then fed by the real store, so their tests see exactly what production feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.model import CheckResult


@dataclass
class StubCheck:
    """Only the attributes the store reads; the store never runs a check."""

    name: str
    kind: str = "redis"
    target: str = "redis://127.0.0.1:1/0"
    required: bool = True

    async def run(self) -> CheckResult:  # pragma: no cover - the store never calls it
        raise NotImplementedError

    async def wait_lost(self) -> None:  # pragma: no cover
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover
        raise NotImplementedError


class Clock:
    """A monotonic clock that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
