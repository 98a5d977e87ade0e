"""Limits that keep the HTTP surface alive on a hostile pod network.

Port 9180 listens on ``0.0.0.0``: anything that can reach the pod can open connections to it. Without limits a
thousand half-sent requests were held for 85 s each, 12,000 of them took the sidecar towards its memory limit,
and under a 1,024 open-file limit asyncio's accept loop logged a traceback for every failed ``accept()``
(157 MB of stderr in a minute) while the kubelet's probes timed out. So:

- the soft ``RLIMIT_NOFILE`` is raised to the hard limit at start (:func:`raise_nofile_limit`);
- at most :func:`connection_cap` connections are open at once, below the file limit: when a new one arrives at
  the cap, the *oldest* is closed (:class:`ConnectionLimiter`), so a flood of idle connections cannot lock the
  kubelet's probe out;
- a connection that has not delivered a complete request within ``IDLE_TIMEOUT`` of opening, or of its last
  response, is closed (aiohttp's keep-alive timer, which runs from the moment a connection opens);
- errors that a client can provoke (malformed requests, failed accepts) are logged as one line each, at most
  one line per ``LOG_PERIOD`` per kind, with a count of what was left out (:class:`RateLimitedLog`), never a
  traceback.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from agent.logs.labels import labels

IDLE_TIMEOUT = 10.0  # seconds to send a complete request after connecting or after the last response
SHUTDOWN_TIMEOUT = 0.25  # after the drain, in-flight handlers get this long before their connections close
MAX_CONNECTIONS = 1000  # ~6 KiB each: 1,000 idle connections cost ~6 MiB of the sidecar's 128 MiB
RESERVED_FDS = 64  # files the agent needs besides client connections (Redis, logs, the listening socket)
# asyncio accepts up to ``backlog`` connections per loop iteration, builds each one's transport in the next
# iteration, calls connection_made (where the cap evicts the oldest) in the one after, and the evicted socket
# is closed one iteration later still: so while a burst lasts, three batches accepted since the first eviction
# hold files above the cap. Three batches must stay free, or a burst hits EMFILE (and asyncio stops accepting
# for a second, probes included); two were not enough under a 256-file limit.
BACKLOG = 64
LOG_PERIOD = 10.0  # at most one line per kind of client-provoked error in this many seconds

log = logging.getLogger("readiness_agent")


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard limit; the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(nofile: int) -> int:
    """Concurrent connections allowed under an open-file limit of ``nofile``: below it, at most 1,000."""
    return max(8, min(MAX_CONNECTIONS, nofile - RESERVED_FDS - 3 * BACKLOG))


class RateLimitedLog:
    """One log line per kind at most every ``period`` seconds; the next line says how many were left out."""

    def __init__(self, period: float = LOG_PERIOD, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> bool:
        """Log ``message`` (one line) unless ``kind`` was logged within the period; True when logged."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return False
        self._last[kind] = now
        dropped = self._dropped.pop(kind, 0)
        more = f" ({dropped} more since the last such line)" if dropped else ""
        log.warning("%s%s", " ".join(message.split()), more, extra=labels(event=kind))
        return True


class ClientErrorHandler(logging.Handler):
    """Turns aiohttp's per-request error records (with tracebacks) into one rate-limited line each.

    Only the exception's class is kept: its text can quote what the client sent (a request line, a header),
    which may hold a token.
    """

    def __init__(self, limiter: RateLimitedLog) -> None:
        super().__init__(logging.DEBUG)
        self.limiter = limiter

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        kind = type(exc).__name__ if exc is not None else "error"
        if record.levelno < logging.WARNING and exc is None:
            return
        if not str(record.msg).startswith("Error handling request"):
            # Not the client's doing: a handler of ours failed. Its message is ours, so it is kept (one line).
            detail = " ".join(str(exc).split())[:200] if exc is not None else record.getMessage()
            self.limiter.warning("handler_error", f"HTTP: a handler failed ({kind}: {detail})")
            return
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "a client"
        self.limiter.warning("bad_request", f"HTTP: rejected a request from {remote} ({kind})")


def install_client_error_logging(limiter: RateLimitedLog) -> None:
    """Route aiohttp's server-side error log through ``limiter`` (no tracebacks, one line per kind and period)."""
    server_log = logging.getLogger("aiohttp.server")
    for old in list(server_log.handlers):
        if isinstance(old, ClientErrorHandler):
            server_log.removeHandler(old)
    server_log.addHandler(ClientErrorHandler(limiter))
    server_log.propagate = False
    server_log.setLevel(logging.INFO)  # BadHttpMethod (TLS or junk on the port) is logged at DEBUG: not news


def loop_exception_handler(limiter: RateLimitedLog) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler: one line per kind and period instead of a traceback per event
    (asyncio reports every failed ``accept()`` under a full file table this way)."""

    def handle(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message") or "event loop error")
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        kind = "accept_error" if "accept" in message else "loop_error"
        limiter.warning(kind, f"{message} {detail}".strip()[:300])

    return handle


class _Tracked(asyncio.Protocol):
    """Delegates to aiohttp's protocol and tells the limiter when the connection opens and closes."""

    def __init__(self, limiter: ConnectionLimiter, inner: asyncio.Protocol) -> None:
        self.limiter = limiter
        self.inner = inner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)
        self.limiter.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limiter.closed(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionLimiter:
    """A protocol factory around aiohttp's that keeps at most ``cap`` connections open, closing the oldest."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], cap: int, limiter: RateLimitedLog) -> None:
        self.factory = factory
        self.cap = cap
        self.log = limiter
        self.open: dict[_Tracked, None] = {}  # insertion order: oldest first
        self.evicted = 0

    def __call__(self) -> asyncio.Protocol:
        return _Tracked(self, self.factory())

    def opened(self, conn: _Tracked) -> None:
        self.open[conn] = None
        while len(self.open) > self.cap:
            oldest = next(iter(self.open))
            del self.open[oldest]
            self.evicted += 1
            if oldest.transport is not None:
                oldest.transport.abort()
            self.log.warning("connection_limit", f"HTTP: {self.cap} connections open (the cap): closed the "
                                                 "oldest to admit a new one")

    def closed(self, conn: _Tracked) -> None:
        self.open.pop(conn, None)
