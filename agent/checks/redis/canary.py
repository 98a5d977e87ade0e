"""Prove Redis *usable*, not just alive: a write canary and a pub/sub round trip, each on its own cadence.

``PING`` answers on a server that refuses every write: a replica after a failover (``-READONLY``), a full
server (``-OOM``), failing persistence (``-MISCONF``), too few replicas (``-NOREPLICAS``), or writes paused
for a failover (``CLIENT PAUSE WRITE``, which does not refuse a write but holds it). A WebSocket backend that
fans out through pub/sub is down when messages stop flowing, however well ``PING`` answers. Both probes are
opt-in per check, because each costs the server work (a write, a second connection) on every pod.

* :class:`WriteCanary` — ``SET <key> <timestamp> PX <ttl>`` then ``GET <key>`` in one round trip on the
  check's own connection; the key is per pod and expires by itself.
* :class:`~agent.checks.redis.pubsub.PubSubRoundTrip` — a held subscriber connection on a private channel
  (pubsub.py).
* :class:`UsabilityProbes` — the probes a check has, run after its own round trip when due.

Each keeps a :class:`Cadence`: after a success it runs again only after its interval, after a failure at
every check, so recovery is seen as soon as the check's own schedule allows. A probe whose reply did not come
in time raises :class:`ProbeTimeout`: a reply is still owed on that connection, the caller drops it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import agent.checks.redis.errors as rx
from agent.checks.redis.replies import classify
from agent.core.model import Reason

Failure = tuple[Reason, str]
KEY_PREFIX = "readiness-agent:canary"
PROBE_MARGIN = 0.01  # probes end this much before the check's deadline, so their timeout detail is the one seen


class Pipeliner(Protocol):
    """What the probes need from a connection: commands in one write, replies in order (errors as values)."""

    async def pipeline(self, *commands: tuple[str, ...]) -> list[Any]: ...


class ProbeTimeout(TimeoutError):
    """A probe's reply did not arrive in time; ``detail`` says which. The connection owes a reply: drop it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def pod_name() -> str:
    """This pod's name (``HOSTNAME`` in Kubernetes and Cloud Run), for per-pod keys and channels."""
    return os.environ.get("HOSTNAME") or socket.gethostname() or "agent"


class Cadence:
    """When a probe is due: ``interval`` after a success, at once after a failure (and before the first run)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = float("-inf")

    def due(self) -> bool:
        return self.clock() >= self.next_at

    def record(self, ok: bool) -> None:
        self.next_at = self.clock() + self.interval if ok else float("-inf")


def refused(what: str, reply: rx.ResponseError) -> Failure:
    """An error reply to a probe's command as a failure (NOPERM is a configuration error, as for EXISTS)."""
    text = str(reply)
    if text.startswith("NOPERM"):
        return Reason.ERROR, f"{what}: NOPERM, the ACL user may not run it (grant it or turn the probe off)"
    reason, detail = classify(reply)
    return reason, f"{what}: {detail}"[:160]


class WriteCanary:
    """``SET key value PX ttl`` + ``GET key`` in one round trip; ``run`` returns None when the write held."""

    def __init__(self, key: str, ttl: float, interval: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.key = key
        self.ttl_ms = max(1, round(ttl * 1000))
        self.cadence = Cadence(interval, clock)
        self.wall = wall

    @property
    def due(self) -> bool:
        return self.cadence.due()

    async def run(self, conn: Pipeliner, timeout: float) -> Failure | None:
        """Write and read back the canary within ``timeout``; raises :class:`ProbeTimeout` when it does not."""
        value = str(round(self.wall() * 1000))
        try:
            async with asyncio.timeout(timeout):
                set_reply, get_reply = await conn.pipeline(
                    ("SET", self.key, value, "PX", str(self.ttl_ms)), ("GET", self.key))
        except TimeoutError:
            self.cadence.record(False)
            raise ProbeTimeout("write canary: SET not answered in time (writes paused, e.g. CLIENT PAUSE WRITE "
                               "during a failover, or the server is stalled)") from None
        failure = self._judge(set_reply, get_reply, value)
        self.cadence.record(failure is None)
        return failure

    async def close(self) -> None:
        """The canary holds no connection of its own."""

    @staticmethod
    def _judge(set_reply: Any, get_reply: Any, value: str) -> Failure | None:
        if isinstance(set_reply, rx.ResponseError):
            return refused("write canary", set_reply)
        if set_reply != b"OK":
            return Reason.PROTOCOL, "write canary: SET did not answer OK"
        if isinstance(get_reply, rx.ResponseError):
            return refused("write canary GET", get_reply)
        if get_reply != value.encode():
            return Reason.ERROR, "write canary: GET did not return the value just written"
        return None


class Probe(Protocol):
    """A probe with its own cadence (:class:`WriteCanary`, :class:`~agent.checks.redis.pubsub.PubSubRoundTrip`)."""

    @property
    def due(self) -> bool: ...

    async def run(self, conn: Pipeliner, timeout: float) -> Failure | None: ...

    async def close(self) -> None: ...


class UsabilityProbes:
    """The opt-in probes of one Redis check, run after its round trip on the same connection when due.

    Between runs a probe is not due only after a success (:class:`Cadence`), so "not due" means "last passed".
    """

    def __init__(self, *probes: Probe | None) -> None:
        self.probes: tuple[Probe, ...] = tuple(p for p in probes if p is not None)

    def __bool__(self) -> bool:
        return bool(self.probes)

    async def run(self, conn: Pipeliner, deadline: float) -> Failure | None:
        """Run every due probe, in order, until one fails; each is bounded by the loop-time ``deadline``.

        The probes stop a little before ``deadline`` so their own, more precise, timeout detail wins over the
        caller's generic one.
        """
        loop = asyncio.get_running_loop()
        for probe in self.probes:
            if not probe.due:
                continue
            failure = await probe.run(conn, max(0.0, deadline - loop.time() - PROBE_MARGIN))
            if failure is not None:
                return failure
        return None

    async def close(self) -> None:
        for probe in self.probes:
            await probe.close()
