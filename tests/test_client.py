"""readiness_client against real parts: the agent as a process (``--watch-port``), a real ``redis-server``, a
real aiohttp server, uvicorn running a Starlette app as its own process, and aiohttp's WebSocket client.

What is proven: the watcher fails closed while the agent cannot be reached (open when asked), follows each
change (Redis killed, back, the agent draining and gone) and reconnects; an upgrade is answered 503 with
``Retry-After`` while not ready (never 101 then 1011) and accepted once ready; the app's stop closes every open
WebSocket with 1012 spread over the drain window (aiohttp's shutdown, uvicorn's SIGTERM); with ``close`` as the
policy, Redis lost closes open sockets with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from readiness_client import (
    DEFAULT_URL,
    OpenSockets,
    ReadinessWatcher,
    Verdict,
    platform_drain_window,
    wait_ready,
    watch_url,
)
from readiness_client.aiohttp_gate import GATE

from harness.agent_process import ROOT, AgentProcess
from harness.redis_server import RedisProcess, free_port
from harness.wait import until, until_async
from tests.support.client_apps import aiohttp_app

BOUND = 10.0  # seconds: an upper bound only a broken client or agent reaches
WINDOW = 1.0  # the drain window the tests use
SLACK = 1.0


def agent_with_watch(redis: RedisProcess, watch_port: int) -> AgentProcess:
    return AgentProcess("--redis-url", redis.url, "--watch-port", str(watch_port), "--drain-seconds", "0.5")


async def next_verdict(changes: AsyncIterator[Verdict], what: str) -> Verdict:
    async with asyncio.timeout(BOUND):
        return await anext(changes)


@pytest.fixture
def watch_port() -> int:
    return free_port()


@pytest.fixture
def stopped_redis() -> Iterator[RedisProcess]:
    redis = RedisProcess()  # not started: the agent starts against a refused port, not ready
    try:
        yield redis
    finally:
        redis.close()


class TestWatcher:
    async def test_fails_closed_follows_every_change_and_reconnects(self, redis_proc: RedisProcess,
                                                                    watch_port: int) -> None:
        """No agent: not ready (fail closed), or ready with fail_open. Then ready, Redis killed (refused), back,
        the agent draining and gone (unreachable), and a new agent on the same port found again."""
        url = f"http://127.0.0.1:{watch_port}/watch"
        assert await wait_ready(0.2, url) is False
        open_watcher = ReadinessWatcher(url, fail_open=True)
        async with open_watcher, ReadinessWatcher(url, backoff_initial=0.05, backoff_max=0.2) as watcher:
            assert not watcher.ready and watcher.verdict.state == "unreachable"
            assert open_watcher.ready and not open_watcher.verdict.reachable
            agent = agent_with_watch(redis_proc, watch_port)
            try:
                await asyncio.to_thread(agent.start)
                assert await watcher.wait_ready(BOUND)
                changes = watcher.changes()
                assert (await next_verdict(changes, "ready")).ready
                await asyncio.to_thread(redis_proc.kill)
                down = await next_verdict(changes, "redis killed")
                assert not down.ready and down.reachable and down.reason == "redis: refused", down
                await asyncio.to_thread(redis_proc.restart)
                assert await watcher.wait_ready(BOUND)
                agent.signal(signal.SIGTERM)
                seen = [await next_verdict(changes, "drain")]
                while seen[-1].reachable:
                    seen.append(await next_verdict(changes, "agent gone"))
                assert any(v.draining and not v.ready for v in seen), seen
                assert not watcher.ready and "agent unreachable" in str(watcher.verdict.reason)
            finally:
                agent.close()
            connects = watcher.connects
            with agent_with_watch(redis_proc, watch_port):
                assert await watcher.wait_ready(BOUND)
                assert watcher.connects == connects + 1


async def client_until_closed(session: aiohttp.ClientSession, url: str) -> tuple[asyncio.Task[tuple[int, float]],
                                                                                  aiohttp.ClientWebSocketResponse]:
    """An open, echoing WebSocket and a task that ends with (close code, when) once the server closes it."""
    ws = await session.ws_connect(url)
    await ws.send_str("hello")
    assert (await ws.receive_str()) == "hello"

    async def wait_close() -> tuple[int, float]:
        msg = await ws.receive()
        return (msg.data if msg.type is aiohttp.WSMsgType.CLOSE else -1), time.monotonic()

    return asyncio.create_task(wait_close()), ws


async def assert_refused(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url)
    assert refused.value.status == 503 and refused.value.headers is not None
    assert refused.value.headers["Retry-After"] == "5"


def assert_spread_1012(closes: list[tuple[int, float]], since: float) -> None:
    codes = [code for code, _ in closes]
    times = [at - since for _, at in closes]
    assert codes == [1012] * len(closes), codes
    assert max(times) <= WINDOW + SLACK, times
    assert max(times) - min(times) >= 0.1, times  # spread, not all at once (8 uniform draws over 1 s)


class TestAiohttp:
    async def test_refuses_while_not_ready_accepts_when_ready_and_drains_with_1012(
            self, stopped_redis: RedisProcess, watch_port: int) -> None:
        """503 + Retry-After while Redis is down; 101 and echo once ready; shutdown closes 8 sockets with 1012."""
        with agent_with_watch(stopped_redis, watch_port):
            app = aiohttp_app(f"http://127.0.0.1:{watch_port}/watch", drain_window=WINDOW)
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            url = f"http://127.0.0.1:{port}/ws"
            async with aiohttp.ClientSession() as session:
                try:
                    await until_async(lambda: app[GATE].watcher.verdict.reachable, BOUND, what="the agent followed")
                    await assert_refused(session, url)
                    await asyncio.to_thread(stopped_redis.start)
                    await until_async(app[GATE].ready, BOUND, what="the gate ready")
                    clients = [await client_until_closed(session, url) for _ in range(8)]
                    assert app[GATE].open_count == 8
                    since = time.monotonic()
                finally:
                    await runner.cleanup()  # what run_app does on SIGTERM: on_shutdown drains
                closes = [task.result() for task, _ in clients if task.done()]
                assert len(closes) == 8
                assert_spread_1012(closes, since)
                for _, ws in clients:
                    await ws.close()
        assert app[GATE].refused == 1 and app[GATE].closed_by_code == {1012: 8}


@contextlib.contextmanager
def uvicorn(port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """uvicorn serving tests.support.client_apps:asgi in its own process; killed at the end whatever happens."""
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "tests.support.client_apps:asgi", "--host",
                             "127.0.0.1", "--port", str(port), "--lifespan", "on", "--log-level", "warning"],
                            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {proc.stdout.read() if proc.stdout else b''!r}")
            with contextlib.suppress(OSError), contextlib.closing(__import__("socket").create_connection(
                    ("127.0.0.1", port), timeout=0.2)):
                return True
            return False

        until(listening, BOUND, what="uvicorn listening")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class TestUvicorn:
    async def test_denial_response_1013_when_redis_goes_and_sigterm_drains_with_1012(
            self, stopped_redis: RedisProcess, watch_port: int) -> None:
        """uvicorn + Starlette: 503 + Retry-After by the denial extension while not ready; ready: accepted; Redis
        killed: open sockets closed with 1013 (policy close); back: accepted; SIGTERM: 8 sockets 1012, spread."""
        port = free_port()
        env = {"WATCH_URL": f"http://127.0.0.1:{watch_port}/watch", "DRAIN_WINDOW": str(WINDOW),
               "ON_REDIS_LOST": "close", "LOST_WINDOW": "0.5"}
        url = f"http://127.0.0.1:{port}/ws"
        with agent_with_watch(stopped_redis, watch_port) as agent, uvicorn(port, env) as server:
            async with aiohttp.ClientSession() as session:
                await assert_refused(session, url)
                await asyncio.to_thread(stopped_redis.start)
                agent.wait_status("/readyz", 200, BOUND)
                await until_async(lambda: _accepts(session, url), BOUND, what="uvicorn accepting upgrades")
                clients = [await client_until_closed(session, url) for _ in range(3)]
                killed = time.monotonic()
                await asyncio.to_thread(stopped_redis.kill)
                async with asyncio.timeout(BOUND):
                    lost = [await task for task, _ in clients]
                assert [code for code, _ in lost] == [1013] * 3, lost
                assert max(at for _, at in lost) - killed <= 0.5 + SLACK + 1.0, lost
                await assert_refused(session, url)

                await asyncio.to_thread(stopped_redis.restart)
                await until_async(lambda: _accepts(session, url), BOUND, what="accepting again")
                clients = [await client_until_closed(session, url) for _ in range(8)]
                since = time.monotonic()
                server.send_signal(signal.SIGTERM)
                async with asyncio.timeout(BOUND):
                    closes = [await task for task, _ in clients]
                assert_spread_1012(closes, since)
                assert await asyncio.to_thread(server.wait, BOUND) in (0, -signal.SIGTERM)
                for _, ws in clients:
                    await ws.close()


async def _accepts(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.ws_connect(url) as ws:
            await ws.close()
            return True
    except aiohttp.WSServerHandshakeError:
        return False


class TestEnvironment:
    """The pod spec states the watch URL and the drain window it sized terminationGracePeriodSeconds for
    (helm/examples/existing-app, deploy/gke); the app's code names neither."""

    def test_watch_url_and_drain_window_from_the_environment(self) -> None:
        url = "http://127.0.0.1:9190/watch"
        assert watch_url({}) == DEFAULT_URL
        assert watch_url({"READINESS_CLIENT_WATCH_URL": url}) == url
        assert platform_drain_window({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == 15.0
        assert platform_drain_window({"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                      "READINESS_CLIENT_DRAIN_WINDOW": "12.5"}) == 12.5
        with pytest.MonkeyPatch.context() as env:
            env.setenv("READINESS_CLIENT_WATCH_URL", url)
            env.setenv("READINESS_CLIENT_DRAIN_WINDOW", "3")
            watcher = ReadinessWatcher()
            assert watcher.url == url and OpenSockets(watcher).drain_window == 3.0
            assert ReadinessWatcher("http://[::1]:9181/watch").url == "http://[::1]:9181/watch"  # the app's wins

    @pytest.mark.parametrize(("name", "value"), [("READINESS_CLIENT_WATCH_URL", "127.0.0.1:9181"),
                                                 ("READINESS_CLIENT_DRAIN_WINDOW", "15s"),
                                                 ("READINESS_CLIENT_DRAIN_WINDOW", "-1"),
                                                 ("READINESS_CLIENT_DRAIN_WINDOW", "nan")])
    def test_a_bad_value_is_one_line_naming_it(self, name: str, value: str) -> None:
        read = watch_url if name.endswith("URL") else platform_drain_window
        with pytest.raises(ValueError) as caught:
            read({name: value})
        assert str(caught.value).startswith(f"invalid {name} {value!r}: ") and "\n" not in str(caught.value)
