"""The running agent: runs each check when its verdict asks, watches held connections and the deadline.

Per check, a check loop (run, record, sleep the verdict's delay or until the held connection drops) and, for
a check that holds a connection (:class:`~agent.core.model.WatchesConnection`: Redis), a watch loop: after a
successful check it waits for the server to end that connection. A loss records nothing (a question, not an
answer) and wakes the check loop at once; the re-check on a fresh connection is what counts. The watch reads
the check's own connection, it opens none. One more task watches the startup deadline and another beats the
heartbeat ``/livez`` reads. Every observation goes to the :class:`VerdictStore`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.config.settings import Settings
from agent.core.history import History
from agent.core.model import Check, CheckResult, MonitorUnavailable, WatchesConnection
from agent.core.snapshot import AgentSnapshot
from agent.core.store import VerdictStore


@dataclass(slots=True)
class _Wakeups:
    """The events one check's two loops use to talk to each other."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    succeeded: asyncio.Event = field(default_factory=asyncio.Event)
    monitor_reset: asyncio.Event = field(default_factory=asyncio.Event)


class Agent:
    """The running agent: ``start`` launches the check tasks; ``stop`` cancels them and closes connections."""

    def __init__(
        self,
        settings: Settings,
        checks: Sequence[Check],
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.timing = settings.timing
        self.checks = {c.name: c for c in checks}
        self.store = VerdictStore(list(checks), self.timing, settings.mode, settings.startup_timeout, clock)
        self.history = History(clock)  # the recent transitions /status shows
        self.store.subscribe(self.history)
        self._wakeups = {name: _Wakeups() for name in self.checks}
        self.connection_drops = {name: 0 for name in self.checks}  # held connections the server ended
        self._tasks: list[asyncio.Task[None]] = []
        self._forever: list[asyncio.Task[None]] = []  # must never end: /livez fails if one does
        self.heartbeat = clock()

    @property
    def snapshot(self) -> AgentSnapshot:
        return self.store.snapshot

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Launch the check, monitor, deadline and heartbeat tasks."""
        for name, check in self.checks.items():
            self._spawn(self._check_loop(name), f"check:{name}")
            if isinstance(check, WatchesConnection):  # tcp and http hold nothing to watch: no task for them
                self._spawn(self._monitor_loop(name, check), f"monitor:{name}")
        self._spawn(self._heartbeat(), "heartbeat")
        self._spawn(self._deadline(), "startup-deadline", forever=False)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, forever: bool = True) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        if forever:
            self._forever.append(task)

    async def stop(self) -> None:
        """Cancel every task and close every connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._forever.clear()
        for check in self.checks.values():
            await check.close()

    def healthy(self) -> bool:
        """For /livez: every task alive and the heartbeat recent. Never depends on Redis."""
        if any(t.done() for t in self._forever):
            return False
        return self.clock() - self.heartbeat < max(5.0, self.timing.interval * 5)

    def drain(self) -> None:
        """Start draining: /readyz 503 from now on, for good."""
        self.store.drain()

    # ------------------------------------------------------------------------------------------ the loops

    def record(self, name: str, result: CheckResult) -> None:
        """One observation: to the store, and to the monitor loop (a success may open it, a failure resets it)."""
        wakeups = self._wakeups[name]
        if result.ok:
            wakeups.succeeded.set()
        else:
            wakeups.monitor_reset.set()
        self.store.record(name, result)

    async def _check_loop(self, name: str) -> None:
        check, wakeups = self.checks[name], self._wakeups[name]
        backoff: float | None = None
        while True:
            wakeups.wake.clear()
            result = await check.run()
            self.record(name, result)
            delay = self.store.verdict_of(name).next_delay(self.clock(), self.rng, backoff)
            backoff = delay.backoff
            try:
                async with asyncio.timeout(delay.seconds):
                    await wakeups.wake.wait()
            except TimeoutError:
                pass

    async def _monitor_loop(self, name: str, check: WatchesConnection) -> None:
        """Watch the held connection while the check passes; its loss records nothing and asks a re-check now.

        Armed only after a successful check, and reset (to be re-armed after the next success) whenever a
        check fails: the check drops its connection after any failure, since after a blackhole or a pause it
        may be half-open forever and a watch that can never see EOF would silently stop watching.
        """
        wakeups = self._wakeups[name]
        while True:
            await wakeups.succeeded.wait()
            wakeups.succeeded.clear()
            wakeups.monitor_reset.clear()
            lost = asyncio.create_task(check.wait_lost(), name=f"monitor-conn:{name}")
            reset = asyncio.create_task(wakeups.monitor_reset.wait(), name=f"monitor-reset:{name}")
            self.store.set_monitor(name, True)
            try:
                done, _ = await asyncio.wait({lost, reset}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.store.set_monitor(name, False)
                for task in (lost, reset):
                    task.cancel()
                await asyncio.gather(lost, reset, return_exceptions=True)
            if lost not in done or lost.cancelled() or isinstance(lost.exception(), MonitorUnavailable):
                continue  # a failed check reset it, or it could not open: retry after the next success
            error = lost.exception()
            if error is not None:
                raise error
            # A dropped connection is a question, not an answer (docs/design.md, "Evidence"): nothing is
            # recorded; the check runs at once on a fresh connection, and only its answer counts — refused
            # there means nothing listens (conclusive), a success means nothing failed.
            wakeups.succeeded.clear()  # watch again only after a check has succeeded again
            self.connection_drops[name] += 1
            wakeups.wake.set()

    async def _deadline(self) -> None:
        """Flag the startup deadline if it passes before the first ready; end early once ready."""
        remaining = self.store.snapshot.deadline_remaining(self.clock())
        if remaining is None:
            return
        try:
            async with asyncio.timeout(remaining):
                await self.store.ready.wait()
        except TimeoutError:
            self.store.check_deadline()

    async def _heartbeat(self) -> None:
        while True:
            self.heartbeat = self.clock()
            await asyncio.sleep(1.0)
