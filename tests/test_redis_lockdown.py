"""Locked-down Redis, against real redis-server: renamed commands, ACL users without INFO, ROLE or channels,
RESP2-only servers, and ``-NOREPLICAS``. The check keeps to what the server allows and says so once."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from agent.checks.redis.check import RedisCheck
from agent.checks.redis.connection import RedisEndpoint
from agent.checks.redis.replies import classify
from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.model import Reason
from harness.hostile_redis import HostileRedis
from harness.redis_server import NO_INFO_ARGS, RESP2_ONLY_ARGS, RedisProcess, command_calls, parse_info
from tests.support.fixtures import RedisFactory

TIMEOUT = 1.0


def check_for(url: str, **extra: str) -> RedisCheck:
    settings = load_settings({"redis_url": url, **extra}, {}, lambda _e: (Platform.LOCAL, "test"))
    return RedisCheck(settings.checks[0], TIMEOUT)


def user_url(redis: RedisProcess, user: str = "probe", password: str = "probe-pass") -> str:
    return f"redis://{user}:{password}@127.0.0.1:{redis.port}/0"


async def results(check: RedisCheck, count: int = 3) -> list[tuple[bool, Reason | None, str]]:
    out = []
    try:
        for _ in range(count):
            result = await check.run()
            out.append((result.ok, result.reason, result.detail))
    finally:
        await check.close()
    return out


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "readiness_agent" and r.levelno == logging.WARNING]


class TestRenamedCommands:
    async def test_info_renamed_away_is_ready_with_one_warning(
            self, redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture) -> None:
        """``rename-command INFO ""``: every check passes on PING and ROLE, and one warning says so."""
        redis = redis_factory(*NO_INFO_ARGS)
        assert all(ok for ok, _, _ in await results(check_for(redis.url), 5))
        (warning,) = warnings_of(caplog)
        assert "INFO" in warning and "PING and ROLE" in warning

    async def test_resp2_only_server_works(self, redis_factory: RedisFactory) -> None:
        """A server without HELLO (Redis 5, or HELLO renamed away) passes: the agent never sends HELLO."""
        redis = redis_factory(*RESP2_ONLY_ARGS)
        assert [r[:2] for r in await results(check_for(redis.url))] == [(True, None)] * 3

    async def test_the_protocol_is_pinned_to_resp2(self, redis_proc: RedisProcess) -> None:
        """On a server that has HELLO, the agent still never calls it (commandstats shows no hello)."""
        assert all(ok for ok, _, _ in await results(check_for(redis_proc.url)))
        stats = parse_info(str(redis_proc.cli("INFO", "commandstats")))
        assert "cmdstat_ping" in stats and "cmdstat_hello" not in stats


class TestAclUsers:
    async def test_user_without_info_is_ready_not_auth(
            self, redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
        """An ACL user without +info passes with one warning; it is never reported as ``auth``."""
        redis_proc.add_user("probe", "probe-pass", "+@all", "-info")
        assert [r[:2] for r in await results(check_for(user_url(redis_proc)), 4)] == [(True, None)] * 4
        assert len(warnings_of(caplog)) == 1

    async def test_user_with_ping_only_is_ready_with_one_warning(
            self, redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
        """A user allowed PING alone (no INFO, ROLE or CLIENT) passes on PING, and one warning names it."""
        redis_proc.add_user("probe", "probe-pass", "+ping")
        assert [r[:2] for r in await results(check_for(user_url(redis_proc)), 4)] == [(True, None)] * 4
        (warning,) = warnings_of(caplog)
        assert "PING alone" in warning and "probe-pass" not in warning

    async def test_user_without_wait_keeps_to_role_silently(
            self, redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
        """A user without WAIT (``-@connection``, or renamed) is judged by ROLE every check, without a warning."""
        redis_proc.add_user("probe", "probe-pass", "+@all", "-wait")
        before = command_calls(parse_info(str(redis_proc.cli("INFO", "commandstats"))))
        assert [r[:2] for r in await results(check_for(user_url(redis_proc)), 5)] == [(True, None)] * 5
        after = command_calls(parse_info(str(redis_proc.cli("INFO", "commandstats"))))
        assert warnings_of(caplog) == []
        # ROLE on the first check, on the one whose WAIT was refused, and on every one after
        assert after["role"] - before.get("role", 0) == 5

    async def test_a_server_whose_wait_errors_on_a_master_keeps_to_role(self) -> None:
        """A proxy answering WAIT with an error although ROLE says master: ROLE decides (all checks pass), and
        WAIT is not sent again, so the check does not pay two round trips every time (a fake: no Redis does it)."""
        async with HostileRedis("WAIT", "error") as server:
            assert [r[:2] for r in await results(check_for(server.url), 5)] == [(True, None)] * 5
            assert server.calls["WAIT"] == 1 and server.calls["ROLE"] == 5 and server.calls["PING"] == 6

    async def test_replica_state_is_still_seen_without_info(self, redis_proc: RedisProcess) -> None:
        """A user without +info on a replica whose master is gone: ``master_link_down`` (from ROLE)."""
        redis_proc.add_user("probe", "probe-pass", "+@all", "-info")
        redis_proc.become_orphan_replica(serve_stale_data=True)
        assert {r[1] for r in await results(check_for(user_url(redis_proc)))} == {Reason.MASTER_LINK_DOWN}

    async def test_noperm_on_ping_stays_auth(self, redis_proc: RedisProcess) -> None:
        """A user that may not even PING is an ``auth`` failure."""
        redis_proc.add_user("probe", "probe-pass", "+@all", "-ping")
        assert {r[1] for r in await results(check_for(user_url(redis_proc)))} == {Reason.AUTH}

    async def test_noperm_on_the_maintenance_key_is_not_auth(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """A user that may not read the maintenance key fails with ``error``, not ``auth``."""
        redis_proc.cli("ACL", "SETUSER", "probe", "reset", "on", ">probe-pass", "~app:*", "+@all")
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"checks: [{{name: cache, url: '{user_url(redis_proc)}', maintenance_key: 'ops:drain'}}]\n")
        settings = load_settings({}, {}, lambda _e: (Platform.LOCAL, "test"), config_file=str(cfg))
        outcome = await results(RedisCheck(settings.checks[0], TIMEOUT))
        assert {r[1] for r in outcome} == {Reason.ERROR}
        assert "NOPERM" in outcome[0][2]


class TestNoChannelPermission:
    async def test_detection_needs_no_pubsub_permission(self, redis_proc: RedisProcess) -> None:
        """A user without channels (Redis 7's default): one connection for many checks, and a kill seen at once."""
        redis_proc.add_user("probe", "probe-pass", "+@all")  # reset: resetchannels
        check = check_for(user_url(redis_proc))
        try:
            assert (await check.run()).ok
            opened = int(redis_proc.info("stats")["total_connections_received"])
            for _ in range(10):
                assert (await check.run()).ok
            # Only our own INFO connection is new: the check opened none after its first.
            assert int(redis_proc.info("stats")["total_connections_received"]) == opened + 1
            lost = asyncio.create_task(check.wait_lost())
            killed = time.monotonic()
            redis_proc.kill()
            await asyncio.wait_for(lost, 2)
            assert time.monotonic() - killed < 0.25
        finally:
            await check.close()


class TestNoReplicas:
    async def test_noreplicas_is_its_own_reason(self, redis_factory: RedisFactory) -> None:
        """A master with min-replicas-to-write and no replica refuses writes with -NOREPLICAS: ``noreplicas``."""
        redis = redis_factory("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
        endpoint = RedisEndpoint(check_for(redis.url).config, TIMEOUT)
        conn = await endpoint.connect()
        try:
            (reply,) = await conn.pipeline(("SET", "k", "v"))
        finally:
            await conn.aclose()
        assert isinstance(reply, Exception)
        assert classify(reply)[0] is Reason.NOREPLICAS
