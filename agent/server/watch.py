"""The push channel for the app in the same pod: the verdict as Server-Sent Events on ``GET /watch``.

Why: the platform can only stop *routing* to a pod; an app that accepts a WebSocket while Redis is broken
closes it with 1011 moments later. Told the verdict the instant it changes, the app can refuse the upgrade
(503) instead. Polling ``/readyz`` would add up to a period of blindness; this pushes each change.

The surface is hostile like the probes' (docs/design.md, "The watch protocol"), and kept apart from them:

* its own listener, on ``127.0.0.1`` and ``::1`` only (``--watch-port``; 0 turns it off): the app reaches it
  on localhost, nothing outside the pod can, and its connections never count against the probes' cap;
* at most ``MAX_WATCHERS`` streams; a new watcher past the cap is *refused* (503), never an old one evicted
  (an evicted fail-closed app would refuse every WebSocket);
* each watcher holds one pending event at most: a slow reader gets the latest verdict, coalesced, and a reader
  that takes no bytes for ``WRITE_TIMEOUT`` is closed; publishing is O(watchers) and never waits;
* at the end of the drain every stream gets a ``bye`` event and is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from agent.core.model import CheckResult
from agent.core.snapshot import AgentSnapshot
from agent.core.store import Change
from agent.logs.labels import labels
from agent.server.limits import (
    BACKLOG,
    IDLE_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    ConnectionLimiter,
    RateLimitedLog,
    _Tracked,
    install_client_error_logging,
)

WATCH_PATH = "/watch"
LOCAL_HOSTS = ("127.0.0.1", "::1")
MAX_WATCHERS = 32  # an app has a few processes, each one watcher; a full cap is a bug or an attack
MAX_CONNECTIONS = 64  # the listener's connection cap (watchers and requests alike): a new one beyond it is closed
HEARTBEAT = 5.0  # seconds between comment lines: a reader that hears nothing for 3 of them reconnects
WRITE_TIMEOUT = 10.0  # a watcher that accepts no bytes for this long is closed
RETRY_MS = 1000  # the SSE ``retry:`` field: how soon a client reconnects after losing the stream
REFUSED_RETRY_AFTER = "5"  # seconds, in the 503 to a watcher past the cap
log = logging.getLogger("readiness_agent")


def verdict_of(snapshot: AgentSnapshot) -> dict[str, object]:
    """The fields of a ``verdict`` event: what an app needs to decide whether to accept a WebSocket."""
    return {"ready": snapshot.ready, "state": str(snapshot.state),
            "reason": None if snapshot.ready else snapshot.why_not_ready(), "draining": snapshot.draining}


def encode(event: str, data: dict[str, object], seq: int | None = None) -> bytes:
    """One SSE event: ``id:`` (when given), ``event:``, one ``data:`` line of compact JSON, a blank line."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class _Watcher:
    """One stream: the next event to send (coalesced: only the latest is kept) and a wake-up."""

    pending: bytes | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: bytes) -> None:
        self.pending = event
        self.wake.set()


class WatchHub:
    """A store listener that fans the verdict out to at most ``cap`` SSE streams.

    Publishing replaces each watcher's pending event and wakes it; nothing here waits on a reader.
    """

    def __init__(self, snapshot: Callable[[], AgentSnapshot], cap: int = MAX_WATCHERS,
                 heartbeat: float = HEARTBEAT, write_timeout: float = WRITE_TIMEOUT) -> None:
        self.snapshot = snapshot
        self.cap = cap
        self.heartbeat = heartbeat
        self.write_timeout = write_timeout
        self.watchers: set[_Watcher] = set()
        self.refused = 0
        self.closing = False
        self._seq = 0
        self._last = verdict_of(snapshot())
        self._event = encode("verdict", self._last, self._seq)
        self._handlers: set[asyncio.Task[object]] = set()
        self._log = RateLimitedLog()

    # -------------------------------------------------------------------------- the store's listener protocol

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        self.publish(snapshot)  # the reason can change without a transition (refused → loading)

    def changed(self, change: Change) -> None:
        self.publish(change.snapshot)

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        self.publish(snapshot)

    def publish(self, snapshot: AgentSnapshot) -> None:
        """Send the verdict to every watcher if it differs from the last one sent."""
        current = verdict_of(snapshot)
        if current == self._last:
            return
        self._seq += 1
        self._last, self._event = current, encode("verdict", current, self._seq)
        for watcher in self.watchers:
            watcher.offer(self._event)

    # -------------------------------------------------------------------------- the streams

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /watch``: the current verdict at once, then each change and a heartbeat every few seconds."""
        if self.closing or len(self.watchers) >= self.cap:
            self.refused += 1
            why = "draining" if self.closing else f"{self.cap} watchers connected (the cap)"
            if not self.closing:
                self._log.warning("watch_cap", f"watch: refused a watcher: {why}")
            return web.Response(status=503, text=f"refused: {why}\n", headers={"Retry-After": REFUSED_RETRY_AFTER})
        watcher = _Watcher(pending=self._event)
        self.watchers.add(watcher)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                                   "X-Accel-Buffering": "no"})
            response.force_close()  # the stream is the connection's last response
            await response.prepare(request)
            await self._stream(response, watcher)
        except (ConnectionError, TimeoutError):
            pass  # the reader left, or took no bytes for write_timeout: its slot is free again
        finally:
            self.watchers.discard(watcher)
            if task is not None:
                self._handlers.discard(task)
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self.write_timeout):
            await response.write(data)

    async def _stream(self, response: web.StreamResponse, watcher: _Watcher) -> None:
        await self._write(response, f"retry: {RETRY_MS}\n".encode())
        while not self.closing:
            if watcher.pending is not None:
                event, watcher.pending = watcher.pending, None
                watcher.wake.clear()
                await self._write(response, event)
                continue
            try:
                async with asyncio.timeout(self.heartbeat):
                    await watcher.wake.wait()
            except TimeoutError:
                await self._write(response, b": heartbeat\n\n")
        await self._write(response, encode("bye", {"reason": "agent stopping"}))

    async def close(self, timeout: float = 1.0) -> None:
        """End every stream with ``bye`` (refusing new ones), waiting up to ``timeout`` for them to finish."""
        self.closing = True
        for watcher in self.watchers:
            watcher.wake.set()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=timeout)


class _NewestClosed(ConnectionLimiter):
    """At the cap the *new* connection is closed: unlike the probes' port, no open stream is ever evicted."""

    def opened(self, conn: _Tracked) -> None:
        if len(self.open) >= self.cap:
            self.evicted += 1
            if conn.transport is not None:
                conn.transport.abort()
            self.log.warning("watch_connection_limit", f"watch: {self.cap} connections open (the cap): closed a "
                                                       "new one")
            return
        super().opened(conn)


def make_watch_app(hub: WatchHub) -> web.Application:
    app = web.Application()
    app.router.add_get(WATCH_PATH, hub.handle)
    return app


@contextlib.asynccontextmanager
async def serve_watch(hub: WatchHub, port: int, hosts: tuple[str, ...] = LOCAL_HOSTS) -> AsyncIterator[list[str]]:
    """Serve ``/watch`` on ``port`` of each local address that exists (``::1`` may not); yields the addresses.

    Raises OSError when the first address cannot be bound, or another for any reason but its absence. Leaving
    the block sends ``bye`` to every watcher, then closes.
    """
    errors = RateLimitedLog()
    install_client_error_logging(errors)
    runner = web.AppRunner(make_watch_app(hub), access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_TIMEOUT, keepalive_timeout=IDLE_TIMEOUT,
                           lingering_time=0, handler_cancellation=True)
    await runner.setup()
    servers: list[asyncio.Server] = []
    bound: list[str] = []
    try:
        assert runner.server is not None  # set by setup()
        limiter = _NewestClosed(runner.server, MAX_CONNECTIONS, errors)
        loop = asyncio.get_running_loop()
        for host in hosts:
            try:
                servers.append(await loop.create_server(limiter, host, port, reuse_address=True, backlog=BACKLOG))
                bound.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            except OSError as exc:  # IPv4 loopback must work; a pod without IPv6 loopback only skips ``::1``
                if host == hosts[0] or exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    raise
        try:
            yield bound
        finally:
            await hub.close()
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


async def start_watch(stack: contextlib.AsyncExitStack, snapshot: Callable[[], AgentSnapshot], port: int,
                      subscribe: Callable[[WatchHub], None], required: bool) -> bool:
    """``run``'s part: serve ``/watch`` on ``port`` (nothing when 0) until ``stack`` closes.

    A port that cannot be bound is a one-line error: with ``required`` (the port was set) the caller exits 2;
    the default port taken by something else leaves ``/watch`` off and the agent running (the probes matter
    more than the push channel; an app's client then fails closed, which its own log says).
    """
    if port == 0:
        log.info("watch endpoint off (--watch-port 0)", extra=labels(event="watch_off"))
        return True
    hub = WatchHub(snapshot)
    try:
        bound = await stack.enter_async_context(serve_watch(hub, port))
    except OSError as exc:
        message = f"cannot listen on localhost port {port} for {WATCH_PATH} (--watch-port): {exc.strerror or exc}"
        if required:
            log.error("%s", message, extra=labels(event="watch_unavailable"))
            sys.stderr.write(f"readiness-agent: error: {message}\n")
            return False
        log.error("%s; %s is off (set --watch-port to a free port, or 0)", message, WATCH_PATH,
                  extra=labels(event="watch_unavailable"))
        return True
    subscribe(hub)
    hub.publish(snapshot())
    log.info("watch endpoint %s on %s (at most %d watchers)", WATCH_PATH, ", ".join(bound), hub.cap,
             extra=labels(event="watch_listening"))
    return True
