"""A single-flight render cache: one render per key in flight, shared by every request that asks meanwhile,
and reused for ``max_age`` seconds while the ``version`` it was rendered for still holds.

Why: ``/metrics`` and ``/status`` are rendered from the whole registry or snapshot, and anyone on the pod
network may ask for them as often as they like; the cost of answering must depend on the reuse age, not on the
request rate (docs/design.md, "Scrape caching"). The age counts from the start of the render, so a body that
is served was collected at most ``max_age`` seconds earlier. A render that failed or was cancelled is never
reused: the next request starts a new one. The clock is injected (tests drive it by hand).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    version: Hashable
    started: float
    task: asyncio.Task[T]

    def usable(self, version: Hashable, now: float, max_age: float) -> bool:
        """In flight for this version, or done, successful, for this version and younger than ``max_age``."""
        if self.version != version:
            return False
        if not self.task.done():
            return True
        return not self.task.cancelled() and self.task.exception() is None and now - self.started < max_age


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark a failure as seen: every waiter may have gone (their request cancelled) before the render ended."""
    if not task.cancelled():
        task.exception()


class RenderCache(Generic[T]):
    """Renders per ``key`` (a response format), at most ``max_keys`` keys kept (the least recently rendered go).

    ``renders`` counts the renders started, for ``/status`` and the tests.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 8) -> None:
        self.max_age = max_age
        self.clock = clock
        self.max_keys = max_keys
        self.renders = 0
        self._entries: dict[Hashable, _Entry[T]] = {}

    async def get(self, key: Hashable, version: Hashable, render: Callable[[], Awaitable[T]]) -> T:
        """The body for ``key``: the cached one when usable, else the result of one new ``render()``.

        A caller that is cancelled while waiting leaves the render running for the others (``shield``).
        """
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or not entry.usable(version, now, self.max_age):
            entry = _Entry(version, now, asyncio.ensure_future(render()))
            entry.task.add_done_callback(_retrieve)
            self.renders += 1
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > self.max_keys:
                del self._entries[next(iter(self._entries))]
        if entry.task.done():
            return entry.task.result()
        return await asyncio.shield(entry.task)

    async def close(self) -> None:
        """Cancel the renders still in flight and wait for them (the app's cleanup)."""
        pending = [e.task for e in self._entries.values() if not e.task.done()]
        self._entries.clear()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
