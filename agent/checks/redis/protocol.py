"""RESP2 with limits: encode commands, and parse replies without ever holding more than a bounded amount.

Why not redis-py's or hiredis' parser: neither bounds what a server may send. A server (or anything that
answers on its port) replying to ``INFO`` with 1 GB made the agent's RSS grow past 1 GB, and a stream of
bytes kept it parsing for ever. This parser is resumable (each byte is looked at once, however the reply is
split across reads) and fails with :class:`ReplyTooLarge` as soon as one reply exceeds ``Limits.reply_bytes``
or ``Limits.elements``, nests deeper than ``Limits.depth``, or a line runs past ``Limits.line_bytes``. The
per-second budget (``ByteBudget``) is shared by every connection to one Redis, so reconnecting does not
reset it.

The protocol is pinned to RESP2: the agent never sends ``HELLO``, so Redis 5, servers where ``HELLO`` is
renamed away, and proxies that only speak RESP2 all answer the same way. RESP3-only reply types are protocol
errors here.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import agent.checks.redis.errors as rx

MIB = 1024 * 1024
_INTEGER = re.compile(rb"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one reply, and one second of replies, may cost.

    A real ``INFO`` is a few KB and ``PING``/``ROLE`` a few bytes; ``reply_bytes`` leaves room for
    ``CLUSTER SHARDS`` of a thousand-shard cluster (under 1 MB) and Sentinel replies many times over.
    """

    reply_bytes: int = 8 * MIB
    elements: int = 250_000
    depth: int = 16
    line_bytes: int = 64 * 1024
    bytes_per_second: int = 16 * MIB


DEFAULT_LIMITS = Limits()


class ReplyTooLarge(rx.InvalidResponse):
    """A reply (or the replies of one second) went past a limit; the connection must be dropped."""


class ByteBudget:
    """Bytes read per one-second window, shared by every connection to one server."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.clock = clock
        self._window = clock()
        self._spent = 0

    def spend(self, size: int) -> None:
        """Count ``size`` bytes read; raise :class:`ReplyTooLarge` past the budget of the current second."""
        now = self.clock()
        if now - self._window >= 1.0:
            self._window, self._spent = now, 0
        self._spent += size
        if self._spent > self.per_second:
            raise ReplyTooLarge(f"the server sent more than {self.per_second // MIB} MiB within one second")


def encode(*parts: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_MORE = object()  # the parser needs more bytes


class ReplyParser:
    """Feed it bytes as they arrive; it returns every reply completed by them.

    Replies: ``bytes`` for simple and bulk strings, ``int``, ``None`` for nulls, ``list`` for arrays, and an
    :class:`redis.exceptions.ResponseError` *instance* (returned, not raised) for an error reply, so a
    pipeline's replies can be judged one by one.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._pos = 0
        self._stack: list[tuple[list[Any], int]] = []  # open arrays: (items so far, items expected)
        self._bulk: int | None = None  # length of a bulk string whose header was read
        self._consumed = 0  # bytes of the current (incomplete) reply already parsed
        self._elements = 0

    def feed(self, data: bytes) -> list[Any]:
        """Parse ``data``; return the replies it completed. Raises on bad input or past a limit."""
        self._buf += data
        replies: list[Any] = []
        while True:
            value = self._token()
            if value is _MORE:
                break
            while True:  # attach the value to its array, closing every array it completes
                if not self._stack:
                    replies.append(value)
                    self._consumed, self._elements = 0, 0
                    break
                items, expected = self._stack[-1]
                items.append(value)
                if len(items) < expected:
                    break
                self._stack.pop()
                value = items
        del self._buf[:self._pos]
        self._pos = 0
        if self._consumed + len(self._buf) > self.limits.reply_bytes:
            raise ReplyTooLarge(f"a reply larger than {self.limits.reply_bytes // MIB} MiB")
        return replies

    def _advance(self, to: int) -> None:
        self._consumed += to - self._pos
        self._pos = to

    def _token(self) -> Any:
        """The next complete scalar or empty array, after pushing any array headers; ``_MORE`` if incomplete."""
        buf = self._buf
        while True:
            if self._bulk is not None:
                end = self._pos + self._bulk
                if len(buf) < end + 2:
                    return _MORE
                if buf[end:end + 2] != b"\r\n":
                    raise rx.InvalidResponse("a bulk string not ended by CRLF")
                value = bytes(buf[self._pos:end])
                self._bulk = None
                self._advance(end + 2)
                return value
            eol = buf.find(b"\r\n", self._pos, self._pos + self.limits.line_bytes + 2)
            if eol < 0:
                if len(buf) - self._pos > self.limits.line_bytes:
                    raise ReplyTooLarge(f"a reply line longer than {self.limits.line_bytes // 1024} KiB")
                return _MORE
            kind, line = bytes(buf[self._pos:self._pos + 1]), bytes(buf[self._pos + 1:eol])
            self._advance(eol + 2)
            if kind == b"+":
                return line
            if kind == b"-":
                return rx.ResponseError(line.decode("utf-8", "replace"))
            if kind not in (b":", b"$", b"*") or not _INTEGER.fullmatch(line):
                raise rx.InvalidResponse("not a RESP2 reply")
            number = int(line)
            if kind == b":":
                return number
            if number == -1:
                return None
            if number < -1:
                raise rx.InvalidResponse("a negative length")
            if kind == b"$":
                if number > self.limits.reply_bytes:
                    raise ReplyTooLarge(f"a reply larger than {self.limits.reply_bytes // MIB} MiB")
                self._bulk = number
                continue
            self._elements += number
            if self._elements > self.limits.elements:
                raise ReplyTooLarge(f"a reply of more than {self.limits.elements:,} elements")
            if number == 0:
                return []
            if len(self._stack) >= self.limits.depth:
                raise ReplyTooLarge(f"a reply nested deeper than {self.limits.depth}")
            self._stack.append(([], number))


READ_CHUNK = 64 * 1024


async def read_replies(reader: asyncio.StreamReader, parser: ReplyParser, budget: ByteBudget,
                       deliver: Callable[[Any], None], end: Callable[[BaseException | None], None],
                       lost: Callable[[str], BaseException]) -> None:
    """Read from ``reader`` within ``budget`` and hand every parsed reply to ``deliver`` until the connection
    ends; then call ``end`` once: with None when we cancelled it, else with why it ended (``lost(text)`` for
    EOF and socket errors, the protocol error itself otherwise).

    The one read loop of every held connection (the check's and the pub/sub subscriber's).
    """
    try:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise lost("connection closed by the server")
            budget.spend(len(data))
            for reply in parser.feed(data):
                deliver(reply)
    except asyncio.CancelledError:
        end(None)
        raise
    except OSError as exc:
        end(lost(f"connection reset: {exc}"))
    except rx.RedisError as exc:
        end(exc)
