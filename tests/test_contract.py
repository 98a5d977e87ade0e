"""docs/design.md's figures, defaults and reasons that no other test pins, each held to the code in-process and
without I/O (docs/contract-tests.md ties every other claim of design.md to the test that proves it).

``TestFigures`` pins a figure twice: its words must be in design.md and the code's constant must be that figure,
so neither can change alone; the behaviour behind it is tested elsewhere with a small injected value.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.checks.config import MAX_CHECKS
from agent.checks.http import MAX_BODY
from agent.checks.http_config import DEFAULT_STATUS
from agent.checks.redis import connection, sentinel
from agent.checks.redis.check import RedisCheck
from agent.checks.redis.errors import ResponseError
from agent.checks.redis.iam import AdcFetcher, IamError, TokenProvider
from agent.checks.redis.protocol import DEFAULT_LIMITS, MIB
from agent.checks.redis.replies import classify
from agent.checks.redis.sentinel import SentinelResolver
from agent.config import platform, secretfile
from agent.config.loader import MAX_DEPTH, MAX_FILE_BYTES, load_settings
from agent.config.sentinel_url import parse_sentinel_url
from agent.config.settings import BY_NAME, DEFAULT_TIMING, Platform, Settings
from agent.core import history
from agent.core.agent import Agent
from agent.core.model import CheckResult, Reason, State
from agent.core.verdict import CheckVerdict
from agent.logs import verdict_log, writer
from agent.server import drain_token, limits, scrape, watch
from agent.server.metrics import Metrics
from agent.server.render_cache import RenderCache
from harness.hostile_redis import HostileRedis
from tests.support.storestub import Clock, StubCheck
from tests.test_readme_sync import default_matches, first_table, section

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
TEXT = " ".join(DESIGN.read_text().split())  # words as a reader sees them, line breaks ignored


def settings(**flags: str) -> Settings:
    return load_settings({"platform": "local", "redis_url": "redis://127.0.0.1:1/0", **flags}, {},
                         lambda _e: (Platform.LOCAL, "test"))


def default_of(func: Callable[..., object], key: str) -> object:
    """The default of ``func``'s (or a class's constructor's) parameter ``key``."""
    return inspect.signature(func).parameters[key].default


# (id, words in design.md, the code's value, the value those words mean)
FIGURES = [
    ("watch-port", "(default 9181;", BY_NAME["watch_port"].default, 9181),
    ("watch-watchers", "at most 32 watchers", watch.MAX_WATCHERS, 32),
    ("watch-retry-after", "503** with `Retry-After: 5`", watch.REFUSED_RETRY_AFTER, "5"),
    ("watch-retry-field", "opens with `retry: 1000`", watch.RETRY_MS, 1000),
    ("watch-heartbeat", "`: heartbeat` comment lines every 5 s", watch.HEARTBEAT, 5.0),
    ("watch-slow-reader", "takes no bytes for 10 s is closed", watch.WRITE_TIMEOUT, 10.0),
    ("watch-connections", "At most 64 connections on the listener", watch.MAX_CONNECTIONS, 64),
    ("http-idle", "must complete a request within 10 s", limits.IDLE_TIMEOUT, 10.0),
    ("http-drain-grace", "in-flight requests get 0.25 s", limits.SHUTDOWN_TIMEOUT, 0.25),
    ("http-error-log", "one WARNING line per kind per 10 s", limits.LOG_PERIOD, 10.0),
    ("http-cap", "at most min(1000, limit − 256) connections (at least 8",
     (limits.connection_cap(1 << 20), limits.connection_cap(1024), limits.connection_cap(100)), (1000, 768, 8)),
    ("scrape-reuse", "A body is then reused for **1 s**", scrape.REUSE_SECONDS, 1.0),
    ("scrape-formats", "keeps at most 8 formats cached", default_of(RenderCache, "max_keys"), 8),
    ("reads-reply", "stops at 8 MiB per reply", DEFAULT_LIMITS.reply_bytes, 8 * MIB),
    ("reads-elements", "250,000 elements per reply", DEFAULT_LIMITS.elements, 250_000),
    ("reads-depth", "16 levels of nesting", DEFAULT_LIMITS.depth, 16),
    ("reads-line", "64 KiB per line", DEFAULT_LIMITS.line_bytes, 64 * 1024),
    ("reads-rate", "16 MiB per second over all connections", DEFAULT_LIMITS.bytes_per_second, 16 * MIB),
    ("keepalive", "TCP keepalive (10 s idle, 5 s × 3 probes)", dict(connection.KEEPALIVE),
     {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}),
    ("iam-margin", "`min(5 min, lifetime / 2)`", default_of(TokenProvider, "margin"), 300.0),
    ("iam-backoff", "attempts back off from 0.5 s doubling to 30 s (±20 %)",
     tuple(default_of(TokenProvider, k) for k in ("min_backoff", "max_backoff", "jitter")),
     (0.5, 30.0, 0.2)),
    ("sentinel-resubscribe", "0.1 s to 5 s apart",
     (sentinel.RESUBSCRIBE_DELAYS[0], sentinel.RESUBSCRIBE_DELAYS[-1]), (0.1, 5.0)),
    ("http-body", "a body over 64 KiB not read", MAX_BODY, 64 * 1024),
    ("http-status", "default `200-399`", DEFAULT_STATUS, (200, 399)),
    ("history", "the last 50 transitions", history.SIZE, 50),
    ("log-reminder", "a **reminder** every 30 s", verdict_log.REMIND_EVERY, 30.0),
    ("log-reason-gap", "at most one line per second", verdict_log.MIN_GAP, 1.0),
    ("log-queue", "queued (1 MiB)", writer.BUDGET, 1 << 20),
    ("log-exit", "most 0.25 s to write what is queued", writer.CLOSE_WAIT, 0.25),
    ("token-file", "at most 64 KiB holding 1–4096 visible ASCII",
     (secretfile.MAX_BYTES, drain_token._TOKEN.pattern), (64 * 1024, r"[\x21-\x7e]{1,4096}")),
    ("config-file", "at most 64 KiB, strict UTF-8", MAX_FILE_BYTES, 64 * 1024),
    ("config-depth", "at most 16 levels deep", MAX_DEPTH, 16),
    ("config-checks", "at most 128 entries", MAX_CHECKS, 128),
    ("metadata", "within 0.5 s", default_of(platform.probe_metadata_server, "timeout"), 0.5),
]


class TestFigures:
    @pytest.mark.parametrize(("words", "actual", "expected"), [f[1:] for f in FIGURES], ids=[f[0] for f in FIGURES])
    def test_documented_figure_is_the_codes(self, words: str, actual: object, expected: object) -> None:
        """design.md says the figure, and the code's constant is that figure."""
        assert words in TEXT
        assert actual == expected


class TestDefaults:
    ROWS = first_table(section(DESIGN, "## Configuration"))

    def test_every_default_in_the_settings_table_is_the_declared_one(self) -> None:
        """Each row of design.md's settings table names real settings, and its default parses to theirs."""
        checked = 0
        for names_cell, default_cell, _ in self.ROWS:
            names = [n for n in re.findall(r"`([a-z0-9_]+)`", names_cell.split("(")[0]) if n in BY_NAME]
            assert names, names_cell
            cells = [c.strip() for c in default_cell.split(", ")] if len(names) > 1 and ", " in default_cell \
                else [default_cell] * len(names)
            for name, cell in zip(names, cells, strict=True):
                assert default_matches(name, cell), (name, cell)
                checked += 1
        assert checked >= 30

    def test_the_detection_bound_at_the_defaults_and_at_the_low_cost_profile(self) -> None:
        """3.42 s at the defaults; 14.22 s with ``--interval 10s`` (design.md, "Large fleets")."""
        assert "3.42 s at the defaults" in TEXT and "**14.22 s**" in TEXT
        assert settings().timing.detection_bound == pytest.approx(3.42)
        assert settings(interval="10s").timing.detection_bound == pytest.approx(14.22)

    def test_the_write_canary_ttl_follows_the_canary_interval(self) -> None:
        """``PX max(30 s, 3 × canary_interval)``: 30 s at the 10 s default, 60 s at 20 s."""
        assert "PX <max(30 s, 3 × canary_interval)>" in TEXT
        for every, ttl_ms in (("10s", 30_000), ("20s", 60_000)):
            check = RedisCheck(settings(redis_write_canary="true", redis_canary_interval=every).checks[0], 0.5)
            assert [p.ttl_ms for p in check.probes.probes] == [ttl_ms]  # type: ignore[attr-defined]


# The Reasons table's error replies (and the Checks section's) as the server words them.
REPLIES = [
    ("LOADING Redis is loading the dataset in memory", Reason.LOADING),
    ("NOAUTH Authentication required.", Reason.AUTH),
    ("WRONGPASS invalid username-password pair or user is disabled.", Reason.AUTH),
    ("DENIED Redis is running in protected mode", Reason.AUTH),
    ("NOPERM User u has no permissions to run the 'ping' command", Reason.AUTH),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", Reason.MASTER_LINK_DOWN),
    ("CLUSTERDOWN The cluster is down", Reason.CLUSTER_DOWN),
    ("TRYAGAIN Multiple keys request during rehashing of slot", Reason.CLUSTER_DOWN),
    ("READONLY You can't write against a read only replica.", Reason.READONLY),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist", Reason.READONLY),
    ("BUSY Redis is busy running a script.", Reason.BUSY),
    ("OOM command not allowed when used memory > 'maxmemory'.", Reason.OOM),
    ("NOREPLICAS Not enough good replicas to write.", Reason.NOREPLICAS),
    ("ERR max number of clients reached", Reason.MAXCLIENTS),
    ("ERR something nobody planned for", Reason.ERROR),
]


class TestReasons:
    @pytest.mark.parametrize(("reply", "reason"), REPLIES, ids=[r[0].split()[0] + "-" + r[1] for r in REPLIES])
    def test_error_reply_maps_to_its_reason(self, reply: str, reason: Reason) -> None:
        """An error reply is the reason design.md's Reasons table gives it, with its first line as the detail."""
        assert classify(ResponseError(reply)) == (reason, reply)


OK = CheckResult(True, 0.001)
MAINTENANCE = CheckResult(False, 0.001, Reason.MAINTENANCE, "the maintenance key exists")


def stub_agent(**flags: str) -> tuple[Agent, Clock, CollectorRegistry]:
    clock = Clock()
    agent = Agent(settings(**flags), [StubCheck("redis")], clock=clock)
    registry = CollectorRegistry()
    agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, agent.settings.window))
    return agent, clock, registry


def feed(agent: Agent, clock: Clock, result: CheckResult, at: float) -> None:
    clock.now = at
    agent.record("redis", result)


class TestMaintenance:
    @pytest.mark.parametrize(("mode", "readyz"), [("always", False), ("startup", True)])
    def test_maintenance_leaves_ready_at_once_and_readyz_follows_the_mode(self, mode: str, readyz: bool) -> None:
        """One ``maintenance`` observation takes a ready check to degraded in both modes; /readyz turns 503 in
        ``always`` mode, while in ``startup`` mode only draining turns it 503 after the first ready."""
        agent, clock, _ = stub_agent(readiness_mode=mode)
        feed(agent, clock, OK, 0.0)
        feed(agent, clock, OK, 0.5)
        assert agent.snapshot.ready
        feed(agent, clock, MAINTENANCE, 0.6)
        assert agent.snapshot.checks["redis"].state is State.DEGRADED
        assert agent.snapshot.ready is readyz


class TestMetricsFromTheStart:
    def test_failure_counters_exist_at_zero_and_startup_seconds_only_after_ready(self) -> None:
        """``check_failures_total{check,reason}`` is 0 for every reason before any check ran;
        ``startup_seconds`` has no sample before the first ready, then start → first ready."""
        agent, clock, registry = stub_agent()
        body = generate_latest(registry).decode()
        for reason in Reason:
            assert f'readiness_agent_check_failures_total{{check="redis",reason="{reason.value}"}} 0.0' in body
        assert not re.search(r"^readiness_agent_startup_seconds ", body, re.M)
        feed(agent, clock, OK, 1.0)
        feed(agent, clock, OK, 1.5)
        body = generate_latest(registry).decode()
        assert re.search(r"^readiness_agent_startup_seconds 1\.5$", body, re.M), body


class TestSchedule:
    def test_unsure_after_a_failure_while_ready_uses_retry_interval(self) -> None:
        """"unsure (ready after a failure) → ``retry_interval``": one failure leaves a check ready, and its next
        check comes ``retry_interval`` later, not ``interval``; the next success makes it ``interval`` again."""
        verdict = CheckVerdict(DEFAULT_TIMING)
        for now, ok in ((0.0, True), (0.5, True), (1.5, False)):
            verdict.observe(ok, now, None if ok else Reason.TIMEOUT)
        assert verdict.state is State.READY
        assert verdict.next_delay(1.5, rng=lambda: 0.5).seconds == DEFAULT_TIMING.retry_interval
        verdict.observe(True, 1.7, None)
        assert verdict.next_delay(1.7, rng=lambda: 0.5).seconds == DEFAULT_TIMING.interval


class TestIamLoggers:
    def test_google_auths_loggers_are_turned_down_to_errors(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A token fetch sets google-auth's loggers to ERROR before google-auth runs (here it fails at once:
        the credentials file named does not exist, so no metadata server is asked)."""
        names = ("google.auth", "google.auth.compute_engine._metadata", "google.auth.transport")
        before = {name: logging.getLogger(name).level for name in names}
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/readiness-agent-test.json")
        try:
            for name in names:
                logging.getLogger(name).setLevel(logging.NOTSET)
            with pytest.raises(IamError):
                AdcFetcher()()
            assert [logging.getLogger(name).level for name in names] == [logging.ERROR] * len(names)
            assert not logging.getLogger("google.auth").isEnabledFor(logging.WARNING)
        finally:
            for name, level in before.items():
                logging.getLogger(name).setLevel(level)


class FakeSentinel:
    """A sentinel that names ``master_port`` after ``delay`` seconds, or (``delay`` None) never answers."""

    def __init__(self, master_port: int, delay: float | None) -> None:
        self.master_port, self.delay = master_port, delay
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.delay is None:
                await reader.read()  # silent until the client gives up and closes
                return
            await asyncio.sleep(self.delay)  # the fake's behaviour, not a test oracle
            port = str(self.master_port).encode()
            writer.write(b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(port), port)
                         + b"*2\r\n$5\r\nflags\r\n$6\r\nmaster\r\n")
            await writer.drain()
            await reader.read()
        finally:
            writer.close()


async def discover(timeout: float, *sentinels: FakeSentinel) -> tuple[tuple[str, int], float]:
    """The master the sentinels name, and the seconds discovery took."""
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(s) for s in sentinels]
        resolver = SentinelResolver(parse_sentinel_url(f"redis+sentinel://{','.join(hosts)}/mymaster"),
                                    lambda: None, timeout)
        started = time.monotonic()
        try:
            address = await resolver.discover()
        finally:
            await resolver.close()
        return address, time.monotonic() - started


class TestSentinelHalfTimeout:
    async def test_a_silent_sentinel_is_waited_for_half_the_timeout_then_the_answers_decide(self) -> None:
        """One sentinel answers at once, one never does: discovery waits half the ``timeout`` for it (no less),
        then follows the one that answered, within the ``timeout``."""
        timeout = 0.6
        address, took = await discover(timeout, FakeSentinel(1111, 0.0), FakeSentinel(2222, None))
        assert address == ("127.0.0.1", 1111)
        assert timeout / 2 - 0.001 <= took < timeout  # 1 ms: the event loop's timer granularity

    async def test_a_sentinel_answering_within_half_the_timeout_still_votes(self) -> None:
        """The first answer does not decide: two sentinels answering 0.2 s later (within half of a 2 s
        ``timeout``) outvote the fast one, and discovery ends once all have answered."""
        address, took = await discover(2.0, FakeSentinel(1111, 0.0), FakeSentinel(2222, 0.2),
                                       FakeSentinel(2222, 0.2))
        assert address == ("127.0.0.1", 2222)
        assert 0.2 <= took < 1.0


class TestPingReply:
    async def test_ping_answering_another_simple_string_is_protocol(self) -> None:
        """A server answering ``PING`` with ``+HELLO`` (a proxy, a wrong port): ``protocol``, "PING did not
        answer PONG"."""
        async with HostileRedis("PING", "simple") as server:
            check = RedisCheck(settings(redis_url=server.url).checks[0], 1.0)
            try:
                result = await check.run()
            finally:
                await check.close()
        assert (result.ok, result.reason, result.detail) == (False, Reason.PROTOCOL, "PING did not answer PONG")
