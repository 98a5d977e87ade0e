"""The Redis check: "connected" is not enough, Redis must be *usable*.

One check is ``PING`` (must answer exactly ``PONG``: ``-LOADING``, ``-BUSY``, ``-MASTERDOWN``, ``-MISCONF``,
``-NOAUTH`` all fail it), then ``INFO persistence replication`` (``loading``, ``async_loading``, ``role``,
``master_link_status``), then, if configured, ``EXISTS`` on a maintenance key. Design choices, each from a
real failure mode (design.md, "Redis facts"):

* no client retries (redis-py's default retries hid ``-LOADING`` for seconds) and every check is bounded by
  ``asyncio.timeout``;
* the probe connection is reused while healthy (2 commands per check) and *discarded* after any error,
  timeout or cancellation, because a cancelled read can leave it off by one reply (redis-py #2624);
* a separate monitor connection sits in ``SUBSCRIBE`` (pub/sub clients are exempt from Redis' idle
  ``timeout``) and reports its loss at once, so a killed Redis is seen in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agent.checks import CheckResult, Reason
from agent.config import CheckConfig

MONITOR_CHANNEL = "readiness-agent:monitor"

# Error-reply prefixes redis-py leaves as a plain ResponseError (or maps to a too-generic class).
_PREFIXES: tuple[tuple[str, Reason], ...] = (
    ("LOADING", Reason.LOADING),
    ("BUSY", Reason.BUSY),
    ("MASTERDOWN", Reason.MASTER_LINK_DOWN),
    ("MISCONF", Reason.READONLY),  # persistence failing: the server refuses writes (and PING)
    ("READONLY", Reason.READONLY),
    ("OOM", Reason.OOM),
    ("CLUSTERDOWN", Reason.CLUSTER_DOWN),
    ("TRYAGAIN", Reason.CLUSTER_DOWN),
    ("NOAUTH", Reason.AUTH),
    ("WRONGPASS", Reason.AUTH),
    ("NOPERM", Reason.AUTH),
    ("DENIED", Reason.AUTH),
    ("ERR max number of clients", Reason.REFUSED),
    ("ERR AUTH", Reason.AUTH),
    ("ERR invalid password", Reason.AUTH),
    ("ERR Client sent AUTH", Reason.AUTH),
    ("invalid username-password", Reason.AUTH),
    ("Authentication required", Reason.AUTH),
)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost OS-level error behind a redis-py wrapper, if any."""
    seen = exc
    for _ in range(5):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return seen


def classify(exc: BaseException) -> tuple[Reason, str]:
    """Map an exception from a check to a reason and a short, secret-free detail."""
    if isinstance(exc, TimeoutError | rx.TimeoutError | socket.timeout):
        return Reason.TIMEOUT, "no answer within the check timeout"
    if isinstance(exc, rx.BusyLoadingError):
        return Reason.LOADING, "Redis is loading its dataset"
    if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError | rx.NoPermissionError):
        return Reason.AUTH, "authentication failed"
    # redis-py strips the error prefix from the messages of the classes it maps; map those by class.
    if isinstance(exc, rx.MasterDownError):
        return Reason.MASTER_LINK_DOWN, "MASTERDOWN: the replica's master link is down"
    if isinstance(exc, rx.ClusterDownError | rx.TryAgainError):
        return Reason.CLUSTER_DOWN, "the cluster is down or migrating"
    if isinstance(exc, rx.ReadOnlyError):
        return Reason.READONLY, "READONLY: a read-only replica"
    if isinstance(exc, rx.OutOfMemoryError):
        return Reason.OOM, "OOM: maxmemory reached"
    text = str(exc).strip()
    if isinstance(exc, rx.ResponseError) or (isinstance(exc, rx.ConnectionError) and text[:1].isupper()):
        for prefix, reason in _PREFIXES:
            if text.startswith(prefix):
                return reason, text.splitlines()[0][:120]
    if isinstance(exc, rx.ResponseError):
        return Reason.ERROR, text.splitlines()[0][:120] if text else "error reply"
    root = _root_cause(exc)
    if isinstance(root, ssl.SSLError):
        return Reason.TLS, f"TLS error: {root.reason or type(root).__name__}"
    if isinstance(root, socket.gaierror):
        return Reason.DNS, "host name does not resolve"
    if isinstance(root, TimeoutError | socket.timeout):
        return Reason.TIMEOUT, "no answer within the check timeout"
    if isinstance(root, ConnectionRefusedError):
        return Reason.REFUSED, "connection refused"
    if isinstance(root, ConnectionResetError | BrokenPipeError):
        return Reason.REFUSED, "connection reset"
    if isinstance(exc, rx.InvalidResponse):
        return Reason.PROTOCOL, "not a Redis protocol reply"
    lowered = text.lower()
    if "ssl" in lowered or "certificate" in lowered:
        return Reason.TLS, "TLS handshake failed"
    if "closed" in lowered:
        return Reason.REFUSED, "connection closed by the server"
    if isinstance(exc, OSError | rx.ConnectionError):
        return Reason.REFUSED, "connection failed"
    return Reason.ERROR, type(exc).__name__


def parse_info(raw: Any) -> dict[str, str]:
    """``INFO`` text into a flat ``field → value`` mapping (sections and comments dropped)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def judge_info(info: dict[str, str], require_master: bool) -> tuple[Reason, str] | None:
    """Failure implied by INFO fields, or None when they say "usable"."""
    if info.get("loading") == "1":
        return Reason.LOADING, "INFO says loading:1"
    if info.get("async_loading") == "1":
        return Reason.LOADING, "INFO says async_loading:1"
    role = info.get("role")
    if role == "slave":
        if require_master:
            return Reason.READONLY, "a replica, and this check requires the master"
        if info.get("master_link_status") != "up":
            return Reason.MASTER_LINK_DOWN, "replica's master link is down"
    if info.get("cluster_state") not in (None, "ok"):
        return Reason.CLUSTER_DOWN, f"cluster_state:{info.get('cluster_state')}"
    return None


class PasswordFile:
    """A password mounted as a file; re-read whenever its modification time or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._value: str | None = None

    def stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def read(self) -> str | None:
        stamp = self.stamp()
        if stamp != self._stamp or self._value is None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    self._value = handle.read().rstrip("\r\n")
            except OSError:
                self._value = None
            self._stamp = stamp
        return self._value

    def changed(self) -> bool:
        return self.stamp() != self._stamp


class RedisCheck:
    """Checks one Redis. ``run`` never raises and returns within ``timeout`` (plus scheduling noise)."""

    kind = "redis"

    def __init__(
        self,
        config: CheckConfig,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        monitor: bool = True,
    ) -> None:
        assert config.redis is not None
        self.name = config.name
        self.required = config.required
        self.config = config
        self.target = config.redis
        self.timeout = timeout
        self.clock = clock
        self.monitor_enabled = monitor
        self._password_file = PasswordFile(config.password_file) if config.password_file else None
        self._conn: AbstractConnection | None = None
        self._info_sections: tuple[str, ...] = ("persistence", "replication")
        self._monitor_writer: asyncio.StreamWriter | None = None

    # ------------------------------------------------------------------------------------------ connections

    def _password(self) -> str | None:
        if self._password_file is not None:
            return self._password_file.read()
        return self.target.password

    def _new_connection(self, socket_timeout: float | None) -> AbstractConnection:
        kwargs: dict[str, Any] = {
            "host": self.target.host,
            "port": self.target.port,
            "db": self.target.db,
            "username": self.target.username,
            "password": self._password(),
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),
            "driver_info": None,
            "socket_keepalive": True,
        }
        if self.target.tls:
            return SSLConnection(
                ssl_ca_certs=self.config.ca_file,
                ssl_certfile=self.config.cert_file,
                ssl_keyfile=self.config.key_file,
                **kwargs,
            )
        return Connection(**kwargs)

    @staticmethod
    async def _discard(conn: AbstractConnection | None) -> None:
        if conn is None:
            return
        # Closing a broken connection must never fail the check.
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)

    async def _command(self, conn: AbstractConnection, *args: str) -> Any:
        await conn.send_command(*args)
        return await conn.read_response()

    # ------------------------------------------------------------------------------------------ the check

    async def run(self) -> CheckResult:
        """PING, INFO, optional maintenance key; bounded by ``timeout``; the connection is dropped on error."""
        started = self.clock()
        if self._conn is not None and self._password_file is not None and self._password_file.changed():
            await self._discard(self._conn)
            self._conn = None
        conn = self._conn
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = self._new_connection(socket_timeout=self.timeout)
                    self._conn = conn
                    await conn.connect()  # type: ignore[no-untyped-call]
                failure = await self._probe(conn)
        except asyncio.CancelledError:
            await self._discard(conn)
            self._conn = None
            raise
        except Exception as exc:
            await self._discard(conn)
            self._conn = None
            reason, detail = classify(exc)
            return CheckResult(False, self.clock() - started, reason, detail)
        if failure is not None:
            return CheckResult(False, self.clock() - started, failure[0], failure[1])
        return CheckResult(True, self.clock() - started)

    async def _probe(self, conn: AbstractConnection) -> tuple[Reason, str] | None:
        reply = await self._command(conn, "PING")
        if reply not in (b"PONG", "PONG"):
            return Reason.PROTOCOL, "PING did not answer PONG"
        try:
            raw = await self._command(conn, "INFO", *self._info_sections)
        except rx.ResponseError:
            if len(self._info_sections) < 2:
                raise
            # Redis < 7 takes one INFO section at a time: fall back to the default sections.
            self._info_sections = ()
            raw = await self._command(conn, "INFO")
        failure = judge_info(parse_info(raw), self.config.require_master)
        key = self.config.maintenance_key
        if failure is None and key and await self._command(conn, "EXISTS", key):
            return Reason.MAINTENANCE, "the maintenance key exists"
        return failure

    # ------------------------------------------------------------------------------------------ the monitor

    async def wait_lost(self) -> None:
        """Hold a SUBSCRIBE connection open; return when it is lost (EOF, RST).

        Raises :class:`MonitorUnavailable` when it cannot be opened, so the caller decides when to try again
        (after the next successful check). Plain asyncio streams and RESP, not redis-py: the connection only
        has to authenticate, subscribe, and then notice that the server went away.
        """
        if not self.monitor_enabled:
            await asyncio.Event().wait()
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection(
                        self.target.host, self.target.port, ssl=self._ssl_context() if self.target.tls else None
                    )
                    password = self._password()
                    if password is not None:
                        auth = [self.target.username, password] if self.target.username else [password]
                        writer.write(_resp("AUTH", *auth))
                        line = await reader.readline()
                        if not line.startswith(b"+"):
                            raise rx.AuthenticationError("monitor AUTH refused")
                    writer.write(_resp("SUBSCRIBE", MONITOR_CHANNEL))
                    await writer.drain()
                    first = await reader.read(1024)
                    if not first.startswith(b"*"):
                        raise rx.ResponseError(first.decode("utf-8", "replace").strip()[1:] or "EOF")
            except Exception as exc:
                raise MonitorUnavailable(classify(exc)[0]) from None
            self._monitor_writer = writer
            _keepalive(writer)
            try:
                while await reader.read(4096):
                    pass  # nothing is ever published; any bytes are ignored, EOF ends the wait
            except (OSError, asyncio.IncompleteReadError):
                pass
        finally:
            if writer is not None:
                writer.close()
            self._monitor_writer = None

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.config.ca_file)
        if self.config.cert_file:
            context.load_cert_chain(self.config.cert_file, self.config.key_file)
        return context

    async def close(self) -> None:
        """Close both connections."""
        await self._discard(self._conn)
        self._conn = None
        if self._monitor_writer is not None:
            self._monitor_writer.close()
            self._monitor_writer = None


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive on the monitor socket, so a path that died without a RST is noticed even between checks."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _resp(*parts: str) -> bytes:
    """One command in RESP (array of bulk strings)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class MonitorUnavailable(Exception):
    """The monitor connection could not be opened; ``reason`` says why."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason
