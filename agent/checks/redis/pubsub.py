"""The pub/sub round trip: a message published on a private channel must arrive, in time, on a held subscriber.

Why: a WebSocket backend that fans out through Redis pub/sub is down when messages stop flowing, however well
``PING`` answers (a subscriber cut off by an output-buffer limit, channel rights revoked in the ACL, a proxy
that drops the push traffic). Each run ``PUBLISH``es a unique payload on the check's own connection and waits
for it on the subscriber. RESP2 allows no ``PUBLISH`` on a subscribed connection, hence a second connection,
opened through the same factory (address, TLS, credentials) and held between runs; it is opt-in because it
doubles what the check costs the server in connections, and it needs the channel in the ACL user's rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import agent.checks.redis.errors as rx
from agent.checks.redis.canary import Cadence, Failure, Pipeliner, ProbeTimeout, refused
from agent.checks.redis.protocol import (
    DEFAULT_LIMITS,
    ByteBudget,
    Limits,
    ReplyParser,
    encode,
    read_replies,
)
from agent.checks.redis.replies import classify
from agent.core.model import Reason

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
CHANNEL_PREFIX = "readiness-agent:pubsub"
CLOSE_WAIT = 0.5  # bound on waiting for a closed connection to finish closing


class Subscriber:
    """One connection in ``SUBSCRIBE`` on one channel; remembers the payloads it is waiting for.

    Its reader parses every reply with the bounded RESP2 parser (protocol.py); the first replies answer
    the handshake (AUTH, SELECT, CLIENT SETNAME) and ``SUBSCRIBE``, everything after is a pushed message.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: str,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self._reader, self._writer = reader, writer
        self.channel = channel.encode()
        self._parser = ReplyParser(limits)
        self._budget = ByteBudget(limits.bytes_per_second)
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self._waiting: dict[bytes, asyncio.Future[None]] = {}
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._subscribed = False
        self._task = asyncio.create_task(self._read_loop(), name="redis-subscriber")

    @property
    def is_open(self) -> bool:
        return not self.lost.done()

    async def subscribe(self, handshake: list[tuple[str, ...]]) -> Failure | None:
        """Send the handshake and ``SUBSCRIBE``; the failure their replies show, or None once subscribed."""
        self._writer.write(b"".join(encode(*c) for c in [*handshake, ("SUBSCRIBE", self.channel.decode())]))
        await self._writer.drain()
        for command in handshake:
            reply = await self._next()
            if isinstance(reply, rx.ResponseError) and command[0] != "CLIENT":
                return refused(f"pub/sub {command[0]}", reply)
        reply = await self._next()
        if isinstance(reply, rx.ResponseError):
            return refused("pub/sub SUBSCRIBE", reply)
        if not (isinstance(reply, list) and reply[:2] == [b"subscribe", self.channel]):
            return Reason.PROTOCOL, "pub/sub: SUBSCRIBE was not confirmed"
        self._subscribed = True
        return None

    async def _next(self) -> Any:
        getter = asyncio.ensure_future(self._replies.get())
        done, _ = await asyncio.wait({getter, self.lost}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            raise self.lost.result() or ConnectionError("subscriber connection closed")
        return getter.result()

    def expect(self, payload: bytes) -> asyncio.Future[None]:
        """A future resolved when ``payload`` arrives on the channel."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[payload] = future
        return future

    def forget(self, payload: bytes) -> None:
        self._waiting.pop(payload, None)

    async def _read_loop(self) -> None:
        await read_replies(self._reader, self._parser, self._budget, self._deliver, self._end,
                           lambda text: ConnectionError(f"subscriber {text}"))

    def _deliver(self, reply: Any) -> None:
        if not self._subscribed:
            self._replies.put_nowait(reply)
            return
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message" and reply[1] == self.channel:
            future = self._waiting.pop(reply[2], None)
            if future is not None and not future.done():
                future.set_result(None)
        # Anything else (a stale payload, a PING's pong) is not for us.

    def _end(self, error: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(error)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error or ConnectionError("subscriber connection closed"))
                future.exception()  # retrieved: a payload nobody waits for any more must not log
        self._waiting.clear()
        self._writer.close()

    async def aclose(self) -> None:
        """Close it and wait for the reader task and the close itself (a TLS close takes a few loop passes)."""
        self._end(None)
        self._task.cancel()
        # asyncio.wait, not ``await task`` under suppress(CancelledError): that would swallow our caller's own
        # cancellation when it lands here, and a stopped check would run on.
        await asyncio.wait([self._task])
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT):
                await self._writer.wait_closed()


class PubSubRoundTrip:
    """Publish a unique payload on the check's connection; it must arrive on the held subscriber in time.

    ``open_connection`` returns a new (TLS) stream to the same server; ``handshake`` the commands that
    authenticate it (the same as the check's, so a rotated password or IAM token is used).
    """

    def __init__(self, channel: str, open_connection: Opener, handshake: Callable[[], list[tuple[str, ...]]],
                 interval: float, clock: Callable[[], float] = time.monotonic, limits: Limits = DEFAULT_LIMITS) -> None:
        self.channel = channel
        self.open_connection = open_connection
        self.handshake = handshake
        self.cadence = Cadence(interval, clock)
        self.limits = limits
        self.subscriber: Subscriber | None = None
        self._serial = itertools.count(1)
        self._token = os.urandom(6).hex()

    @property
    def due(self) -> bool:
        return self.cadence.due()

    async def run(self, publisher: Pipeliner, timeout: float) -> Failure | None:
        """One round trip within ``timeout``; raises :class:`ProbeTimeout` when the publisher's reply is owed."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            failure = await self._round_trip(publisher, deadline)
        except ProbeTimeout:
            self.cadence.record(False)
            await self.drop()
            raise
        except (OSError, rx.RedisError) as exc:
            await self.drop()
            reason, detail = classify(exc)
            failure = reason, f"pub/sub: {detail}"
        if failure is not None:
            await self.drop()
        self.cadence.record(failure is None)
        return failure

    async def _round_trip(self, publisher: Pipeliner, deadline: float) -> Failure | None:
        try:
            async with asyncio.timeout_at(deadline):
                failure = await self._ensure_subscribed()
        except TimeoutError:
            return Reason.TIMEOUT, "pub/sub: the subscriber connection did not subscribe in time"
        if failure is not None:
            return failure
        assert self.subscriber is not None
        payload = f"{self._token}:{next(self._serial)}".encode()
        arrived = self.subscriber.expect(payload)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    (receivers,) = await publisher.pipeline(("PUBLISH", self.channel, payload.decode()))
            except TimeoutError:
                raise ProbeTimeout("pub/sub: PUBLISH not answered in time") from None
            if isinstance(receivers, rx.ResponseError):
                return refused("pub/sub PUBLISH", receivers)
            if receivers == 0:
                return Reason.ERROR, "pub/sub: PUBLISH reached no subscriber (the subscription is gone)"
            try:
                async with asyncio.timeout_at(deadline):
                    await arrived
            except TimeoutError:
                return Reason.TIMEOUT, "pub/sub: the published message did not arrive within the timeout"
        finally:
            self.subscriber.forget(payload)
        return None

    async def _ensure_subscribed(self) -> Failure | None:
        if self.subscriber is not None and self.subscriber.is_open:
            return None
        await self.drop()
        reader, writer = await self.open_connection()
        self.subscriber = Subscriber(reader, writer, self.channel, self.limits)
        return await self.subscriber.subscribe(self.handshake())

    async def drop(self) -> None:
        """Close the subscriber connection (reopened by the next run)."""
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            await subscriber.aclose()

    async def close(self) -> None:
        await self.drop()
