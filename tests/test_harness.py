"""The fault-injection harness really produces the faults it claims, against a real redis-server.

Other tests trust these helpers as their oracle ("the server is now LOADING"), so each recipe and proxy mode
is checked here by what a client actually observes on the wire.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import redis_server
from harness.fault_proxy import FaultProxy, ProxyThread
from harness.redis_server import (
    ConnectionClosedError,
    RedisProcess,
    RespConnection,
    RespError,
    encode_command,
    free_port,
)
from harness.wait import until
from tests.support.fixtures import ProxyFactory, RedisFactory

ROOT = Path(__file__).resolve().parent.parent


def is_error(reply: object, code: str) -> bool:
    """True if ``reply`` is an error reply whose first word is ``code``."""
    return isinstance(reply, RespError) and reply.code == code


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (the harness reaps its children, so no zombie lingers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def ping_via(address: tuple[str, int], timeout: float = 1.0) -> object:
    """PING over a fresh raw connection from a worker thread (the proxy runs in this test's loop)."""

    def run() -> object:
        with RespConnection(*address, timeout=timeout) as conn:
            return conn.command("PING")

    return await asyncio.to_thread(run)


async def connect_via(address: tuple[str, int], timeout: float = 1.0) -> RespConnection:
    """Open a raw connection from a worker thread."""
    return await asyncio.to_thread(lambda: RespConnection(*address, timeout=timeout))


class TestRespConnection:
    def test_encodes_commands_as_arrays_of_bulk_strings(self) -> None:
        """Every argument, whatever its type, is sent as a length-prefixed bulk string."""
        assert encode_command("SET", "k", 1) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"

    def test_decodes_every_reply_type(self, redis_proc: RedisProcess) -> None:
        """Simple strings, integers, bulk strings, nil and nested arrays decode to Python values."""
        assert redis_proc.cli("SET", "k", "v") == "OK"
        assert redis_proc.cli("INCR", "n") == 1
        assert redis_proc.cli("GET", "k") == "v"
        assert redis_proc.cli("GET", "missing") is None
        assert redis_proc.cli("EVAL", "return {1, {'a', false}}", 0) == [1, ["a", None]]

    def test_error_replies_are_returned_as_values(self, redis_proc: RedisProcess) -> None:
        """An error reply is a RespError value with its code, not an exception."""
        reply = redis_proc.cli("NOSUCHCOMMAND")
        assert is_error(reply, "ERR")
        assert "unknown command" in str(reply)


class TestFreePort:
    def test_ports_avoid_the_ephemeral_range_and_repeats(self) -> None:
        """Ports come from outside ip_local_port_range and are never handed out twice."""
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        ports = [free_port() for _ in range(20)]
        assert len(set(ports)) == len(ports)
        assert all(not low <= p <= high for p in ports)


class TestRedisProcess:
    def test_start_answers_ping_as_itself(self, redis_proc: RedisProcess) -> None:
        """A started server answers PING, and INFO reports our pid and port."""
        assert redis_proc.ping() == "PONG"
        info = redis_proc.info("server")
        assert info["process_id"] == str(redis_proc.pid)
        assert info["tcp_port"] == str(redis_proc.port)
        assert redis_proc.url == f"redis://127.0.0.1:{redis_proc.port}/0"
        assert redis_proc.cli("CONFIG", "GET", "save") == ["save", ""]

    def test_kill_leaves_a_refusing_port(self, redis_proc: RedisProcess) -> None:
        """After SIGKILL the process is reaped and the port refuses connections."""
        pid = redis_proc.pid
        redis_proc.kill()
        assert not pid_alive(pid)
        with pytest.raises(ConnectionRefusedError):
            redis_proc.ping()

    def test_restart_keeps_port_and_data_dir(self, redis_proc: RedisProcess) -> None:
        """restart() comes back on the same port, loads the dump from the same dir, with a new pid."""
        port, pid = redis_proc.port, redis_proc.pid
        redis_proc.cli("SET", "survivor", "yes")
        assert redis_proc.cli("SAVE") == "OK"
        redis_proc.restart()
        assert (redis_proc.port, redis_proc.cli("GET", "survivor")) == (port, "yes")
        assert redis_proc.pid != pid

    def test_restart_takes_new_arguments(self, redis_proc: RedisProcess) -> None:
        """restart(extra_args) replaces the extra arguments; kill=True restarts after SIGKILL."""
        redis_proc.restart(["--maxmemory", "3mb"], kill=True)
        assert redis_proc.cli("CONFIG", "GET", "maxmemory") == ["maxmemory", str(3 * 1024 * 1024)]

    def test_stop_is_graceful(self, redis_proc: RedisProcess) -> None:
        """stop() ends the server with SIGTERM and the port refuses afterwards."""
        pid = redis_proc.pid
        redis_proc.stop()
        assert not pid_alive(pid)
        assert "ready to exit" in redis_proc.log_path.read_text()

    def test_pause_accepts_but_never_answers(self, redis_proc: RedisProcess) -> None:
        """A SIGSTOPped server completes the TCP handshake but answers nothing until SIGCONT."""
        redis_proc.pause()
        with redis_proc.connect(timeout=0.2) as conn, pytest.raises(TimeoutError):
            conn.command("PING")
        redis_proc.resume()
        assert redis_proc.ping() == "PONG"

    def test_close_leaves_no_process_and_no_dir(self) -> None:
        """close() kills the server (even a paused one) and removes its temp dir."""
        proc = RedisProcess().start()
        pid, root = proc.pid, proc.root
        proc.pause()
        proc.close()
        assert not pid_alive(pid)
        assert not root.exists()

    def test_a_taken_port_is_replaced_before_anyone_saw_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """If another listener grabs the chosen port before the first start, a fresh port is used."""
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", free_port()))
            squatter.listen()
            ports = iter([squatter.getsockname()[1], free_port()])
            monkeypatch.setattr(redis_server, "free_port", lambda host="127.0.0.1": next(ports))
            with RedisProcess() as proc:
                proc.start()
                assert proc.port != squatter.getsockname()[1]
                assert proc.ping() == "PONG"

    def test_a_published_port_is_never_replaced(self) -> None:
        """Once the port was read (and maybe handed out), a taken port makes start() fail, not move."""
        with RedisProcess(start_timeout=0.5) as proc, socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", proc.port))
            squatter.listen()
            with pytest.raises(RuntimeError, match="did not start"):
                proc.start()
            assert proc.port == squatter.getsockname()[1]

    def test_requirepass_refuses_anonymous_and_wrong_passwords(self, redis_factory: RedisFactory) -> None:
        """With requirepass, PING gets NOAUTH, a wrong password WRONGPASS, the right one PONG."""
        proc = redis_factory(requirepass="s3cret/pw")
        assert is_error(proc.ping(), "NOAUTH")
        assert is_error(proc.cli("PING", auth="wrong"), "WRONGPASS")
        assert proc.cli("PING") == "PONG"
        assert proc.url == f"redis://:s3cret%2Fpw@127.0.0.1:{proc.port}/0"

    def test_set_password_changes_it_at_runtime(self, redis_proc: RedisProcess) -> None:
        """set_password() rotates requirepass; cli() follows it."""
        redis_proc.set_password("rotated")
        assert is_error(redis_proc.ping(), "NOAUTH")
        assert redis_proc.cli("PING") == "PONG"


class TestRedisProcessFaults:
    def test_start_loading_gives_a_real_loading_phase(self, redis_proc: RedisProcess) -> None:
        """PING answers -LOADING promptly for about the requested time, INFO says loading:1, then PONG."""
        seconds = 1.5
        redis_proc.start_loading(seconds)
        began = time.monotonic()
        assert is_error(redis_proc.ping(timeout=0.5), "LOADING")
        assert redis_proc.info("persistence")["loading"] == "1"
        answered = time.monotonic()
        assert answered - began < 0.5  # replies come promptly, not once per few seconds
        redis_proc.wait_loaded(timeout=seconds * 2 + 1)
        assert time.monotonic() - began >= seconds / 3  # "roughly": the load rate varies with machine load
        assert redis_proc.cli("DBSIZE") == int(seconds * 14_000)

    def test_orphan_replica_answers_masterdown(self, redis_proc: RedisProcess) -> None:
        """A replica whose master died reports master_link_status:down and refuses PING with MASTERDOWN."""
        redis_proc.become_orphan_replica()
        info = redis_proc.info("replication")
        assert (info["role"], info["master_link_status"]) == ("slave", "down")
        assert is_error(redis_proc.ping(), "MASTERDOWN")

    def test_orphan_replica_serving_stale_data_answers_pong(self, redis_proc: RedisProcess) -> None:
        """With replica-serve-stale-data yes the same replica still answers PONG: only INFO shows the fault."""
        redis_proc.become_orphan_replica(serve_stale_data=True)
        assert redis_proc.info("replication")["master_link_status"] == "down"
        assert redis_proc.ping() == "PONG"

    def test_busy_script_gives_busy_until_killed(self, redis_proc: RedisProcess) -> None:
        """A looping EVAL makes PING answer -BUSY; SCRIPT KILL ends it and PING answers PONG again."""
        script = redis_proc.start_busy_script()
        assert is_error(redis_proc.ping(), "BUSY")
        reply = redis_proc.end_busy_script(script)
        assert isinstance(reply, RespError) and "killed" in reply.message
        assert redis_proc.ping() == "PONG"

    def test_debug_sleep_blocks_without_an_error(self, redis_proc: RedisProcess) -> None:
        """During DEBUG SLEEP connections open but PING gets no reply at all; afterwards PONG."""
        sleeper = redis_proc.debug_sleep(0.6)
        with redis_proc.connect(timeout=0.2) as conn, pytest.raises(TimeoutError):
            conn.command("PING")
        assert sleeper.wait(timeout=0.6 * 2 + 1) == "OK"
        assert redis_proc.ping() == "PONG"

    def test_broken_persistence_gives_misconf(self, redis_proc: RedisProcess) -> None:
        """A failed BGSAVE with save points configured makes PING answer -MISCONF; repair restores PONG."""
        redis_proc.break_persistence()
        assert is_error(redis_proc.ping(), "MISCONF")
        assert redis_proc.info("persistence")["rdb_last_bgsave_status"] == "err"
        redis_proc.repair_persistence()
        assert redis_proc.ping() == "PONG"

    def test_no_misconf_without_save_points(self, redis_proc: RedisProcess) -> None:
        """With the default --save "" a failed BGSAVE does not refuse PING (why the recipe sets save)."""
        shutil.rmtree(redis_proc.dir)
        redis_proc.cli("BGSAVE")
        until(lambda: redis_proc.info("persistence")["rdb_last_bgsave_status"] == "err", 5, what="failed BGSAVE")
        assert redis_proc.ping() == "PONG"

    def test_exhausted_clients_reject_new_connections(self, redis_proc: RedisProcess) -> None:
        """With maxclients held, a new connection is greeted by the error and closed; release frees it."""
        # The helper's own CONFIG SET connection may still count for a moment, hence not exactly 3.
        assert 2 <= redis_proc.exhaust_clients(3) <= 3
        with redis_proc.connect(timeout=1.0) as conn:
            assert conn.read_reply() == RespError("ERR max number of clients reached")
            with pytest.raises(ConnectionError):
                conn.read_reply()
        redis_proc.release_clients()
        assert redis_proc.wait_for_ping(lambda r: r == "PONG", timeout=2) == "PONG"

    def test_exhausted_clients_with_a_password(self, redis_factory: RedisFactory) -> None:
        """exhaust_clients() also works on a password-protected server."""
        proc = redis_factory(requirepass="pw")
        assert 1 <= proc.exhaust_clients(2) <= 2
        with proc.connect(timeout=1.0) as conn:
            assert is_error(conn.read_reply(), "ERR")


class TestFaultProxy:
    async def test_pass_forwards_and_counts(self, redis_proc: RedisProcess, fault_proxy: ProxyFactory) -> None:
        """In pass mode PING goes through the proxy and each connection is counted."""
        proxy = await fault_proxy(redis_proc)
        assert await ping_via(proxy.address) == "PONG"
        assert await ping_via(proxy.address) == "PONG"
        assert proxy.accepted == 2
        assert proxy.url() == f"redis://127.0.0.1:{proxy.port}/0"

    async def test_refuse_refuses_new_and_closes_open(
        self, redis_proc: RedisProcess, fault_proxy: ProxyFactory
    ) -> None:
        """refuse: new connections get ECONNREFUSED, open ones see EOF; pass restores service on the port."""
        proxy = await fault_proxy(redis_proc)
        conn = await connect_via(proxy.address)
        try:
            assert await asyncio.to_thread(conn.command, "PING") == "PONG"
            await proxy.set_mode("refuse")
            with pytest.raises(ConnectionClosedError):
                await asyncio.to_thread(conn.read_reply)
        finally:
            conn.close()
        with pytest.raises(ConnectionRefusedError):
            await ping_via(proxy.address)
        await proxy.set_mode("pass")
        assert await ping_via(proxy.address) == "PONG"

    async def test_blackhole_never_answers_and_never_closes(
        self, redis_proc: RedisProcess, fault_proxy: ProxyFactory
    ) -> None:
        """blackhole: open and new connections stay open but nothing answers (a read times out)."""
        proxy = await fault_proxy(redis_proc)
        conn = await connect_via(proxy.address, timeout=0.3)
        try:
            assert await asyncio.to_thread(conn.command, "PING") == "PONG"
            await proxy.set_mode("blackhole")
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(conn.command, "PING")
            await proxy.set_mode("pass")  # a vanished peer does not come back
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(conn.command, "PING")
        finally:
            conn.close()
        await proxy.set_mode("blackhole")
        with pytest.raises(TimeoutError):
            await ping_via(proxy.address, timeout=0.3)
        assert proxy.accepted == 2  # the new connection was accepted, not refused

    async def test_reset_sends_rst(self, redis_proc: RedisProcess, fault_proxy: ProxyFactory) -> None:
        """reset: open connections and new ones are reset (ECONNRESET), not closed cleanly."""
        proxy = await fault_proxy(redis_proc)
        conn = await connect_via(proxy.address)
        try:
            assert await asyncio.to_thread(conn.command, "PING") == "PONG"
            await proxy.set_mode("reset")
            with pytest.raises(ConnectionResetError):
                await asyncio.to_thread(conn.read_reply)
        finally:
            conn.close()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            await ping_via(proxy.address)
        await proxy.set_mode("pass")
        assert await ping_via(proxy.address) == "PONG"

    async def test_latency_is_added_per_direction(self, redis_proc: RedisProcess, fault_proxy: ProxyFactory) -> None:
        """Upstream latency delays what the server receives; downstream latency delays what the client gets."""
        proxy = await fault_proxy(redis_proc)
        delay = 0.25
        conn = await connect_via(proxy.address, timeout=3)
        try:
            proxy.set_latency(upstream=delay)
            sent = time.monotonic()
            await asyncio.to_thread(conn.send, "SET", "k", "v")
            # Seen from the server directly (from a thread: the proxy needs this loop to run).
            await asyncio.to_thread(until, lambda: redis_proc.cli("GET", "k") == "v", 3, what="SET")
            arrived = time.monotonic() - sent
            assert await asyncio.to_thread(conn.read_reply) == "OK"
            assert delay <= arrived < delay * 2 + 1

            proxy.set_latency(downstream=delay)
            assert await asyncio.to_thread(conn.command, "SUBSCRIBE", "ch") == ["subscribe", "ch", 1]
            published = time.monotonic()
            assert redis_proc.cli("PUBLISH", "ch", "hi") == 1  # delivered to the proxy at once
            assert await asyncio.to_thread(conn.read_reply) == ["message", "ch", "hi"]
            assert delay <= time.monotonic() - published < delay * 2 + 1
        finally:
            conn.close()

    async def test_latency_adds_to_the_round_trip(self, redis_proc: RedisProcess, fault_proxy: ProxyFactory) -> None:
        """A PING round trip takes at least upstream + downstream latency."""
        proxy = await fault_proxy(redis_proc)
        proxy.set_latency(upstream=0.1, downstream=0.15)
        began = time.monotonic()
        assert await ping_via(proxy.address, timeout=3) == "PONG"
        assert 0.25 <= time.monotonic() - began < 0.25 * 2 + 1

    async def test_flap_alternates_and_drops_open_connections(
        self, redis_proc: RedisProcess, fault_proxy: ProxyFactory
    ) -> None:
        """flap(100): attempts alternate between refused and answered, and an open connection is closed."""
        proxy = await fault_proxy(redis_proc)
        conn = await connect_via(proxy.address)
        try:
            await proxy.flap(100)
            with pytest.raises(ConnectionClosedError):  # the first half-cycle is refuse
                await asyncio.to_thread(conn.read_reply)
        finally:
            conn.close()
        outcomes: list[str] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                reply = await ping_via(proxy.address, timeout=0.5)
                outcomes.append("up" if reply == "PONG" else "other")
            except ConnectionRefusedError:
                outcomes.append("refused")
            except ConnectionError:
                outcomes.append("dropped")  # accepted just before a refuse half-cycle closed it
            await asyncio.sleep(0.01)
        runs = [o for i, o in enumerate(outcomes) if i == 0 or outcomes[i - 1] != o]
        assert runs.count("up") >= 3 and runs.count("refused") >= 3, outcomes
        await proxy.set_mode("pass")  # ends flapping
        for _ in range(5):
            assert await ping_via(proxy.address) == "PONG"

    async def test_stop_closes_everything(self, redis_proc: RedisProcess) -> None:
        """stop() closes the listener and every open connection (EOF on the client)."""
        async with FaultProxy(redis_proc.address) as proxy:
            conn = await connect_via(proxy.address)
            assert await asyncio.to_thread(conn.command, "PING") == "PONG"
        try:
            with pytest.raises(ConnectionClosedError):
                await asyncio.to_thread(conn.read_reply)
        finally:
            conn.close()
        with pytest.raises(ConnectionRefusedError):
            await ping_via(proxy.address)


class TestProxyThread:
    def test_drives_a_proxy_from_sync_code(self, redis_proc: RedisProcess) -> None:
        """ProxyThread forwards, refuses and adds latency on command from a sync caller."""
        with ProxyThread(redis_proc.address) as proxy:
            with RespConnection(*proxy.address) as conn:
                assert conn.command("PING") == "PONG"
            proxy.set_mode("refuse")
            with pytest.raises(ConnectionRefusedError):
                RespConnection(*proxy.address)
            proxy.set_mode("pass")
            proxy.set_latency(upstream=0.1, downstream=0.1)
            began = time.monotonic()
            with RespConnection(*proxy.address) as conn:
                assert conn.command("PING") == "PONG"
            assert time.monotonic() - began >= 0.2
            assert proxy.accepted == 2
        with pytest.raises(ConnectionRefusedError):
            RespConnection(*proxy.address)

    def test_runs_as_a_separate_process(self, redis_proc: RedisProcess) -> None:
        """`python -m harness.fault_proxy PORT` prints its port and obeys mode commands on stdin."""
        with subprocess.Popen(
            [sys.executable, "-m", "harness.fault_proxy", str(redis_proc.port)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ) as child:  # fmt: skip
            assert child.stdin is not None and child.stdout is not None
            try:
                port = int(child.stdout.readline())
                with RespConnection("127.0.0.1", port) as conn:
                    assert conn.command("PING") == "PONG"
                child.stdin.write("refuse\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "ok"
                with pytest.raises(ConnectionRefusedError):
                    RespConnection("127.0.0.1", port)
                child.stdin.close()
                assert child.wait(5) == 0
            finally:
                if child.poll() is None:
                    child.kill()


class TestFixtures:
    def test_redis_factory_passes_arguments(self, redis_factory: RedisFactory) -> None:
        """redis_factory makes independent servers with custom arguments, started unless start=False."""
        a = redis_factory("--maxmemory", "2mb")
        b = redis_factory(start=False)
        assert a.cli("CONFIG", "GET", "maxmemory") == ["maxmemory", str(2 * 1024 * 1024)]
        assert a.port != b.port and not b.running
        with pytest.raises(ConnectionRefusedError):
            b.ping()
