"""The Redis check and the runner in-process, against real redis-server: reasons, bounds, connection hygiene."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from agent.checks.redis.check import RedisCheck
from agent.checks.redis.replies import classify, judge_info, parse_info
from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import Platform, Settings
from agent.core.model import Reason, State
from agent.server.metrics import Metrics
from harness.redis_server import RedisProcess
from harness.redis_server import parse_info as parse_server_info
from harness.wait import until_async


def settings_for(url: str, **flags: str) -> Settings:
    return load_settings({"redis_url": url, **flags}, {}, lambda _e: (Platform.LOCAL, "test"))


def check_for(url: str, timeout: float = 0.3, **flags: str) -> RedisCheck:
    return RedisCheck(settings_for(url, **flags).checks[0], timeout)


class TestInfoRules:
    def test_replica_link_down_fails(self) -> None:
        """A replica whose master link is down is not usable."""
        assert judge_info({"role": "slave", "master_link_status": "down"}, False) == (
            Reason.MASTER_LINK_DOWN, "replica's master link is down")

    def test_replica_link_up_passes_unless_master_required(self) -> None:
        """A healthy replica passes, unless the check requires the master."""
        info = {"role": "slave", "master_link_status": "up"}
        assert judge_info(info, False) is None
        assert judge_info(info, True) is not None

    def test_loading_flags(self) -> None:
        """loading:1 and async_loading:1 both mean loading."""
        assert judge_info(parse_info(b"# Persistence\r\nloading:1\r\n"), False)[0] is Reason.LOADING  # type: ignore[index]
        assert judge_info({"async_loading": "1"}, False)[0] is Reason.LOADING  # type: ignore[index]

    def test_classify_is_secret_free(self) -> None:
        """Classification details never echo arbitrary server text beyond the first line, and map prefixes."""
        from agent.checks.redis.errors import ResponseError

        assert classify(ResponseError("BUSY Redis is busy running a script"))[0] is Reason.BUSY
        assert classify(ResponseError("MISCONF Redis is configured to save RDB"))[0] is Reason.READONLY
        assert classify(ResponseError("MASTERDOWN Link with MASTER is down"))[0] is Reason.MASTER_LINK_DOWN
        assert classify(ResponseError("ERR max number of clients reached"))[0] is Reason.MAXCLIENTS
        assert classify(ResponseError("something odd\nsecond line"))[1] == "something odd"


class TestRedisCheck:
    async def test_ok_and_reuses_the_connection(self, redis_proc: RedisProcess) -> None:
        """A healthy Redis passes, and repeated checks reuse one connection (no connection churn)."""
        check = check_for(redis_proc.url)
        try:
            for _ in range(5):
                result = await check.run()
                assert result.ok, result
            clients = redis_proc.cli("CLIENT", "LIST")
            assert str(clients).count("cmd=") == 2  # our probe connection + the CLIENT LIST caller
        finally:
            await check.close()

    async def test_paused_server_times_out_within_the_bound(self, redis_proc: RedisProcess) -> None:
        """A paused (SIGSTOP) server gives reason timeout in about `timeout`, and the connection is discarded."""
        check = check_for(redis_proc.url, timeout=0.3)
        try:
            assert (await check.run()).ok
            redis_proc.pause()
            started = time.monotonic()
            result = await check.run()
            elapsed = time.monotonic() - started
            assert result.reason is Reason.TIMEOUT
            assert 0.3 <= elapsed < 0.3 * 2 + 1
            redis_proc.resume()
            # A reused connection would now read the stale reply of the timed-out PING (redis-py #2624).
            for _ in range(3):
                assert (await check.run()).ok
        finally:
            redis_proc.resume()
            await check.close()

    async def test_monitor_sees_a_kill_within_a_second(self, redis_proc: RedisProcess) -> None:
        """The held connection's watch returns within a second of SIGKILL."""
        check = check_for(redis_proc.url)
        try:
            assert (await check.run()).ok
            lost = asyncio.create_task(check.wait_lost())
            assert "name=readiness-agent" in str(redis_proc.cli("CLIENT", "LIST"))
            killed = time.monotonic()
            redis_proc.kill()
            await asyncio.wait_for(lost, 2)
            assert time.monotonic() - killed < 1.0
        finally:
            await check.close()

    async def test_password_file_is_reread_on_change(self, redis_factory: object, tmp_path: Path) -> None:
        """Rotating the password file (and the server's password) keeps the check passing."""
        redis = redis_factory(requirepass="first-pass")  # type: ignore[operator]
        pw = tmp_path / "pw"
        pw.write_text("first-pass\n")
        url = f"redis://127.0.0.1:{redis.port}/0"
        check = check_for(url, redis_password_file=str(pw))
        try:
            assert (await check.run()).ok
            redis.set_password("second-pass-now")
            pw.write_text("second-pass-now\n")
            redis.cli("CLIENT", "KILL", "TYPE", "normal")  # old sessions would stay logged in
            result = await check.run()
            if not result.ok:  # the first check may meet the killed connection: the next must pass
                result = await check.run()
            assert result.ok, result
        finally:
            await check.close()


    async def test_maintenance_key_takes_it_out(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """When the configured maintenance key exists the check fails with reason maintenance."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"checks: [{{name: cache, url: '{redis_proc.url}', maintenance_key: 'ops:drain'}}]\n")
        settings = load_settings({}, {}, lambda _e: (Platform.LOCAL, "test"), config_file=str(cfg))
        check = RedisCheck(settings.checks[0], 0.3)
        try:
            assert (await check.run()).ok
            redis_proc.cli("SET", "ops:drain", "1")
            result = await check.run()
            assert result.reason is Reason.MAINTENANCE
            redis_proc.cli("DEL", "ops:drain")
            assert (await check.run()).ok
        finally:
            await check.close()


class TestTcpCheck:
    async def test_tcp_check_ok_and_refused(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """A TCP check passes on an open port and fails with refused on a closed one."""
        from agent.checks.tcp import TcpCheck

        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"checks: [{{name: port, type: tcp, address: '127.0.0.1:{redis_proc.port}'}}]\n")
        settings = load_settings({}, {}, lambda _e: (Platform.LOCAL, "test"), config_file=str(cfg))
        check = TcpCheck(settings.checks[0], 0.3)
        assert (await check.run()).ok
        redis_proc.kill()
        assert (await check.run()).reason is Reason.REFUSED


class TestRefusedSaysWhere:
    """A ``refused`` detail names the host and port it was met at, and never a credential."""

    async def test_refused_names_host_and_port_not_the_password(self) -> None:
        """Redis and TCP checks against a port nobody listens on: ``connection refused (127.0.0.1:PORT)``."""
        from agent.checks.tcp import TcpCheck, TcpCheckConfig

        with socket.socket() as bound:  # bound, never listening: every connection to it is refused
            bound.bind(("127.0.0.1", 0))
            port = bound.getsockname()[1]
            check = check_for(f"redis://:s3cret-pw@127.0.0.1:{port}/0")
            try:
                redis = await check.run()
            finally:
                await check.close()
            tcp = await TcpCheck(TcpCheckConfig("port", True, ("127.0.0.1", port)), 0.3).run()
        assert (redis.reason, redis.detail) == (Reason.REFUSED, f"connection refused (127.0.0.1:{port})")
        assert (tcp.reason, tcp.detail) == (Reason.REFUSED, f"connection refused (127.0.0.1:{port})")

    async def test_closed_before_a_word_names_the_address(self) -> None:
        """A server that accepts and closes at once (a dying Redis, a proxy without upstream)."""
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        check = check_for(f"redis://127.0.0.1:{port}/0")
        try:
            result = await check.run()
        finally:
            await check.close()
            server.close()
            await server.wait_closed()
        assert result.reason is Reason.REFUSED
        assert result.detail.endswith(f" (127.0.0.1:{port})") and result.detail.startswith("connection "), result

    def test_an_unlocated_failure_and_ipv6(self) -> None:
        """Without a located error the words stay as they were; an IPv6 address is bracketed."""
        from agent.checks.redis.replies import at_peer
        from agent.config.values import host_port

        assert classify(ConnectionRefusedError(111, "Connect call failed")) == (Reason.REFUSED, "connection refused")
        located = at_peer(ConnectionRefusedError(111, "Connect call failed"), host_port("::1", 6379))
        assert isinstance(located, ConnectionRefusedError)
        assert classify(located) == (Reason.REFUSED, "connection refused ([::1]:6379)")
        assert at_peer(TimeoutError(), "h:1") is None


class TestRunner:
    async def test_no_task_or_connection_leak(self, redis_proc: RedisProcess) -> None:
        """Start, run through a kill and a restart, stop: every task ends and every connection closes."""
        before = len(asyncio.all_tasks())
        settings = settings_for(redis_proc.url, window="0.2", interval="0.3", retry_interval="0.1", timeout="0.3")
        agent = build_agent(settings)
        agent.store.subscribe(Metrics(CollectorRegistry(), lambda: agent.snapshot, settings.window))
        await agent.start()
        try:
            await asyncio.wait_for(agent.store.ready.wait(), 5)
            redis_proc.kill()
            await until_async(lambda: not agent.snapshot.ready, 5)
            redis_proc.restart()
            await asyncio.wait_for(agent.store.ready.wait(), 5)
        finally:
            await agent.stop()
        assert len(asyncio.all_tasks()) == before
        await until_async(lambda: str(redis_proc.cli("CLIENT", "LIST")).count("cmd=") == 1, 3)

    async def test_monitor_loss_triggers_a_recheck_before_the_interval(self, redis_proc: RedisProcess) -> None:
        """The server dropping the held connection counts nothing and triggers a re-check on a fresh one within 2 s
        (the interval is 5 s)."""
        settings = settings_for(redis_proc.url, window="0", interval="5s", retry_interval="0.1", timeout="0.3")
        agent = build_agent(settings)
        agent.store.subscribe(Metrics(CollectorRegistry(), lambda: agent.snapshot, settings.window))
        await agent.start()
        try:
            await asyncio.wait_for(agent.store.ready.wait(), 5)
            await until_async(lambda: agent.snapshot.checks["redis"].monitor_up, 5)
            runs = agent.snapshot.checks["redis"].checks_run
            redis_proc.cli("CLIENT", "KILL", "TYPE", "normal")
            started = time.monotonic()
            # Far sooner than the 5 s interval: the immediate re-check (1 run); the loss itself is no observation.
            await until_async(lambda: agent.snapshot.checks["redis"].checks_run >= runs + 1, 2)
            assert time.monotonic() - started < 2
            assert agent.connection_drops["redis"] == 1
            check = agent.snapshot.checks["redis"]
            assert check.state is State.READY and check.consecutive_failures == 0 and check.last is not None
            assert check.last.ok  # nothing failed
        finally:
            await agent.stop()


class TestNewClientView:
    """The proof that a new connection works, on an injected clock against a real redis-server."""

    async def test_a_new_connection_every_period_until_it_passes(self, redis_proc: RedisProcess) -> None:
        """Due after the period on a held connection; it fails like any check while a new client is refused,
        proves itself again at every check until it passes, and the held connection is kept throughout."""
        now = [0.0]
        check = RedisCheck(settings_for(redis_proc.url).checks[0], 0.5, clock=lambda: now[0])
        with redis_proc.connect() as admin:
            def opened() -> int:
                return int(parse_server_info(str(admin.command("INFO", "stats")))["total_connections_received"])

            try:
                assert (await check.run()).ok  # the held connection's own handshake is the first proof
                start = opened()
                now[0] = 29.9
                assert (await check.run()).ok
                assert opened() == start  # not due yet
                now[0] = 30.0
                assert (await check.run()).ok
                assert opened() == start + 1  # one new connection, closed again
                admin.command("CONFIG", "SET", "requirepass", "set-server-first")
                now[0] = 60.0
                for _ in range(2):  # due until it passes
                    result = await check.run()
                    assert (result.ok, result.reason, result.conclusive) == (False, Reason.AUTH, False)
                    assert result.detail == "a new connection: NOAUTH Authentication required."
                assert opened() == start + 3
                admin.command("CONFIG", "SET", "requirepass", "")
                assert (await check.run()).ok
                assert (await check.run()).ok
                assert opened() == start + 4  # proven at 60: not due again before 90
                assert str(admin.command("CLIENT", "LIST")).count("name=readiness-agent") == 1  # still held
            finally:
                await check.close()

    async def test_zero_turns_it_off(self, redis_proc: RedisProcess) -> None:
        """``0``: the held connection alone, however long it is held."""
        now = [0.0]
        config = settings_for(redis_proc.url, redis_fresh_connection_interval="0").checks[0]
        check = RedisCheck(config, 0.5, clock=lambda: now[0])
        try:
            assert (await check.run()).ok
            start = int(redis_proc.info("stats")["total_connections_received"])
            now[0] = 1e6
            assert (await check.run()).ok
            assert int(redis_proc.info("stats")["total_connections_received"]) == start + 1  # this INFO's own
        finally:
            await check.close()

    async def test_a_full_server_says_maxclients(self, redis_proc: RedisProcess) -> None:
        """At maxclients a new connection is told so and closed: the proof and a new check both say
        ``maxclients`` (the reply is kept as the reason for the commands pipelined behind it)."""
        now = [0.0]
        check = RedisCheck(settings_for(redis_proc.url).checks[0], 0.5, clock=lambda: now[0])
        newcomer = check_for(redis_proc.url)
        try:
            assert (await check.run()).ok
            redis_proc.cli("CONFIG", "SET", "maxclients", "1")  # the check's held connection is the one
            now[0] = 30.0
            proof, fresh = await check.run(), await newcomer.run()
            assert (proof.reason, proof.detail) == (Reason.MAXCLIENTS,
                                                    "a new connection: ERR max number of clients reached")
            assert (fresh.reason, fresh.detail) == (Reason.MAXCLIENTS, "ERR max number of clients reached")
        finally:
            await newcomer.close()
            await check.close()
