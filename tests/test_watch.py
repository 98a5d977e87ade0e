"""``GET /watch``, the verdict pushed to the app as Server-Sent Events: the wire format of docs/design.md ("The
watch protocol"), the cap that refuses rather than evicts, coalescing for a slow reader, ``bye`` at the end.

The hub is fed by the real store (stub checks, a fake clock) and served by its real listener on localhost;
the client side is a raw aiohttp stream read line by line, so the bytes on the wire are what is asserted.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from agent.config.settings import DEFAULT_TIMING
from agent.core.model import CheckResult, ReadinessMode, Reason
from agent.core.store import VerdictStore
from agent.server.watch import WATCH_PATH, WatchHub, serve_watch
from harness.agent_process import run_cli
from harness.redis_server import free_port
from tests.support.storestub import Clock, StubCheck

STEP = 5.0  # seconds a test waits for one line (a bound only a broken agent reaches)


@dataclass
class Rig:
    store: VerdictStore
    clock: Clock
    hub: WatchHub
    url: str
    bound: list[str]

    def feed(self, at: float, ok: bool, reason: Reason | None = None) -> None:
        self.clock.now = at
        self.store.record("redis", CheckResult(ok, 0.001, reason, "", conclusive=not ok))

    def make_ready(self) -> None:
        """Ready at once (a reader scheduled only afterwards sees one event: ready)."""
        self.feed(0.0, True)
        self.feed(DEFAULT_TIMING.window + 0.01, True)
        assert self.store.snapshot.ready


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = Clock()
    store = VerdictStore([StubCheck("redis")], DEFAULT_TIMING, ReadinessMode.ALWAYS, 1000.0, clock)
    hub = WatchHub(lambda: store.snapshot, cap=2, heartbeat=0.2)
    store.subscribe(hub)
    port = free_port()
    async with serve_watch(hub, port) as bound:
        yield Rig(store, clock, hub, f"http://127.0.0.1:{port}{WATCH_PATH}", bound)


async def next_event(stream: aiohttp.StreamReader) -> tuple[str, dict[str, object] | None, list[str]]:
    """The next event or comment: (event name or ``:comment``, data, its raw lines)."""
    lines: list[str] = []
    async with asyncio.timeout(STEP):
        while True:
            line = (await stream.readline()).decode()
            if line == "":
                return "EOF", None, lines
            if line == "\n":
                if lines:
                    break
                continue
            lines.append(line.rstrip("\n"))
    if lines[0].startswith(":"):
        return lines[0], None, lines
    fields = dict(line.split(": ", 1) for line in lines if not line.startswith("retry:"))
    return fields["event"], json.loads(fields["data"]), lines


class TestWatchProtocol:
    async def test_current_verdict_at_once_then_each_change_then_heartbeats(self, rig: Rig) -> None:
        """retry:, the verdict at once, every change (a new reason too) with rising ids, nothing for a repeat."""
        async with aiohttp.ClientSession() as session, session.get(rig.url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            name, data, lines = await next_event(response.content)
            assert lines[0] == "retry: 1000" and lines[1] == "id: 0"
            assert (name, data) == ("verdict", {"ready": False, "state": "starting", "reason": "redis: starting",
                                                "draining": False})
            rig.feed(0.0, True)
            events = [await next_event(response.content)]
            rig.feed(DEFAULT_TIMING.window + 0.01, True)
            events.append(await next_event(response.content))
            assert [e[1] for e in events] == [
                {"ready": False, "state": "stabilizing", "reason": "redis: stabilizing", "draining": False},
                {"ready": True, "state": "ready", "reason": None, "draining": False}]
            rig.feed(1.0, True)  # the same verdict: nothing sent
            rig.feed(1.1, False, Reason.REFUSED)
            refused = await next_event(response.content)
            rig.feed(1.3, False, Reason.LOADING)  # still not ready, a new reason: sent
            loading = await next_event(response.content)
            assert refused[1] == {"ready": False, "state": "degraded", "reason": "redis: refused", "draining": False}
            assert loading[1] is not None and loading[1]["reason"] == "redis: loading"
            assert [e[2][0] for e in (*events, refused, loading)] == ["id: 1", "id: 2", "id: 3", "id: 4"]
            assert (await next_event(response.content))[0] == ": heartbeat"

    async def test_full_cap_refuses_the_newcomer_and_keeps_every_watcher(self, rig: Rig) -> None:
        """At the cap a new watcher gets 503 with Retry-After; the two connected ones still get the next change."""
        async with aiohttp.ClientSession() as session:
            first, second = await session.get(rig.url), await session.get(rig.url)
            for response in (first, second):
                assert (await next_event(response.content))[0] == "verdict"
            async with session.get(rig.url) as third:
                assert third.status == 503 and third.headers["Retry-After"] == "5"
            assert rig.hub.refused == 1 and len(rig.hub.watchers) == 2
            rig.make_ready()
            for response in (first, second):
                assert (await next_event(response.content))[1] is not None
            first.close()
            second.close()

    async def test_a_slow_reader_gets_the_latest_verdict_coalesced(self, rig: Rig) -> None:
        """A thousand changes while the stream is not scheduled: one pending event, the last one, is sent."""
        async with aiohttp.ClientSession() as session, session.get(rig.url) as response:
            await next_event(response.content)
            for k in range(1000):  # no await: the stream's task cannot run in between
                rig.feed(2.0 + k * 0.001, False, Reason.LOADING if k % 2 else Reason.REFUSED)
            (watcher,) = rig.hub.watchers
            assert watcher.pending is not None and b'"redis: loading"' in watcher.pending
            _, data, lines = await next_event(response.content)
            assert data == {"ready": False, "state": "starting", "reason": "redis: loading", "draining": False}
            assert lines[0] == "id: 1000"  # the last of 1000 changes (ids count changes, not events sent)
            assert (await next_event(response.content))[0] == ": heartbeat"  # nothing else was queued

    async def test_close_says_bye_ends_every_stream_and_refuses_new_ones(self, rig: Rig) -> None:
        """The end of the drain: ``bye`` then EOF on each stream; a watcher arriving after it gets 503."""
        async with aiohttp.ClientSession() as session, session.get(rig.url) as response:
            await next_event(response.content)
            await rig.hub.close()
            assert (await next_event(response.content))[:2] == ("bye", {"reason": "agent stopping"})
            assert (await next_event(response.content))[0] == "EOF"
            async with session.get(rig.url) as late:
                assert late.status == 503

    async def test_listens_on_the_loopback_addresses_only(self, rig: Rig) -> None:
        """127.0.0.1 (and ::1 where the pod has IPv6 loopback), never a wildcard address."""
        port = rig.url.split(":")[2].split("/")[0]
        assert rig.bound[0] == f"127.0.0.1:{port}"
        assert rig.bound[1:] in ([], [f"[::1]:{port}"])


class TestWatchPortSetting:
    def test_bad_value_and_a_taken_port_exit_2_with_one_line(self) -> None:
        """--watch-port 70000 is a usage error; a port set explicitly that is taken is one too."""
        bad = run_cli("run", "--watch-port", "70000")
        assert bad.returncode == 2 and "--watch-port '70000'" in bad.stderr and len(bad.stderr.splitlines()) == 1
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            taken = run_cli("run", "--listen", "127.0.0.1:0", "--redis-url", f"redis://127.0.0.1:{free_port()}/0",
                            "--watch-port", str(port))
        assert taken.returncode == 2, taken
        assert taken.stderr.startswith(f"readiness-agent: error: cannot listen on localhost port {port} for /watch "
                                       "(--watch-port): "), taken
        assert taken.stderr.endswith("address already in use\n") and len(taken.stderr.splitlines()) == 1, taken
