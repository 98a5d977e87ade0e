"""The app's open WebSockets: closed with 1012 spread over a window when the app stops, and (by choice) with
1013 when Redis goes while they are open.

Why spread: a pod's sockets closed all at once reconnect all at once, a storm on the pods left; closed one by one
at random moments over the window, the reconnects arrive spread over it. Why 1012 (Service Restart) and 1013 (Try
Again Later): browsers and WebSocket libraries treat both as "reconnect", and neither is an abnormal 1006.

Default windows fit each platform's stop sequence (docs/gke.md, "Shutdown order"): on GKE the app gets SIGTERM after
its ``preStop`` sleep and has ~20 s before the agent's turn, so 15 s; on Cloud Run SIGKILL follows SIGTERM by
10 s, so 7 s; elsewhere 2 s. ``READINESS_CLIENT_DRAIN_WINDOW`` (seconds) overrides them, so that a pod spec can
state the window its ``terminationGracePeriodSeconds`` was sized for.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from readiness_client.watcher import ReadinessWatcher, Verdict

SERVICE_RESTART = 1012  # the app is stopping: reconnect (to another pod)
TRY_AGAIN_LATER = 1013  # Redis is gone here: reconnect later (the load balancer sends elsewhere)
log = logging.getLogger("readiness_client")

Closer = Callable[[int, str], Awaitable[None]]  # close(code, reason) of one WebSocket
_DRAINS: set[asyncio.Task[None]] = set()


class OnRedisLost(enum.StrEnum):
    """What to do with open WebSockets when the verdict turns not ready (not draining) while they are open."""

    KEEP = "keep"  # keep them: the app handles its own Redis errors on them (e.g. a fan-out that can wait)
    CLOSE = "close"  # close each with 1013 at a random moment within ``lost_window``, unless ready again first


DRAIN_WINDOW_ENV = "READINESS_CLIENT_DRAIN_WINDOW"


def platform_drain_window(environ: Mapping[str, str] | None = None) -> float:
    """The default drain window: ``READINESS_CLIENT_DRAIN_WINDOW`` if set, else for where the app runs: Cloud Run
    7 s, Kubernetes (GKE) 15 s, else 2 s."""
    env = os.environ if environ is None else environ
    if raw := env.get(DRAIN_WINDOW_ENV, "").strip():
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 3600:  # also refuses nan and inf
            raise ValueError(f"invalid {DRAIN_WINDOW_ENV} {raw!r}: must be seconds from 0 to 3600, e.g. 15")
        return seconds
    if env.get("K_SERVICE") or env.get("K_REVISION"):
        return 7.0  # Cloud Run: SIGKILL 10 s after SIGTERM
    if env.get("KUBERNETES_SERVICE_HOST"):
        return 15.0  # GKE: ~20 s between the app's SIGTERM and the agent's, inside terminationGracePeriodSeconds
    return 2.0


@dataclass(eq=False)
class _Socket:
    close: Closer
    scheduled: asyncio.TimerHandle | None = None


@dataclass
class OpenSockets:
    """Every WebSocket the app has accepted and not yet closed; the gate the integrations consult.

    ``ready()`` is what an upgrade needs: the agent's verdict says ready and the app is not draining.
    """

    watcher: ReadinessWatcher
    on_redis_lost: OnRedisLost = OnRedisLost.KEEP
    lost_window: float = 5.0
    drain_window: float = field(default_factory=platform_drain_window)
    retry_after: int = 5  # seconds, in the 503 that refuses an upgrade
    rng: random.Random = field(default_factory=random.Random)
    draining: bool = False
    closed_by_code: dict[int, int] = field(default_factory=dict)
    refused: int = 0
    _open: set[_Socket] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.watcher.add_listener(self._verdict_changed)

    def ready(self) -> bool:
        """Accept a WebSocket upgrade now?"""
        return self.watcher.ready and not self.draining

    def why_not(self) -> str:
        if self.draining:
            return "draining"
        return self.watcher.verdict.reason or self.watcher.verdict.state

    def add(self, close: Closer) -> object:
        """Track one open WebSocket; the handle is for :meth:`discard` when it closes."""
        sock = _Socket(close)
        self._open.add(sock)
        return sock

    def discard(self, handle: object) -> None:
        if isinstance(handle, _Socket):
            self._cancel(handle)
            self._open.discard(handle)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def _cancel(self, sock: _Socket) -> None:
        if sock.scheduled is not None:
            sock.scheduled.cancel()
            sock.scheduled = None

    def _close_later(self, sock: _Socket, delay: float, code: int, reason: str) -> None:
        def fire() -> None:
            sock.scheduled = None
            if sock in self._open:
                task = asyncio.create_task(self._close_now(sock, code, reason))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self._cancel(sock)
        sock.scheduled = asyncio.get_running_loop().call_later(delay, fire)

    async def _close_now(self, sock: _Socket, code: int, reason: str) -> None:
        self._open.discard(sock)
        self.closed_by_code[code] = self.closed_by_code.get(code, 0) + 1
        try:
            await sock.close(code, reason)
        except Exception as exc:  # the peer already gone: nothing left to close
            log.debug("readiness_client: close %d failed: %s", code, exc)

    def _verdict_changed(self, verdict: Verdict) -> None:
        if self.draining or self.on_redis_lost is OnRedisLost.KEEP:
            return
        if verdict.ready or not verdict.reachable or verdict.draining:
            # Ready again (or only the agent is unreachable, or it is stopping): closes not yet due are called off.
            for sock in self._open:
                self._cancel(sock)
            return
        for sock in self._open:
            if sock.scheduled is None:
                self._close_later(sock, self.rng.uniform(0, self.lost_window), TRY_AGAIN_LATER,
                                  f"try again later: {verdict.reason or verdict.state}"[:120])

    async def drain(self, window: float | None = None) -> int:
        """Refuse new upgrades; close every open WebSocket with 1012, each at a random moment within ``window``
        (default ``drain_window``); return when all are closed. The number closed."""
        self.draining = True
        window = self.drain_window if window is None else window
        sockets = list(self._open)
        log.info("readiness_client: draining %d WebSockets with 1012 over %.1fs", len(sockets), window)

        async def close_one(sock: _Socket, delay: float) -> None:
            await asyncio.sleep(delay)  # this socket's moment within the window
            if sock in self._open:
                await self._close_now(sock, SERVICE_RESTART, "service restart")

        for sock in sockets:
            self._cancel(sock)
        closing = [asyncio.create_task(close_one(s, self.rng.uniform(0, window))) for s in sockets]
        if closing or self._tasks:
            await asyncio.wait([*closing, *self._tasks])
        return len(sockets)


def drain_on_sigterm(gate: OpenSockets, window: float | None = None) -> None:
    """On the app's SIGTERM: drain first (:meth:`OpenSockets.drain`), then hand the signal to whoever had it.

    For servers that close WebSockets themselves as soon as they see SIGTERM (uvicorn closes them all at once
    with 1012): the drain spreads the closes before the server's own shutdown starts. A second SIGTERM during the
    drain goes straight to the previous handler (the server stops at once).
    """
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    async def drain_then_hand_over() -> None:
        try:
            await gate.drain(window)
        finally:
            if callable(previous):
                previous(signal.SIGTERM, None)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGTERM)

    def on_sigterm() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)
        task = loop.create_task(drain_then_hand_over(), name="readiness-drain")
        _DRAINS.add(task)  # a strong reference until it ends (the loop keeps only a weak one)
        task.add_done_callback(_DRAINS.discard)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
