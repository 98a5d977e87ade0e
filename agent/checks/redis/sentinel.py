"""Find the master through Sentinel and follow its failovers: ``SENTINEL`` queries and a held ``+switch-master``.

Why: with Sentinel the address of "the Redis" changes at every failover, and the agent must never keep
judging a node that was demoted. So the master is looked up through the sentinels (all are asked at once, and
the majority of those that answer decides, so one dead, lagging or blackholed sentinel changes nothing),
looked up again whenever a check fails, and followed at once while healthy through a subscription to
``+switch-master`` held on one sentinel. The node found is still checked with ``ROLE`` by the Redis check: a
sentinel that is stale or partitioned away cannot make a replica look like the master.

"The quorum knows no master" is its own reason, ``no_master``: most sentinels that answered either do not
know the master name, or flag the master ``o_down`` (objectively down: the quorum agrees it is down, and no
replica has been promoted yet). Sentinels that cannot be reached give the usual connection reasons (a sentinel's
name is looked up as every check does: checks/dns.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import agent.checks.redis.errors as rx
from agent.checks.dns import lookup_budget, open_stream
from agent.checks.redis.connection import RespConnection
from agent.checks.redis.protocol import DEFAULT_LIMITS, ByteBudget, ReplyParser, encode
from agent.checks.redis.replies import classify
from agent.config.sentinel_url import SentinelTarget
from agent.core.model import Reason
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")
Address = tuple[str, int]
RESUBSCRIBE_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # between attempts to hold a subscription, per failed round
# A subscription silent this long is PINGed, and moved to the next sentinel if no answer comes within the
# timeout: a sentinel behind a dead path (no RST) would otherwise hold it without ever pushing a failover.
SUBSCRIPTION_QUIET = 10.0


class SentinelFailure(Exception):
    """Discovery failed: ``reason`` (from the fixed set) and a secret-free ``detail``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _pairs(reply: Any) -> dict[str, str]:
    """A flat ``[key, value, …]`` reply (``SENTINEL master``) as a dict."""
    if not isinstance(reply, list):
        return {}
    return {_text(k): _text(v) for k, v in zip(reply[::2], reply[1::2], strict=False)}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def judge_sentinel(name: str, addr: Any, master: Any) -> Address:
    """The master's address from ``get-master-addr-by-name`` and ``SENTINEL master`` replies, or a failure."""
    for reply in (addr, master):
        if isinstance(reply, rx.ResponseError) and not str(reply).startswith("ERR No such master"):
            raise reply
    if addr is None or isinstance(addr, rx.ResponseError):
        raise SentinelFailure(Reason.NO_MASTER, f"the sentinels know no master named {name!r}")
    if not isinstance(addr, list) or len(addr) != 2:
        raise rx.InvalidResponse("get-master-addr-by-name did not answer an address")
    host, port_text = _text(addr[0]), _text(addr[1])
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise rx.InvalidResponse("get-master-addr-by-name answered a bad port")
    flags = _pairs(master).get("flags", "").split(",")
    if "o_down" in flags:
        raise SentinelFailure(Reason.NO_MASTER, f"the sentinels agree the master of {name!r} is down (o_down) "
                                                "and no replica has been promoted yet")
    return host, int(port_text)


def _answered(task: asyncio.Task[Address]) -> bool:
    """The sentinel behind ``task`` gave a verdict: an address, or "no master"."""
    if not task.done() or task.cancelled():
        return False
    exc = task.exception()
    return exc is None or (isinstance(exc, SentinelFailure) and exc.reason is Reason.NO_MASTER)


class SentinelResolver:
    """The current master of one Sentinel URL: ``master()`` looks it up when unknown, ``forget()`` after a failure,
    and a held subscription to ``+switch-master`` moves it at once (``wait_switch`` returns then).

    ``password`` is the sentinels' own password (re-read each time: a mounted file may rotate).
    """

    def __init__(self, target: SentinelTarget, password: Callable[[], str | None], timeout: float) -> None:
        self.target = target
        self.password = password
        self.timeout = timeout
        self.address: Address | None = None
        self.budget = ByteBudget(DEFAULT_LIMITS.bytes_per_second)
        self._switched = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.subscribed: Address | None = None  # the sentinel whose +switch-master we hold, if any
        self.quiet = SUBSCRIPTION_QUIET
        self.switches = 0

    # ------------------------------------------------------------------------------------------ discovery

    async def master(self) -> Address:
        """The master's address: the one known, or a new lookup; raises :class:`SentinelFailure` or a Redis error."""
        self._ensure_watching()
        if self.address is None:
            self.address = await self.discover()
        return self.address

    def forget(self) -> None:
        """Look the master up again before the next connection (after a failed check)."""
        self.address = None

    async def discover(self) -> Address:
        """Ask every sentinel at once and follow the majority of those that answered. Bounded by ``timeout``.

        Every sentinel gets half the timeout to answer; past that the first answers decide, so a blackholed
        sentinel costs half a timeout, not a failure. A majority (not the fastest) decides, so one sentinel
        that lags behind a failover, or is partitioned away, cannot send the check to a stale master.
        """
        tasks = [asyncio.create_task(self._ask(s), name="sentinel-query") for s in self.target.sentinels]
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.wait(tasks, timeout=self.timeout / 2)
                while not any(_answered(t) for t in tasks) and not all(t.done() for t in tasks):
                    await asyncio.wait([t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self._decide([t for t in tasks if t.done() and not t.cancelled()])

    def _decide(self, done: list[asyncio.Task[Address]]) -> Address:
        """The answer most sentinels gave (an address wins a tie); connection errors only when none answered."""
        votes: dict[Address | None, int] = {}
        no_master: SentinelFailure | None = None
        failures: list[BaseException] = []
        for task in done:
            exc = task.exception()
            if exc is None:
                votes[task.result()] = votes.get(task.result(), 0) + 1
            elif isinstance(exc, SentinelFailure) and exc.reason is Reason.NO_MASTER:
                votes[None], no_master = votes.get(None, 0) + 1, exc
            else:
                failures.append(exc)
        if votes:
            winner = max(votes, key=lambda a: (votes[a], a is not None))  # max keeps the first among equals
            if winner is not None:
                return winner
            assert no_master is not None
            raise no_master
        raise self._best(failures)

    def _best(self, failures: list[BaseException]) -> BaseException:
        """What to report when no sentinel answered: a sentinel's own refusal beats a connection error."""
        for exc in failures:
            if isinstance(exc, SentinelFailure):
                return exc
        reason, detail = classify(failures[0]) if failures else (Reason.ERROR, "no sentinel")
        return SentinelFailure(reason, f"no sentinel answered ({len(failures)} tried): {detail}")

    async def _ask(self, sentinel: Address) -> Address:
        conn = await self._connect(sentinel)
        try:
            auth = self._auth()
            replies = await conn.pipeline(*auth, ("SENTINEL", "get-master-addr-by-name", self.target.master_name),
                                          ("SENTINEL", "master", self.target.master_name))
        finally:
            await conn.aclose()
        if auth and isinstance(replies[0], rx.ResponseError):
            reason, detail = classify(replies[0])
            raise SentinelFailure(reason, f"a sentinel refused the sentinel password: {detail}")
        return judge_sentinel(self.target.master_name, *replies[len(auth):])

    def _auth(self) -> list[tuple[str, ...]]:
        password = self.password()
        return [("AUTH", password)] if password is not None else []

    async def _connect(self, sentinel: Address) -> RespConnection:
        reader, writer = await open_stream(*sentinel, lookup_budget(self.timeout))
        return RespConnection(reader, writer, DEFAULT_LIMITS, self.budget)

    # --------------------------------------------------------------------------------------- subscription

    def _ensure_watching(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="sentinel-watch")

    async def wait_switch(self) -> Address:
        """Return the new master's address when a held ``+switch-master`` moves it."""
        self._switched.clear()
        await self._switched.wait()
        assert self.address is not None
        return self.address

    async def _watch(self) -> None:
        """Hold ``SUBSCRIBE +switch-master`` on one sentinel after another, for as long as the resolver lives."""
        failed_rounds = 0
        while True:
            for sentinel in self.target.sentinels:
                try:
                    await self._subscribe(sentinel)
                except (OSError, rx.RedisError, TimeoutError, SentinelFailure) as exc:
                    log.debug("sentinel subscription to %s:%s ended: %s", *sentinel, classify(exc)[1],
                              extra=labels(event="sentinel_unsubscribed"))
                if self.subscribed is not None:
                    failed_rounds = 0  # it was held, then lost: the next round starts without delay
                self.subscribed = None
            await asyncio.sleep(RESUBSCRIBE_DELAYS[min(failed_rounds, len(RESUBSCRIBE_DELAYS) - 1)])
            failed_rounds += 1

    async def _subscribe(self, sentinel: Address) -> None:
        async with asyncio.timeout(self.timeout):
            reader, writer = await open_stream(*sentinel, lookup_budget(self.timeout))
        try:
            auth = self._auth()
            writer.write(b"".join(encode(*c) for c in [*auth, ("SUBSCRIBE", "+switch-master")]))
            parser = ReplyParser(DEFAULT_LIMITS)
            pending = len(auth) + 1  # the AUTH and SUBSCRIBE confirmations, within the timeout
            async with asyncio.timeout(self.timeout):
                while pending:
                    for reply in await self._read(reader, parser):
                        pending -= 1
                        if isinstance(reply, rx.ResponseError):
                            raise SentinelFailure(*classify(reply))
            self.subscribed = sentinel
            while True:
                try:
                    async with asyncio.timeout(self.quiet):
                        replies = await self._read(reader, parser)
                except TimeoutError:  # quiet for long: is the sentinel still there? (PING works while subscribed)
                    writer.write(encode("PING"))
                    async with asyncio.timeout(self.timeout):
                        replies = await self._read(reader, parser)
                for reply in replies:
                    self._on_message(reply)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader, parser: ReplyParser) -> list[Any]:
        data = await reader.read(64 * 1024)
        if not data:
            raise ConnectionResetError("the sentinel closed the subscription")
        self.budget.spend(len(data))
        return parser.feed(data)

    def _on_message(self, reply: Any) -> None:
        """``["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]``."""
        if not isinstance(reply, list) or len(reply) != 3 or reply[0] != b"message":
            return
        words = _text(reply[2]).split()
        if len(words) != 5 or words[0] != self.target.master_name or not words[4].isdigit():
            return
        self.address = (words[3], int(words[4]))
        self.switches += 1
        log.info("sentinel: master %s moved to %s:%s (+switch-master)", words[0], words[3], words[4],
                 extra=labels(event="switch_master"))
        self._switched.set()

    async def close(self) -> None:
        """Stop the subscription."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # never swallows the caller's own cancellation
