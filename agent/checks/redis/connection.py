"""The one connection factory for a Redis, and the connection itself: one per check, held between checks.

Why one held connection: a read kept pending on it sees a kill (EOF or RST) within a millisecond, so no
second "monitor" connection is needed (it doubled what a fleet costs its Redis, and its ``SUBSCRIBE`` needs a
channel permission many ACL users lack). Every byte from the server is read by one task per connection,
which hands replies to the commands waiting for them in order (so a pipeline is one write and one round
trip) and notices the end of the connection at once, whether or not a command is in flight.

The connection speaks RESP2 (no ``HELLO``; protocol.py), authenticates with ``AUTH [user] password``
and selects the database, pipelined with the check's first commands. Every read is bounded (a reply, and the
bytes per second shared by all connections to the server). The same SSL context (agent/config/tls.py: rebuilt when
the CA, certificate or key file changes; the name verified is ``tls_server_name`` or the host) and the same
credentials (a mounted password file is re-read when it changes; with IAM, the current access token from
agent/checks/redis/iam.py) serve every connection, so a TLS or auth fix is made in one place.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from typing import Any

import agent.checks.redis.errors as rx
from agent.checks.dns import lookup_budget, open_stream
from agent.checks.redis.config import RedisCheckConfig
from agent.checks.redis.iam import TokenProvider
from agent.checks.redis.protocol import (
    DEFAULT_LIMITS,
    READ_CHUNK,
    ByteBudget,
    Limits,
    ReplyParser,
    encode,
    read_replies,
)
from agent.checks.redis.replies import AtPeer, at_peer, classify
from agent.config.secretfile import SecretFile
from agent.config.urls import RedisTarget
from agent.config.values import host_port
from agent.core.model import Reason

CLIENT_NAME = "readiness-agent"
# Error replies Redis sends to a new connection just before closing it (maxclients reached, protected mode):
# the commands pipelined behind them fail with that reply, not with "connection closed by the server".
FAREWELLS = ("ERR max number of clients", "DENIED")
# TCP keepalive on every connection: a path that died without a RST (a partition that never heals) is noticed
# between checks too, after KEEPIDLE + KEEPINTVL × KEEPCNT = 25 s of silence.
KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


class ConnectionLost(rx.ConnectionFailure, AtPeer):
    """The server (at ``peer``, when known) closed or reset the connection."""

    def __init__(self, text: str, peer: str | None = None) -> None:
        super().__init__(text)
        self.peer = peer


class RespConnection:
    """One connection: ``pipeline`` sends commands and awaits their replies; ``lost`` resolves at its end.

    ``lost`` holds the exception that ended it from the server's side (EOF, RST, a protocol error, a reply
    past a limit); it resolves to ``None`` when we closed it ourselves.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits,
                 budget: ByteBudget, peer: str | None = None) -> None:
        self._reader, self._writer = reader, writer
        self.peer = peer  # host:port, named in the detail when the server ends it
        self._parser = ReplyParser(limits)
        self._budget = budget
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read_loop(), name="redis-reader")
        self.used = False  # a check has completed on it (issue 17: a reused connection that fails is retried)
        self.answered = False  # a reply has arrived (a fresh connection ended before one: nothing usable listens)
        self._farewell: rx.ResponseError | None = None  # an error reply the server closes the connection after

    @property
    def is_open(self) -> bool:
        return not self.lost.done()

    async def pipeline(self, *commands: tuple[str, ...]) -> list[Any]:
        """Send every command in one write; return their replies in order (error replies as values)."""
        if self.lost.done():
            raise self.lost.result() or ConnectionLost("connection closed", self.peer)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._waiting.extend(futures)
        self._writer.write(b"".join(encode(*c) for c in commands))
        await self._writer.drain()
        return list(await asyncio.gather(*futures))  # gather retrieves every exception, not just the first

    def _deliver(self, reply: Any) -> None:
        if not self._waiting:
            # Nothing asked: Redis only does this to say why it closes (``-ERR max number of clients
            # reached``), anything else is not Redis.
            if isinstance(reply, rx.ResponseError):
                raise reply
            raise rx.InvalidResponse("an unrequested reply")
        self.answered = True
        if isinstance(reply, rx.ResponseError) and str(reply).startswith(FAREWELLS):
            self._farewell = reply
        waiter = self._waiting.popleft()
        if not waiter.done():
            waiter.set_result(reply)

    async def _read_loop(self) -> None:
        await read_replies(self._reader, self._parser, self._budget, self._deliver, self._end,
                           lambda text: ConnectionLost(text, self.peer))

    def _end(self, error: BaseException | None) -> None:
        if isinstance(error, ConnectionLost) and self._farewell is not None:
            error = self._farewell  # why the server closed it: every command still waiting fails with that
        if not self.lost.done():
            self.lost.set_result(error)
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(error or ConnectionLost("connection closed", self.peer))
                waiter.exception()  # retrieved: a command abandoned mid-write must not log "never retrieved"
        self._waiting.clear()
        self._writer.close()

    def close(self) -> None:
        """Close it from our side (``lost`` resolves to None); idempotent, never raises."""
        self._end(None)
        self._task.cancel()

    async def aclose(self) -> None:
        """Close it and wait for its reader task to end."""
        self.close()
        # asyncio.wait, not ``await task``: a CancelledError here must be our caller's own cancellation,
        # never swallowed (suppressing it made a cancelled check loop run on for good).
        await asyncio.wait([self._task])
        with contextlib.suppress(OSError, TimeoutError):  # a TLS close takes a few loop passes
            async with asyncio.timeout(0.5):
                await self._writer.wait_closed()


class RedisEndpoint:
    """Where and how to reach one Redis: opens every connection the check holds."""

    def __init__(self, config: RedisCheckConfig, timeout: float, limits: Limits = DEFAULT_LIMITS) -> None:
        assert config.redis is not None
        self.config = config
        self.target: RedisTarget = config.redis
        self.address: tuple[str, int] = (self.target.host, self.target.port)  # Sentinel sets it per connection
        self.timeout = timeout
        self.limits = limits
        self.budget = ByteBudget(limits.bytes_per_second)
        self.password_file = SecretFile(config.password_file) if config.password_file else None
        self.tls = config.tls()  # re-reads its files when they change (a rotated CA bundle)
        self.iam = TokenProvider() if config.auth == "iam" else None
        self._token: str | None = None

    def password(self) -> str | None:
        if self.iam is not None:
            return self._token
        if self.password_file is not None:
            return self.password_file.read()
        return self.target.password

    def credentials_changed(self) -> bool:
        """True when a mounted password file changed since it was last read (a new IAM token is not a change:
        it is needed only for new connections, and a held connection outlives its token)."""
        return self.password_file is not None and self.password_file.changed()

    def keep_fresh(self) -> None:
        """IAM: renew the token in the background when due, so one is at hand for the next new connection."""
        if self.iam is not None:
            self.iam.poke()

    async def prepare(self, wait: float) -> None:
        """Before a new connection: the current IAM token (``IamError`` when there is none within ``wait``)."""
        if self.iam is not None:
            self._token = await self.iam.token(wait)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The SSL context for ``rediss://`` (None for ``redis://``); ``TlsFileError`` when a file went away."""
        return self.tls.context() if self.tls is not None else None

    async def open_streams(self, deadline: float | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new TCP (or TLS) stream with keepalive, verified against ``tls_server_name`` when set.

        The host name is looked up in a thread of its own (checks/dns.py), within what is left before
        ``deadline`` (loop time; default: the timeout from now), so a silent resolver fails as ``dns``.
        """
        context = self.ssl_context()
        hostname = self.tls.server_hostname(self.target.host) if self.tls is not None else None
        remaining = (deadline - asyncio.get_running_loop().time()) if deadline is not None else self.timeout
        try:
            reader, writer = await open_stream(*self.address, lookup_budget(remaining), tls=context,
                                               server_hostname=hostname, limit=READ_CHUNK)
        except OSError as exc:  # refused, reset, unreachable: the detail names where (TLS, DNS keep their words)
            located = at_peer(exc, self.peer())
            if located is None:
                raise
            raise located from exc
        _keepalive(writer)
        return reader, writer

    def peer(self) -> str:
        """``host:port`` of the server connections go to now (Sentinel moves it): named in failure details."""
        return host_port(*self.address)

    async def connect(self, deadline: float | None = None) -> RespConnection:
        """A new connection; the caller bounds it in time, calls ``prepare`` first and sends ``handshake``."""
        reader, writer = await self.open_streams(deadline)
        return RespConnection(reader, writer, self.limits, self.budget, self.peer())

    async def prove_fresh(self, deadline: float) -> tuple[Reason, str] | None:
        """A new client's view: open a new connection (TLS, AUTH, SELECT, PING), close it, and say what it met.

        The held connection outlives what only a new client meets: a password set or changed on the server
        (``-NOAUTH``, ``-WRONGPASS``), ``maxclients`` reached. Ends by ``deadline`` (loop time); the failure's
        detail starts ``a new connection:``. The held connection is kept either way (closing it first would
        free a slot, and hide a full server from the new one).
        """
        conn: RespConnection | None = None
        try:
            async with asyncio.timeout_at(deadline):
                await self.prepare(max(0.0, deadline - asyncio.get_running_loop().time()))
                conn = await self.connect(deadline)
                commands = [*self.handshake(), ("PING",)]
                replies = await conn.pipeline(*commands)
            for command, reply in zip(commands, replies, strict=True):
                if isinstance(reply, rx.ResponseError) and command[0] != "CLIENT":
                    raise reply
            if replies[-1] != b"PONG":
                return Reason.PROTOCOL, "a new connection: PING did not answer PONG"
        except TimeoutError:
            return Reason.TIMEOUT, "a new connection: no answer within the check timeout"
        except Exception as exc:  # not the check's own cancellation (not an Exception): that goes on up
            reason, detail = classify(exc)
            if conn is None and self.tls is not None and isinstance(exc, ConnectionResetError):
                detail = "reset during the TLS handshake (a TLS Redis at maxclients does so, without a word)"
            return reason, f"a new connection: {detail}"
        finally:
            if conn is not None:
                conn.close()  # not waited for: a TLS close must not take the check past its deadline
        return None

    async def close(self) -> None:
        """Stop refreshing IAM tokens."""
        if self.iam is not None:
            await self.iam.close()

    def handshake(self) -> list[tuple[str, ...]]:
        """The commands that open a session: AUTH (if a password is set), SELECT (if not db 0), CLIENT SETNAME.

        Their replies are judged by the check: AUTH and SELECT must answer OK; CLIENT SETNAME is only a label
        in ``CLIENT LIST`` and may be refused.
        """
        commands: list[tuple[str, ...]] = []
        password = self.password()
        if password is not None:
            user = self.target.username
            commands.append(("AUTH", user, password) if user else ("AUTH", password))
        if self.target.db:
            commands.append(("SELECT", str(self.target.db)))
        commands.append(("CLIENT", "SETNAME", CLIENT_NAME))
        return commands


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive, so a path that died without a RST is noticed even between checks."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE:
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
