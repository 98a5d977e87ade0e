"""Sentinel: the URL parsed by hand and redacted, and master discovery and failover against real sentinels.

A real master, replica and three ``redis-server --sentinel`` processes (tests/support/topology.py) with
``down-after-milliseconds`` 1000, on loopback.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from agent.checks.redis_sentinel import SentinelFailure, SentinelResolver
from agent.model import Reason
from agent.sentinel import (
    DEFAULT_SENTINEL_PORT,
    SentinelTarget,
    is_sentinel_url,
    parse_any_redis_url,
    parse_sentinel_url,
)
from agent.urls import RedisTarget, redact_url
from tests.support.redisproc import free_port
from tests.support.topology import DOWN_AFTER_MS, MASTER_NAME, SentinelSet, until

SECRET = "p@ss/w,o:rd#?"


class TestSentinelUrl:
    def test_hosts_name_and_db(self) -> None:
        """A comma list of sentinels, the master name and the db index are all read."""
        target = parse_sentinel_url("redis+sentinel://10.0.0.1:26379,sentinel-b:26380,[::1]:5000/cache/3")
        assert target.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 5000))
        assert (target.master_name, target.db, target.tls) == ("cache", 3, False)
        assert target.redacted == "redis+sentinel://10.0.0.1:26379,sentinel-b:26380,[::1]:5000/cache/3"

    def test_default_port_and_db(self) -> None:
        """A sentinel without a port is on 26379; without a db the data node's db is 0."""
        target = parse_sentinel_url("rediss+sentinel://s1/mymaster")
        assert target.sentinels == (("s1", DEFAULT_SENTINEL_PORT),)
        assert (target.db, target.tls) == (0, True)
        assert target.redacted == "rediss+sentinel://s1:26379/mymaster"

    def test_credentials_are_the_data_nodes_and_never_shown(self) -> None:
        """user:password (any characters, percent-encoded or not) is parsed and shown as user:***."""
        target = parse_sentinel_url(f"redis+sentinel://app:{SECRET}@s1:1,s2:2/m/1")
        assert (target.username, target.password) == ("app", SECRET)
        assert target.redacted == "redis+sentinel://app:***@s1:1,s2:2/m/1"
        data = target.data_target("10.1.1.1", 6380)
        assert (data.host, data.port, data.db, data.password) == ("10.1.1.1", 6380, 1, SECRET)
        assert SECRET not in data.redacted and SECRET not in repr(target) and SECRET not in repr(data)

    def test_password_only(self) -> None:
        """``:password@`` authenticates as the default user and is shown as ***:***."""
        target = parse_sentinel_url("redis+sentinel://:hunter2@s1:26379/m")
        assert (target.username, target.password) == (None, "hunter2")
        assert "hunter2" not in target.redacted

    @pytest.mark.parametrize("url, words", [
        ("redis://s1:26379/m", "redis+sentinel://"),
        ("redis+sentinel://s1:26379", "master-name"),
        ("redis+sentinel:///m", "no sentinel"),
        ("redis+sentinel://s1:26379,,s2/m", "empty one"),
        ("redis+sentinel://s1:99999/m", "1-65535"),
        ("redis+sentinel://s1:x/m", "HOST:PORT"),
        ("redis+sentinel://s1/m/x", "database index"),
        ("redis+sentinel://s1/m?db=1", "?options"),
        ("redis+sentinel://" + ",".join(["s"] * 17) + "/m", "at most 16"),
    ])
    def test_bad_urls_name_the_problem(self, url: str, words: str) -> None:
        """Each malformed URL is refused with a reason naming what is wrong."""
        with pytest.raises(ValueError, match=re.escape(words)):
            parse_sentinel_url(url)

    def test_either_kind_of_url(self) -> None:
        """One parser takes a plain Redis URL or a Sentinel URL; anything else names all four schemes."""
        assert isinstance(parse_any_redis_url("redis://h:1/0"), RedisTarget)
        target = parse_any_redis_url("redis+sentinel://:pw@h:1/m")
        assert isinstance(target, SentinelTarget) and target.template.password == "pw"
        assert target.template.redacted == target.redacted and "pw" not in target.redacted
        with pytest.raises(ValueError, match="redis\\+sentinel://"):
            parse_any_redis_url("http://h/")
        with pytest.raises(ValueError, match="port"):
            parse_any_redis_url("redis://h:0/0")

    def test_scheme_detection_and_redaction_of_unparsable(self) -> None:
        """Sentinel schemes are recognised in any case; an unparsable one still has its password masked."""
        assert is_sentinel_url("REDIS+SENTINEL://s/m") and is_sentinel_url("rediss+sentinel://s/m")
        assert not is_sentinel_url("redis://s/m")
        assert SECRET not in redact_url(f"redis+sentinel://:{SECRET}@s1,,s2/m")


@pytest.fixture
def sentinels() -> object:
    with SentinelSet(sentinel_password="sentinel-secret") as topology:
        yield topology.start()


def resolver_for(topology: SentinelSet, url: str | None = None, password: str | None = "sentinel-secret",
                 timeout: float = 0.5) -> SentinelResolver:
    return SentinelResolver(parse_sentinel_url(url or topology.url()), lambda: password, timeout)


class TestSentinelResolver:
    async def test_discovers_the_master_and_reports_no_master_and_auth(self, sentinels: SentinelSet) -> None:
        """The master is found through the sentinels; a dead first sentinel costs nothing, a blackholed one half
        the timeout; an unknown name is ``no_master``; a wrong sentinel password is ``auth``."""
        dead = free_port()
        hosts = ",".join([f"127.0.0.1:{dead}"] + [f"127.0.0.1:{s.port}" for s in sentinels.sentinels])
        resolver = resolver_for(sentinels, f"redis+sentinel://{hosts}/{MASTER_NAME}")
        try:
            started = time.monotonic()
            assert await resolver.master() == sentinels.master.address
            assert time.monotonic() - started < 0.5 * 2 + 1
        finally:
            await resolver.close()
        sentinels.sentinels[0].pause()  # accepts connections (kernel backlog) and never answers
        try:
            blackholed = resolver_for(sentinels)
            started = time.monotonic()
            assert await blackholed.discover() == sentinels.master.address
            assert 0.5 / 2 <= time.monotonic() - started < 0.5 * 2 + 1  # half the timeout waited for it
        finally:
            sentinels.sentinels[0].resume()
        unknown = resolver_for(sentinels, sentinels.url().replace(f"/{MASTER_NAME}", "/nosuch"))
        with pytest.raises(SentinelFailure) as failure:
            await unknown.discover()
        assert failure.value.reason is Reason.NO_MASTER and "'nosuch'" in failure.value.detail
        wrong = resolver_for(sentinels, password="wrong")
        with pytest.raises(SentinelFailure) as failure:
            await wrong.discover()
        assert failure.value.reason is Reason.AUTH and "wrong" not in failure.value.detail

    async def test_a_silent_subscription_moves_to_another_sentinel(self, sentinels: SentinelSet) -> None:
        """The sentinel holding the +switch-master subscription stops answering: after the quiet time and one
        unanswered PING the subscription is held on another sentinel."""
        resolver = resolver_for(sentinels, timeout=0.3)
        resolver.quiet = 0.3
        try:
            await resolver.master()
            first = await until(lambda: resolver.subscribed, 5, "a held subscription")
            holder = next(s for s in sentinels.sentinels if s.address == first)
            holder.pause()
            try:
                paused = time.monotonic()
                await until(lambda: resolver.subscribed not in (None, first), 5, "another sentinel")
                moved = time.monotonic() - paused
            finally:
                holder.resume()
        finally:
            await resolver.close()
        assert moved < (0.3 + 0.3) * 2 + 1  # quiet time + the PING's timeout

    async def test_no_sentinel_reachable_is_a_connection_reason(self) -> None:
        """When no sentinel answers, the reason is the connection's (refused), and the detail says so."""
        resolver = SentinelResolver(parse_sentinel_url(f"redis+sentinel://127.0.0.1:{free_port()}/m"),
                                    lambda: None, 0.5)
        with pytest.raises(SentinelFailure) as failure:
            await resolver.discover()
        assert failure.value.reason is Reason.REFUSED and "no sentinel answered" in failure.value.detail

    async def test_follows_a_failover(self, sentinels: SentinelSet) -> None:
        """Master killed: the quorum flags it o_down (``no_master``), then ``+switch-master`` on the held
        subscription moves the resolver to the promoted replica."""
        resolver = resolver_for(sentinels)
        try:
            old = sentinels.master
            assert await resolver.master() == old.address
            await until(lambda: resolver.subscribed is not None, 5, "a held subscription")
            switched = asyncio.create_task(resolver.wait_switch())
            killed = time.monotonic()
            old.kill()
            seen: list[Reason | tuple[str, int]] = []
            while not switched.done() and time.monotonic() - killed < 20:
                try:
                    seen.append(await resolver.discover())
                except SentinelFailure as exc:
                    seen.append(exc.reason)
                await asyncio.sleep(0.05)
            new_address = await asyncio.wait_for(switched, 1)
            switch_seconds = time.monotonic() - killed
            assert new_address == sentinels.replica.address == resolver.address
            assert await resolver.master() == sentinels.replica.address
            assert Reason.NO_MASTER in seen  # the o_down phase between "down" and "promoted"
            assert seen.index(Reason.NO_MASTER) > 0 and seen[0] == old.address  # not before down-after-ms
            # Sentinel's own schedule: down-after-milliseconds, then election and promotion (a few seconds).
            assert DOWN_AFTER_MS / 1000 <= switch_seconds < 15
            print(f"+switch-master {switch_seconds:.2f}s after the kill")
        finally:
            await resolver.close()

