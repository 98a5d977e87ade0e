"""The runtime: runs each check on the schedule its verdict asks for and writes the verdict. The one writer.

Per check there are two tasks: the check loop (run, record, sleep ``next_delay`` or until the monitor
connection drops) and the monitor loop (hold a monitor connection; its loss is a failed observation at that
instant and wakes the check loop for an immediate re-check). A third task watches the startup deadline.
Everything else (HTTP handlers, metrics collector, Kubernetes notifier, ``wait``) reads :class:`Agent`'s
state or subscribes to its changes; nothing else mutates it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agent.checks import Check, CheckResult, Reason
from agent.checks.redis import MonitorUnavailable, RedisCheck
from agent.checks.tcp import TcpCheck
from agent.config import CheckConfig, Settings
from agent.metrics import Metrics
from agent.verdict import AgentVerdict, CheckVerdict, State, Timing, Transition

log = logging.getLogger("readiness_agent")

Listener = Callable[[Transition], None]
MONITOR_LOST = "monitor connection lost"


def build_check(config: CheckConfig, timing: Timing, clock: Callable[[], float]) -> Check:
    """The check object for one configured dependency."""
    if config.kind == "redis":
        return RedisCheck(config, timing.timeout, clock)
    return TcpCheck(config, timing.timeout, clock)


@dataclass(slots=True)
class CheckStatus:
    """What the agent last saw of one check, for /status, /readyz?verbose and the metrics."""

    check: Check
    verdict: CheckVerdict
    last: CheckResult | None = None
    last_at: float | None = None
    checks_run: int = 0
    monitor_up: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    succeeded: asyncio.Event = field(default_factory=asyncio.Event)
    monitor_reset: asyncio.Event = field(default_factory=asyncio.Event)


class Agent:
    """Owns the verdict. ``start`` launches the check tasks; ``stop`` cancels them and closes connections."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        checks: list[Check] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.timing = settings.timing
        built = checks if checks is not None else [build_check(c, self.timing, clock) for c in settings.checks]
        self.status: dict[str, CheckStatus] = {
            c.name: CheckStatus(c, CheckVerdict(self.timing, since=clock())) for c in built
        }
        self.verdict = AgentVerdict(
            checks={n: s.verdict for n, s in self.status.items()},
            required=frozenset(n for n, s in self.status.items() if s.check.required),
            mode=settings.readiness_mode,
            started_at=clock(),
            startup_timeout=settings["startup_timeout"],
        )
        self.metrics = metrics
        self.listeners: list[Listener] = []
        self.ready = asyncio.Event()
        self.deadline_passed = asyncio.Event()
        self.changed = asyncio.Event()
        self.version = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._forever: list[asyncio.Task[None]] = []  # must never end: /livez fails if one does
        self.heartbeat = clock()
        if metrics is not None:
            metrics.attach(self)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Launch the check, monitor, deadline and heartbeat tasks."""
        for name in self.status:
            self._spawn(self._check_loop(name), f"check:{name}")
            self._spawn(self._monitor_loop(name), f"monitor:{name}")
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
        for status in self.status.values():
            await status.check.close()

    def healthy(self) -> bool:
        """For /livez: every task alive and the heartbeat recent. Never depends on Redis."""
        if any(t.done() for t in self._forever):
            return False
        return self.clock() - self.heartbeat < max(5.0, self.timing.interval * 5)

    # ------------------------------------------------------------------------------------------ the loops

    async def _check_loop(self, name: str) -> None:
        status = self.status[name]
        while True:
            status.wake.clear()
            result = await status.check.run()
            self.record(name, result)
            delay = status.verdict.next_delay(self.clock(), self.rng)
            try:
                async with asyncio.timeout(delay):
                    await status.wake.wait()
            except TimeoutError:
                pass

    async def _monitor_loop(self, name: str) -> None:
        """Hold the monitor connection while the check passes; its loss is a failure and a re-check now.

        Opened only after a successful check, and dropped (to be reopened after the next success) whenever
        a check fails: after a blackhole or a pause the old connection may be half-open forever, and a
        monitor that can never see EOF would silently stop watching.
        """
        status = self.status[name]
        while True:
            await status.succeeded.wait()
            status.succeeded.clear()
            status.monitor_reset.clear()
            lost = asyncio.create_task(status.check.wait_lost(), name=f"monitor-conn:{name}")
            reset = asyncio.create_task(status.monitor_reset.wait(), name=f"monitor-reset:{name}")
            status.monitor_up = True
            try:
                done, _ = await asyncio.wait({lost, reset}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                status.monitor_up = False
                for task in (lost, reset):
                    task.cancel()
                await asyncio.gather(lost, reset, return_exceptions=True)
            if lost not in done or lost.cancelled() or isinstance(lost.exception(), MonitorUnavailable):
                continue  # a failed check reset it, or it could not open: retry after the next success
            if lost.exception() is not None:
                raise lost.exception()  # type: ignore[misc]
            status.succeeded.clear()  # reconnect only after a check has succeeded again
            self.record(name, CheckResult(False, 0.0, Reason.REFUSED, MONITOR_LOST))
            status.wake.set()

    async def _deadline(self) -> None:
        """Flag the startup deadline if it passes before the first ready; end early once ready."""
        remaining = self.verdict.deadline_remaining(self.clock())
        if remaining is None:
            return
        try:
            async with asyncio.timeout(remaining):
                await self.ready.wait()
        except TimeoutError:
            self._refresh(self.clock())

    async def _heartbeat(self) -> None:
        while True:
            self.heartbeat = self.clock()
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------------------------------ the writer

    def record(self, name: str, result: CheckResult) -> None:
        """Feed one observation to the check's verdict; update metrics, logs and listeners."""
        status = self.status[name]
        now = self.clock()
        status.last, status.last_at = result, now
        status.checks_run += 1
        if result.ok:
            status.succeeded.set()
        elif result.detail != MONITOR_LOST:
            status.monitor_reset.set()
        if self.metrics is not None:
            self.metrics.observe_check(name, result)
        change = status.verdict.observe(result.ok, now, result.reason)
        flipped = self._refresh(now)
        if change is not None:
            self._log_check_change(name, change, result, flipped)
        elif flipped is not None:
            self._log_agent(flipped)

    def drain(self) -> None:
        """Start draining: /readyz 503 from now on, for good."""
        if self.verdict.draining:
            return
        now = self.clock()
        change = self.verdict.drain(now)
        self._bump()
        self.ready.clear()
        log.warning("draining: /readyz now answers 503", extra=_labels(state="draining"))
        if change is not None:
            if self.metrics is not None:
                self.metrics.transition(change.old, change.new)
            self._notify(change)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` on every agent-level transition (Kubernetes notifier, tests)."""
        self.listeners.append(listener)

    def _refresh(self, now: float) -> bool | None:
        """Recompute the agent verdict; return the new readiness if /readyz flipped, else None."""
        was_ready = self.ready.is_set()
        change = self.verdict.refresh(now)
        self._bump()
        if change is not None and self.metrics is not None:
            self.metrics.transition(change.old, change.new)
        if change is not None:
            self._notify(change)
        is_ready = self.verdict.is_ready()
        if is_ready:
            self.ready.set()
        else:
            self.ready.clear()
        if self.verdict.deadline_exceeded and not self.deadline_passed.is_set():
            self.deadline_passed.set()
            reason = self.verdict.last_reason()
            log.error(
                "startup deadline of %gs passed without ready; last failure: %s; still checking",
                self.verdict.startup_timeout, reason or "none yet (no successful stable window)",
                extra=_labels(state=str(self.verdict.state)),
            )
        return is_ready if is_ready != was_ready else None

    def _bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def _notify(self, change: Transition) -> None:
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:  # a listener bug must not stop the verdict
                log.exception("verdict listener failed")

    def _log_check_change(self, name: str, change: Transition, result: CheckResult, flipped: bool | None) -> None:
        """One line per verdict change: the check's transition, its reason, and /readyz if it flipped."""
        why = f" ({change.reason}: {result.detail})" if change.reason else ""
        probe = {True: "; /readyz now 200", False: "; /readyz now 503", None: ""}[flipped]
        level = logging.INFO if change.new in (State.READY, State.STABILIZING) else logging.WARNING
        log.log(level, "check %s: %s -> %s%s%s", name, change.old, change.new, why, probe,
                extra=_labels(check=name, state=str(change.new)))

    def _log_agent(self, ready: bool) -> None:
        if ready:
            log.info("agent is READY: /readyz answers 200", extra=_labels(state="ready"))
        else:
            reason = self.verdict.last_reason()
            log.warning("agent is NOT READY: /readyz answers 503 (%s)", reason or str(self.verdict.state),
                        extra=_labels(state=str(self.verdict.state)))


def _labels(**labels: str) -> dict[str, object]:
    """``extra=`` for a log record: Cloud Logging labels in JSON, ignored by the text formatter."""
    return {"labels": {k: v for k, v in labels.items()}}
