"""The Redis check: "connected" is not enough, Redis must be *usable*, at the cost of one round trip.

Every check is one pipelined write and one round trip on the one connection the check holds: ``PING`` (must
answer exactly ``PONG``: ``-LOADING``, ``-BUSY``, ``-MASTERDOWN``, ``-MISCONF``, ``-NOAUTH`` all fail it),
the role, and, if configured, ``EXISTS`` on a maintenance key. The role is asked with ``ROLE`` (a replica's
master link, or a replica where the master is required) until a master is seen; from then on with
``WAIT 0 0``, which answers a count at once on a master (it waits for zero replicas) and is refused on a
replica: Redis spends about a PING on it, against ~1.3 PINGs for ``ROLE``, whose deferred-length reply is
written in two pieces (docs/benchmarks.md, "Fleet"). Anything but a count (a demotion, a refusal) is settled by
``ROLE`` in a second round trip of the same check, so a demoted master is still seen by the next check.
``INFO persistence replication`` (``loading``, ``async_loading``) costs ten times a PING inside Redis, so it
is sent only with the first check on each new connection and after a check that the role failed, to name the
reason precisely.
Design choices, each from a real failure mode (docs/design.md):

* no retries hide ``-LOADING``, and every check is bounded by ``asyncio.timeout``;
* the connection is reused while healthy and *discarded* after a timeout, a cancellation or a broken
  connection, because a cancelled read can leave it off by one reply, and after a refused handshake; an
  error reply to a check command (``-LOADING``, ``-BUSY``…) keeps it, since the replies are in step;
* the connection is held between checks and its reader always has a read pending, so a kill is seen in
  milliseconds without a second connection (monitor.py);
* locked-down servers: ``INFO`` or ``ROLE`` renamed away or outside the ACL user's rights is not a failure;
  the check keeps to what it may run (``PING`` and ``ROLE``; ``INFO replication`` instead of ``ROLE``; at
  worst ``PING`` alone) and says so in one warning;
* Sentinel and Cluster (topology.py): the connection goes to the master the sentinels name, is dropped
  and the master looked up again after any failure, and a ``+switch-master`` asks the check again at once; a
  cluster node (INFO ``cluster_enabled:1``) also answers ``CLUSTER INFO`` each check, and ``cluster_state``
  decides;
* a new client's view (``fresh_connection_interval``, 30 s): after a passing round trip on a connection
  held that long, a new connection must connect, authenticate and PING too (connection.py), or the check
  fails, and proves it again at every check until it passes;
* opt-in, on their own cadence after a passing round trip: the write canary and the pub/sub round trip
  (canary.py, pubsub.py), for a server that answers PING but refuses writes or drops messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import agent.checks.redis.errors as rx
from agent.checks.redis.canary import KEY_PREFIX, PROBE_MARGIN, ProbeTimeout, UsabilityProbes, WriteCanary, pod_name
from agent.checks.redis.config import RedisCheckConfig
from agent.checks.redis.connection import ConnectionLost, RedisEndpoint, RespConnection
from agent.checks.redis.monitor import ConnectionWatch
from agent.checks.redis.pubsub import CHANNEL_PREFIX, PubSubRoundTrip
from agent.checks.redis.replies import classify, judge_info, judge_role, parse_info, unavailable
from agent.checks.redis.sentinel import SentinelFailure
from agent.checks.redis.topology import CLUSTER_INFO, Topology
from agent.core.model import CheckResult, Reason
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")
Failure = tuple[Reason, str]
WAIT = ("WAIT", "0", "0")  # a count at once on a master (zero replicas to wait for), an error on a replica


class _NothingListens(Exception):
    """A fresh connection was refused, or ended before its first reply: conclusive evidence that Redis is gone.

    The second case is a server dying: the kernel still completes handshakes on its listening socket while
    the process exits, then resets them (a proxy whose upstream is gone does the same)."""


# How a connection that worked before fails when the server (or something in between) dropped it.
_DROPPED = (ConnectionLost, ConnectionResetError, BrokenPipeError)


class _ErrorReply(Exception):
    """A check command answered with an error reply: the connection is in step and is kept."""

    def __init__(self, reply: rx.ResponseError) -> None:
        super().__init__(str(reply))
        self.reply = reply


class RedisCheck:
    """Checks one Redis. ``run`` never raises and returns within ``timeout`` (plus scheduling noise)."""

    kind = "redis"

    def __init__(self, config: RedisCheckConfig, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = config.name
        self.required = config.required
        self.target = config.describe()
        self.config = config
        self.timeout = timeout
        self.clock = clock
        self.endpoint = RedisEndpoint(config, timeout)
        self.topology = Topology(config, timeout)
        self.watch = ConnectionWatch()
        self._conn: RespConnection | None = None
        self._role = True  # ROLE may be run
        self._wait = True  # WAIT may be run (a master's role confirmed at the cost of a PING)
        self._master = False  # the last ROLE or INFO said master: WAIT asks the role until it says otherwise
        self._info: tuple[str, ...] | None = ("persistence", "replication")  # None: INFO may not be run
        self._ask_info = True  # send INFO with the next check
        self._cluster_learned = False  # the INFO just read said cluster mode for the first time
        self._warned = False
        self.probes = self._probes()
        self._deadline = 0.0
        self._proven = 0.0  # when a new connection last connected and authenticated (clock)

    def _probes(self) -> UsabilityProbes:
        """The opt-in write canary and pub/sub round trip, on this check's per-pod key and channel."""
        config, pod, interval = self.config, pod_name(), self.config.canary_interval
        canary = pubsub = None
        if config.write_canary:
            canary = WriteCanary(f"{KEY_PREFIX}:{pod}", ttl=max(30.0, 3 * interval), interval=interval)
        if config.pubsub_roundtrip:
            async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                await self.endpoint.prepare(self.timeout)  # a fresh IAM token for the subscriber's AUTH
                return await self.endpoint.open_streams()

            pubsub = PubSubRoundTrip(f"{CHANNEL_PREFIX}:{pod}", opener, self.endpoint.handshake, interval)
        return UsabilityProbes(canary, pubsub)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.watch.hold(None)
        self.topology.connection_dropped()
        if conn is not None:
            await conn.aclose()

    async def run(self) -> CheckResult:
        """One round trip (PING, ROLE, maybe INFO and EXISTS), bounded by ``timeout``; drop the connection on error."""
        started = self.clock()
        self.topology.cluster_info = None
        self.endpoint.keep_fresh()
        if self._conn is not None and (not self._conn.is_open or self.endpoint.credentials_changed()
                                       or self.topology.moved(self.endpoint.address)):
            await self._drop()  # the server ended it (the watch reported that), new credentials, or a failover
        reused = self._conn is not None and self._conn.used
        self._deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(self._deadline):
                try:
                    failure = await self._attempt()
                except _DROPPED:
                    if not reused:
                        raise
                    # A dropped connection is a question, not an answer: ask again on a fresh one, once,
                    # within the same timeout (an idle-timeout or a proxy recycling connections is not a fault).
                    await self._drop()
                    failure = await self._attempt()
        except asyncio.CancelledError:
            await self._drop()
            raise
        except SentinelFailure as exc:  # no master to connect to
            failure = exc.reason, exc.detail
        except ProbeTimeout as exc:  # a probe's reply is still owed: the connection goes
            await self._drop()
            return CheckResult(False, self.clock() - started, Reason.TIMEOUT, exc.detail)
        except _NothingListens as exc:
            await self._drop()
            self.topology.failed()
            reason, detail = classify(exc.__cause__ or exc)
            return CheckResult(False, self.clock() - started, reason, detail, conclusive=True)
        except _ErrorReply as exc:  # -LOADING, -BUSY, -MASTERDOWN…: a complete answer, the connection stays
            failure = classify(exc.reply)
        except Exception as exc:  # handshake refused, timeout, reset, protocol: the connection goes
            await self._drop()
            failure = classify(exc)
        if failure is not None:
            if self.topology.sentinel and failure[0] is not Reason.MAINTENANCE:  # ask the sentinels afresh
                await self._drop()
                self.topology.failed()
            return CheckResult(False, self.clock() - started, failure[0], failure[1], facts=self.topology.slots())
        return CheckResult(True, self.clock() - started, facts=self.topology.slots())

    async def _attempt(self) -> Failure | None:
        conn = self._conn
        handshake: list[tuple[str, ...]] = []
        if conn is None:
            self.endpoint.address = await self.topology.address(self.endpoint.address)
            # IAM: the current token, or IamError (reason auth, its own words) before the deadline, unconnected
            await self.endpoint.prepare(max(0.0, self._deadline - asyncio.get_running_loop().time() - PROBE_MARGIN))
            try:
                conn = await self.endpoint.connect(self._deadline)
            except (ConnectionRefusedError, ConnectionResetError) as exc:
                raise _NothingListens() from exc
            self._conn = conn
            self.watch.hold(conn)
            handshake = self.endpoint.handshake()
            self._ask_info = True
        probe = self._commands()
        try:
            replies = await conn.pipeline(*handshake, *probe)
        except _DROPPED as exc:
            if handshake and not conn.answered:  # a fresh connection, ended before a word
                raise _NothingListens() from exc
            raise
        for command, reply in zip(handshake, replies, strict=False):
            if isinstance(reply, rx.ResponseError) and command[0] != "CLIENT":
                raise reply
        if handshake:
            self._proven = self.clock()  # a new connection was just opened and authenticated
        replies = replies[len(handshake):]
        unsettled = self._role_unsettled(probe, replies)
        if unsettled:  # a demoted master, or WAIT refused: ROLE tells, now
            probe = self._commands()
            replies = await conn.pipeline(*probe)
        failure = self._judge(probe, replies)
        if unsettled and self._master:
            self._wait = False  # WAIT failed where ROLE says master (a proxy, a variant): ROLE from now on
        if failure is None and self._cluster_learned and CLUSTER_INFO not in probe:
            # INFO just said cluster_enabled:1: one more round trip, so not even this check passes unjudged.
            reply = (await conn.pipeline(CLUSTER_INFO))[0]
            failure = self.topology.judge(reply)
            if unavailable(reply):  # refused on the check that learns cluster mode: the one warning is now
                self._degrade(["CLUSTER"])
        if failure is None and self.probes:
            failure = await self.probes.run(conn, self._deadline)
        every = self.config.fresh_connection_interval
        if failure is None and not handshake and every and self.clock() - self._proven >= every:
            failure = await self.endpoint.prove_fresh(self._deadline - PROBE_MARGIN)  # until it passes
            self._proven = self.clock() if failure is None else self._proven
        conn.used = True
        return failure

    def _commands(self) -> list[tuple[str, ...]]:
        commands: list[tuple[str, ...]] = [("PING",)]
        by_wait = self._wait and self._master and not self._ask_info
        if by_wait:
            commands.append(WAIT)
        elif self._role:
            commands.append(("ROLE",))
        if self._info is not None and (self._ask_info or not (self._role or by_wait)):
            commands.append(("INFO", *self.topology.info_sections(self._info if self._role else ("replication",))))
        commands.extend(self.topology.commands())
        if self.config.maintenance_key:
            commands.append(("EXISTS", self.config.maintenance_key))
        return commands

    def _role_unsettled(self, commands: list[tuple[str, ...]], replies: list[Any]) -> bool:
        """WAIT answered anything but a count after a PONG: the node is no longer known to be a master."""
        if WAIT not in commands or replies[0] != b"PONG":
            return False
        reply = replies[commands.index(WAIT)]
        if isinstance(reply, int):
            return False
        self._wait = not unavailable(reply)  # renamed or outside the ACL: ROLE from now on
        self._master = False
        return True

    def _judge(self, commands: list[tuple[str, ...]], replies: list[Any]) -> Failure | None:
        """The failure the replies show, PING first, then INFO, ROLE and the maintenance key."""
        by_name = {command[0]: reply for command, reply in zip(commands, replies, strict=True)}
        ping = by_name["PING"]
        if isinstance(ping, rx.ResponseError):
            raise _ErrorReply(ping)
        if ping != b"PONG":
            return Reason.PROTOCOL, "PING did not answer PONG"
        refused = [name for name in ("INFO", "ROLE", "CLUSTER") if unavailable(by_name.get(name))]
        self._cluster_learned = False
        info_failure = self._judge_info(by_name.get("INFO"))
        cluster_failure = self.topology.judge(by_name["CLUSTER"]) if "CLUSTER" in by_name else None
        role_failure = self._judge_role(by_name.get("ROLE"))
        if refused:
            self._degrade(refused)
        self._ask_info = role_failure is not None
        failure = info_failure or cluster_failure or role_failure
        if failure is None and "EXISTS" in by_name:
            failure = self._judge_maintenance(by_name["EXISTS"])
        return failure

    def _judge_role(self, reply: Any) -> Failure | None:
        if reply is None or unavailable(reply):
            self._role = self._role and reply is None  # refused (renamed, ACL): not sent again
            return None
        if isinstance(reply, rx.ResponseError):
            raise _ErrorReply(reply)
        failure = judge_role(reply, self.topology.require_master())
        self._master = reply[0] == b"master"
        return failure

    def _judge_info(self, reply: Any) -> Failure | None:
        if reply is None or unavailable(reply):
            if reply is not None:
                self._info = None  # refused (renamed, ACL): not sent again
            return None
        if isinstance(reply, rx.ResponseError):
            if str(reply).startswith("ERR wrong number of arguments") and self._info:
                self._info = ()  # Redis < 7 takes one INFO section at a time: the default sections next time
                return None
            raise _ErrorReply(reply)
        info = parse_info(reply)
        self._cluster_learned = self.topology.learn(info)
        self._master = info.get("role") == "master"
        return judge_info(info, self.topology.require_master())

    def _judge_maintenance(self, reply: Any) -> Failure | None:
        if isinstance(reply, rx.ResponseError):
            if str(reply).startswith("NOPERM"):
                # A diagnostic the user may not run is a configuration error, not an authentication failure.
                return Reason.ERROR, "NOPERM: the ACL user may not read the maintenance key"
            raise _ErrorReply(reply)
        if reply:
            return Reason.MAINTENANCE, "the maintenance key exists"
        return None

    def _degrade(self, refused: list[str]) -> None:
        """One warning per check, whatever the server turned out to refuse."""
        if self._warned:
            return
        self._warned = True
        left = "PING and ROLE" if self._role else ("PING and INFO replication" if self._info is not None
                                                   else "PING alone (a replica's master link is not checked)")
        log.warning("check %s: Redis %s refuses %s (renamed, or not in the ACL user's rights); readiness is "
                    "judged from %s", self.name, self.target, " and ".join(refused), left,
                    extra=labels(event="degraded_commands", check=self.name))

    async def wait_lost(self) -> None:
        """Return when the server ends the held connection (see monitor.py), or, with Sentinel, when
        ``+switch-master`` moves the master away from it: either way the check is asked again at once."""
        if not self.topology.sentinel:
            await self.watch.wait_lost()
            return
        lost = asyncio.create_task(self.watch.wait_lost(), name=f"conn-lost:{self.name}")
        moved = asyncio.create_task(self.topology.wait_moved(), name=f"master-moved:{self.name}")
        try:
            await asyncio.wait({lost, moved}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (lost, moved):
                task.cancel()
            await asyncio.gather(lost, moved, return_exceptions=True)
        if moved.cancelled() or moved.exception() is not None:
            lost.result()  # re-raises MonitorUnavailable when no connection is held

    async def close(self) -> None:
        """Close the connections, any sentinel subscription, and stop refreshing IAM tokens."""
        await self._drop()
        await self.probes.close()
        await self.endpoint.close()
        await self.topology.close()
