"""The one way the harness, the tests, the bench and the examples wait for a fact: poll a probe to a deadline.

Why one: a wait that guesses (a bare ``sleep``) hides races, and a dozen hand-written loops each drifted in
what they returned and how they failed. Both helpers here call ``probe`` until it returns something truthy and
return that value (a predicate gives ``True``; a probe can return the thing awaited: a time, a record, a
token), and raise ``TimeoutError`` naming ``what`` was awaited once ``timeout`` seconds have passed. The probe
is always tried once more at the deadline, so a fact that became true during the last sleep is not missed.

``until`` blocks (sync code, threads); ``until_async`` sleeps on the event loop, and its probe may also be a
coroutine function (``await``-ed each round). Exceptions in ``ignore`` raised by the probe count as "not yet".
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

What = str | Callable[[], str]


class _Rounds:
    """One wait's deadline: whether the current round is the last, and the sleep before the next one."""

    def __init__(self, timeout: float, period: float, what: What) -> None:
        self.timeout, self.period, self.what = timeout, period, what
        self.deadline = time.monotonic() + timeout
        self.last = False

    def begin(self) -> None:
        self.last = time.monotonic() >= self.deadline

    def pause(self) -> float:
        """Seconds to sleep before the next round; ``TimeoutError`` naming ``what`` if this round was the last."""
        if self.last:
            text = self.what() if callable(self.what) else self.what
            raise TimeoutError(f"timed out after {self.timeout:g} s waiting for {text}")
        return max(0.0, min(self.period, self.deadline - time.monotonic()))


def until(probe: Callable[[], T | None], timeout: float, what: What = "condition", *, period: float = 0.01,
          ignore: tuple[type[Exception], ...] = ()) -> T:
    """Call ``probe`` every ``period`` s until it returns something truthy, and return that.

    ``TimeoutError`` naming ``what`` (a text, or a callable making one at failure time) after ``timeout``.
    """
    rounds = _Rounds(timeout, period, what)
    while True:
        rounds.begin()
        with contextlib.suppress(*ignore):
            if result := probe():
                return result
        time.sleep(rounds.pause())


async def until_async(probe: Callable[[], T | Awaitable[T | None] | None], timeout: float, what: What = "condition",
                      *, period: float = 0.01, ignore: tuple[type[Exception], ...] = ()) -> T:
    """``until`` on the event loop: the same semantics, sleeping with ``asyncio.sleep`` between rounds."""
    rounds = _Rounds(timeout, period, what)
    while True:
        rounds.begin()
        with contextlib.suppress(*ignore):
            value = probe()
            if result := await value if inspect.isawaitable(value) else value:
                return result
        await asyncio.sleep(rounds.pause())
