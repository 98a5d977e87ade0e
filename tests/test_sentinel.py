"""Sentinel: the URL parsed by hand and redacted, and master discovery and failover against real sentinels.

A real master, replica and three ``redis-server --sentinel`` processes (harness/redis_topology.py) with
``down-after-milliseconds`` 1000, on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks.redis.errors import InvalidResponse, ResponseError
from agent.checks.redis.sentinel import SentinelFailure, SentinelResolver, judge_sentinel
from agent.commands import build_agent, warn_password_on_command_line
from agent.config.loader import ConfigError, load_settings
from agent.config.sentinel_url import (
    DEFAULT_SENTINEL_PORT,
    SentinelTarget,
    is_sentinel_url,
    parse_any_redis_url,
    parse_sentinel_url,
)
from agent.config.settings import Platform, Settings
from agent.config.urls import RedisTarget, redact_url
from agent.core.agent import Agent
from agent.core.model import CheckResult, Reason
from agent.core.snapshot import AgentSnapshot
from harness.agent_process import AgentProcess
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import free_port
from harness.redis_topology import DOWN_AFTER_MS, MASTER_NAME, SentinelSet
from harness.wait import until_async
from tests.test_example_configs import load_example

SECRET = "p@ss/w,o:rd#?"
DATA_SECRET = "data-secret-4711"
SENTINEL_SECRET = "sentinel-secret-0815"


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


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


def detect(_env: object) -> tuple[Platform, str]:
    return Platform.LOCAL, "test"


class TestSentinelConfig:
    def test_redis_url_takes_a_sentinel_url_and_the_sentinels_password(self) -> None:
        """--redis-url accepts a Sentinel URL; the sentinels' password is its own setting, shown as ***."""
        settings = load_settings({"redis_url": f"redis+sentinel://:{SECRET}@s1,s2:26380/cache",
                                  "redis_sentinel_password": "sentinel-pw"}, {}, detect)
        check = settings.checks[0]
        assert check.sentinel is not None and check.sentinel.sentinels == (("s1", 26379), ("s2", 26380))
        assert check.redis is not None and check.redis.password == SECRET and check.sentinel_password == "sentinel-pw"
        assert check.require_master and check.describe() == check.sentinel.redacted
        shown = str(settings.effective())
        assert SECRET not in shown and "sentinel-pw" not in shown and "sentinel-pw" not in repr(check)
        assert settings.effective()["redis_sentinel_password"]["value"] == "***"

    def test_checks_entries_take_sentinel_urls(self, tmp_path: Path) -> None:
        """A checks: entry with a Sentinel URL requires the master by default and inherits the password file."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text("redis_sentinel_password_file: /run/s\nchecks:\n"
                       "  - {name: sessions, url: 'redis+sentinel://s1:26379/m/2'}\n"
                       "  - {name: replica, url: 'redis://r:6379', sentinel_password_file: /run/other}\n"
                       "  - {name: opt-out, url: 'rediss+sentinel://s1/m', require_master: false}\n")
        checks = load_settings({}, {}, detect, config_file=str(cfg)).checks
        assert [c.require_master for c in checks] == [True, False, False]
        assert checks[0].sentinel_password_file == "/run/s" and checks[1].sentinel_password_file == "/run/other"
        assert checks[0].redis is not None and checks[0].redis.db == 2 and checks[2].redis.tls  # type: ignore[union-attr]

    def test_a_bad_sentinel_url_is_one_line_without_the_password(self) -> None:
        """A malformed Sentinel URL fails with one line naming the problem, the password masked."""
        with pytest.raises(ConfigError) as err:
            load_settings({"redis_url": f"redis+sentinel://:{SECRET}@s1,,s2/m"}, {}, detect)
        assert "empty one" in str(err.value) and SECRET not in str(err.value) and "\n" not in str(err.value)

    def test_require_master_defaults_on_for_redis_url_and_can_be_turned_off(self) -> None:
        """--redis-url requires the master unless --redis-require-master=false (flag, env or file)."""
        assert load_settings({"redis_url": "redis://h:1"}, {}, detect).checks[0].require_master
        off = load_settings({}, {"READINESS_AGENT_REDIS_REQUIRE_MASTER": "false"}, detect)
        assert not off.checks[0].require_master

    def test_sentinel_password_on_the_command_line_warns(self, caplog: pytest.LogCaptureFixture) -> None:
        """--redis-sentinel-password as a flag warns (ps shows it), without the password; from the env it does not."""
        url = "redis+sentinel://s1/m"
        flagged = load_settings({"redis_url": url, "redis_sentinel_password": "pw-4242"}, {}, detect)
        from_env = load_settings({"redis_url": url}, {"READINESS_AGENT_REDIS_SENTINEL_PASSWORD": "pw-4242"}, detect)
        with caplog.at_level(logging.WARNING, logger="readiness_agent"):
            assert warn_password_on_command_line(flagged)
            assert not warn_password_on_command_line(from_env)
        assert "--redis-sentinel-password" in caplog.text and "pw-4242" not in caplog.text

    def test_example_config_loads(self, tmp_path: Path) -> None:
        """examples/configs/sentinel.yaml is valid: three sentinels, master name, password files, require_master."""
        settings = load_example("sentinel.yaml", tmp_path)
        check = settings.checks[0]
        assert check.sentinel is not None and len(check.sentinel.sentinels) == 3
        assert check.sentinel.master_name == "mymaster" and check.require_master
        assert check.password_file and check.sentinel_password_file


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    """A fresh Sentinel set, for a test that kills a node."""
    with SentinelSet(data_password=DATA_SECRET, sentinel_password=SENTINEL_SECRET) as topology:
        yield topology.start()


@pytest.fixture(scope="module")
def shared_sentinels() -> Iterator[SentinelSet]:
    """One Sentinel set for the tests that leave it healthy (the graceful failover runs last)."""
    with SentinelSet(data_password=DATA_SECRET, sentinel_password=SENTINEL_SECRET) as topology:
        yield topology.start()


def resolver_for(topology: SentinelSet, url: str | None = None, password: str | None = SENTINEL_SECRET,
                 timeout: float = 0.5) -> SentinelResolver:
    return SentinelResolver(parse_sentinel_url(url or topology.url()), lambda: password, timeout)


class TestSentinelReplies:
    def test_address_unless_unknown_or_objectively_down(self) -> None:
        """An address is the master; nil, "No such master" and an o_down flag are no_master; junk is protocol."""
        master = [b"name", b"m", b"flags", b"master"]
        assert judge_sentinel("m", [b"10.0.0.5", b"6380"], master) == ("10.0.0.5", 6380)
        for addr, info in ((None, master), ([b"h", b"1"], [b"flags", b"master,s_down,o_down"]),
                           (ResponseError("ERR No such master with that name"),
                            ResponseError("ERR No such master with that name"))):
            with pytest.raises(SentinelFailure) as failure:
                judge_sentinel("m", addr, info)
            assert failure.value.reason is Reason.NO_MASTER
        assert judge_sentinel("m", [b"h", b"1"], [b"flags", b"master,s_down"]) == ("h", 1)  # one sentinel's view
        with pytest.raises(InvalidResponse):
            judge_sentinel("m", [b"h", b"0"], master)
        with pytest.raises(ResponseError, match="NOAUTH"):
            judge_sentinel("m", ResponseError("NOAUTH Authentication required."), master)


class TestSentinelResolver:
    async def test_discovers_the_master_and_reports_no_master_and_auth(self, shared_sentinels: SentinelSet) -> None:
        sentinels = shared_sentinels
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

    async def test_a_silent_subscription_moves_to_another_sentinel(self, shared_sentinels: SentinelSet) -> None:
        """The sentinel holding the +switch-master subscription stops answering: after the quiet time and one
        unanswered PING the subscription is held on another sentinel."""
        resolver = resolver_for(shared_sentinels, timeout=0.3)
        resolver.quiet = 0.3
        try:
            await resolver.master()
            first = await until_async(lambda: resolver.subscribed, 5, "a held subscription")
            holder = next(s for s in shared_sentinels.sentinels if s.address == first)
            holder.pause()
            try:
                paused = time.monotonic()
                await until_async(lambda: resolver.subscribed not in (None, first), 5, "another sentinel")
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


class Recorder:
    """A store listener that notes every observation with the address the check's connection went to."""

    def __init__(self, agent: Agent) -> None:
        self.check = agent.checks["redis"]
        self.seen: list[tuple[float, bool, Reason | None, tuple[str, int], bool]] = []

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        address = self.check.endpoint.address  # type: ignore[attr-defined]
        self.seen.append((time.monotonic(), result.ok, result.reason, address, snapshot.ready))

    def changed(self, change: object) -> None:
        """Transitions are read from the observations."""

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        """Not used."""


def sentinel_settings(topology: SentinelSet, password_file: Path, **flags: str) -> Settings:
    return load_settings({"redis_url": topology.url(), "redis_sentinel_password_file": str(password_file), **flags},
                         {}, lambda _e: (Platform.LOCAL, "test"))


class TestSentinelCheck:
    async def test_failover_ready_on_the_new_master_never_on_the_demoted_one(
            self, sentinels: SentinelSet, tmp_path: Path) -> None:
        """Master killed: not ready at once, ``no_master`` while the quorum has it o_down, ``+switch-master``
        on the held subscription, ready again on the promoted replica; no check after the kill passed, and the
        agent never was ready again, through the old master, not even once it is back (saying role:master
        until Sentinel demotes it)."""
        secret = tmp_path / "sentinel-password"
        secret.write_text(SENTINEL_SECRET + "\n")
        agent = build_agent(sentinel_settings(sentinels, secret))  # the defaults: the figures a user gets
        recorder = Recorder(agent)
        agent.store.subscribe(recorder)
        resolver = agent.checks["redis"].topology.resolver  # type: ignore[attr-defined]
        old, new = sentinels.master, sentinels.replica
        await agent.start()
        try:
            await asyncio.wait_for(agent.store.ready.wait(), 10)
            assert recorder.seen[-1][3] == old.address
            await until_async(lambda: resolver.subscribed, 5, "a held +switch-master subscription")
            killed = time.monotonic()
            old.kill()
            await until_async(lambda: not agent.snapshot.ready, 5, "not ready after the kill")
            not_ready = time.monotonic() - killed
            await until_async(lambda: resolver.switches, 20, "+switch-master")
            switched = time.monotonic() - killed
            await until_async(lambda: agent.snapshot.ready, 10, "ready on the new master")
            ready_again = time.monotonic() - killed
            old.start()  # back, and role:master until the sentinels reconfigure it
            back = time.monotonic()
            await until_async(lambda: time.monotonic() - back > 1.5 and agent.snapshot.ready, 5, "ready meanwhile")
            assert old.info("replication")["role"] == "master"  # the dangerous window was really tested
        finally:
            await agent.stop()
        after = [s for s in recorder.seen if s[0] >= killed]
        assert not_ready < 1.0  # the held connection's EOF, then the sentinels still name the dead node
        assert DOWN_AFTER_MS / 1000 <= switched <= ready_again < 15
        assert all(address == new.address for _, ok, _, address, _ in after if ok)
        turned = next(i for i, s in enumerate(after) if not s[4])
        assert turned <= 3  # a ready check leaves after failure_threshold (3) failures
        assert all(address == new.address for _, _, _, address, ready in after[turned:] if ready)
        reasons = [reason for _, ok, reason, _, _ in after if not ok]
        assert set(reasons) <= {Reason.REFUSED, Reason.NO_MASTER} and Reason.NO_MASTER in reasons
        assert reasons.index(Reason.NO_MASTER) > 0  # refused first: o_down only after down-after-milliseconds
        print(f"sentinel failover: kill -> 503 {not_ready:.2f}s, kill -> +switch-master {switched:.2f}s, "
              f"kill -> ready on the new master {ready_again:.2f}s")

    async def test_real_agent_with_both_passwords_never_shows_them(self, shared_sentinels: SentinelSet) -> None:
        """The agent process, the data password in the URL and the sentinels' in the environment: ready, and
        neither password appears in /status, /metrics, /readyz or the logs."""
        agent = AgentProcess("--log-format", "json", env={
            "READINESS_AGENT_REDIS_URL": shared_sentinels.url(),
            "READINESS_AGENT_REDIS_SENTINEL_PASSWORD": SENTINEL_SECRET,
        })
        try:
            await asyncio.to_thread(agent.start)
            sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
            try:
                await sampler.expect(200, after=0, timeout=10)
            finally:
                sampler.stop()
            bodies = [(await asyncio.to_thread(agent.get, path))[1]
                      for path in ("/status", "/metrics", "/readyz?verbose")]
        finally:
            output = agent.output()
            agent.close()
        status = json.loads(bodies[0])
        assert status["checks"]["redis"]["target"] == parse_sentinel_url(shared_sentinels.url()).redacted
        assert status["settings"]["redis_sentinel_password"] == {"value": "***", "source": "env"}
        for text in (*bodies, output):
            assert DATA_SECRET not in text and SENTINEL_SECRET not in text

    async def test_graceful_failover_is_followed_on_the_held_subscription(
            self, shared_sentinels: SentinelSet, tmp_path: Path) -> None:
        """SENTINEL FAILOVER (no connection dropped): +switch-master moves the check to the promoted replica at
        once; the agent stays ready throughout, and no check passes on the demoted node after the switch."""
        secret = tmp_path / "sentinel-password"
        secret.write_text(SENTINEL_SECRET + "\n")
        agent = build_agent(sentinel_settings(shared_sentinels, secret))
        recorder = Recorder(agent)
        agent.store.subscribe(recorder)
        old = shared_sentinels.current_master()
        new = next(n for n in shared_sentinels.nodes if n is not old)
        resolver = agent.checks["redis"].topology.resolver  # type: ignore[attr-defined]
        await agent.start()
        try:
            await asyncio.wait_for(agent.store.ready.wait(), 10)
            await until_async(lambda: resolver.subscribed, 5, "a held subscription")
            assert shared_sentinels.sentinels[0].cli("SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
            await until_async(lambda: resolver.switches, 20, "+switch-master")
            switched = time.monotonic()
            await until_async(lambda: recorder.seen[-1][1] and recorder.seen[-1][3] == new.address, 2,
                        "a passing check on the new master")
            followed = time.monotonic() - switched
        finally:
            await agent.stop()
        first_ready = next(i for i, s in enumerate(recorder.seen) if s[4])
        assert all(ready for *_, ready in recorder.seen[first_ready:])  # once ready, never not ready
        assert all(address == new.address for at, ok, _, address, _ in recorder.seen if ok and at >= switched)
        assert followed < 1.0
        print(f"graceful failover: +switch-master -> passing on the new master {followed:.3f}s")
