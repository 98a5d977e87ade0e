"""The HTTP layer in-process: every endpoint's status codes, bodies and content types, through aiohttp's test
client on the real app factory, with the real store driven by observations at explicit times."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.agent import Agent
from agent.core.model import CheckResult, Reason
from agent.server.app import make_app
from agent.server.metrics import Metrics
from tests.support.storestub import Clock, StubCheck

OK = CheckResult(True, 0.001)
REFUSED = CheckResult(False, 0.001, Reason.REFUSED, "connection refused")


class Harness:
    """The real agent (not started: observations are fed by the test) behind the real app."""

    def __init__(self, agent: Agent, clock: Clock, client: TestClient[Any, Any]) -> None:
        self.agent, self.clock, self.client = agent, clock, client

    def feed(self, name: str, result: CheckResult, at: float) -> None:
        self.clock.now = at
        self.agent.record(name, result)

    def make_ready(self, *names: str) -> None:
        for name in names:
            self.feed(name, OK, 0.0)
            self.feed(name, OK, 0.5)

    async def get(self, path: str, **kw: Any) -> tuple[int, str, str]:
        async with self.client.get(path, **kw) as response:
            return response.status, await response.text(), response.headers.get("Content-Type", "")


MakeHarness = Callable[..., Any]


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    """``await harness(checks={"redis": True}, token=None)``: an app over stub-named checks (name → required)."""
    clients: list[TestClient[Any, Any]] = []

    async def make(checks: dict[str, bool] | None = None, token: str | None = None) -> Harness:
        flags: dict[str, object] = {"platform": "local", "redis_url": "redis://127.0.0.1:1/0"}
        if token is not None:
            path = tmp_path / "token"
            path.write_text(token + "\n")
            flags["drain_token_file"] = str(path)
        settings = load_settings(flags, {}, lambda _e: (Platform.LOCAL, "test"))
        clock = Clock()
        stubs = [StubCheck(name, required=required) for name, required in (checks or {"redis": True}).items()]
        agent = Agent(settings, stubs, clock=clock)
        registry = CollectorRegistry()
        agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, settings.window))
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(agent, registry)))
        await client.start_server()
        clients.append(client)
        return Harness(agent, clock, client)

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


class TestProbes:
    async def test_readyz_follows_the_window(self, harness: MakeHarness) -> None:
        """503 before the window has passed, 200 ``ok`` after; both text/plain."""
        h = await harness()
        h.feed("redis", OK, 0.0)
        status, body, ctype = await h.get("/readyz")
        assert status == 503 and "[-]redis failed: stabilizing" in body and ctype.startswith("text/plain")
        h.feed("redis", OK, 0.5)
        assert await h.get("/readyz") == (200, "ok\n", "text/plain; charset=utf-8")

    async def test_verbose_lists_every_check(self, harness: MakeHarness) -> None:
        """?verbose lists one line per check, optional ones marked, then the verdict line."""
        h = await harness({"redis": True, "audit": False})
        h.make_ready("redis")
        h.feed("audit", REFUSED, 0.6)
        status, body, _ = await h.get("/readyz?verbose")
        assert status == 200
        assert body.splitlines() == ["[+]redis ok", "[-]audit failed: refused (optional)", "readyz check passed"]
        status, body, _ = await h.get("/readyz?verbose=0")
        assert (status, body) == (200, "ok\n")

    async def test_one_check_and_unknown_check(self, harness: MakeHarness) -> None:
        """/readyz/<check> answers for that check alone; an unknown name is 404."""
        h = await harness({"redis": True, "audit": False})
        h.make_ready("redis")
        assert (await h.get("/readyz/redis"))[0] == 200
        assert (await h.get("/readyz/audit"))[0] == 503
        status, body, _ = await h.get("/readyz/nope")
        assert status == 404 and "nope" in body

    async def test_exclude(self, harness: MakeHarness) -> None:
        """?exclude= drops a failing required check; unknown names get a warn line."""
        h = await harness({"redis": True, "cache": True})
        h.make_ready("cache")
        status, body, _ = await h.get("/readyz?exclude=redis&verbose")
        assert status == 200 and "[+]redis excluded: ok" in body and "[+]cache ok" in body
        status, body, _ = await h.get("/readyz", params={"exclude": "nope"})
        assert status == 503 and "no matches for nope" in body

    async def test_startupz_and_the_deadline(self, harness: MakeHarness) -> None:
        """/startupz is 503 with the deadline line once it passed, and 200 for good after the first ready."""
        h = await harness()
        h.clock.now = 11.0
        h.agent.store.check_deadline()
        status, body, _ = await h.get("/startupz?verbose")
        assert status == 503 and "[-]startup deadline exceeded" in body
        h.feed("redis", OK, 11.0)
        h.feed("redis", OK, 11.5)
        h.feed("redis", REFUSED, 12.0)
        assert (await h.get("/startupz"))[:2] == (200, "ok\n")

    async def test_livez_reads_the_heartbeat_only(self, harness: MakeHarness) -> None:
        """/livez is 200 while the heartbeat is recent, 503 when it is stale, whatever Redis does."""
        h = await harness()
        h.feed("redis", REFUSED, 0.1)
        assert (await h.get("/livez"))[:2] == (200, "ok\n")
        h.clock.now = 60.0
        status, body, _ = await h.get("/livez")
        assert status == 503 and "unhealthy" in body


class TestDocuments:
    async def test_status_is_json_with_the_documented_keys(self, harness: MakeHarness) -> None:
        """/status is application/json with the verdict, the checks and the settings."""
        h = await harness()
        h.make_ready("redis")
        status, body, ctype = await h.get("/status")
        doc = json.loads(body)
        assert status == 200 and ctype.startswith("application/json")
        assert doc["ready"] is True and doc["checks"]["redis"]["state"] == "ready"
        assert doc["settings"]["window"] == {"value": 0.5, "source": "default"}

    async def test_metrics_in_both_formats(self, harness: MakeHarness) -> None:
        """/metrics is Prometheus text by default and OpenMetrics when asked."""
        h = await harness()
        status, body, ctype = await h.get("/metrics")
        assert status == 200 and ctype.startswith("text/plain") and "readiness_agent_ready 0.0" in body
        _, body, ctype = await h.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert ctype.startswith("application/openmetrics-text") and body.endswith("# EOF\n")

    async def test_unknown_path_and_wrong_method(self, harness: MakeHarness) -> None:
        """An unknown path is 404 and a POST to a probe is 405."""
        h = await harness()
        assert (await h.get("/nope"))[0] == 404
        async with h.client.post("/readyz") as response:
            assert response.status == 405


class TestDrain:
    async def test_drain_is_404_without_a_token_file(self, harness: MakeHarness) -> None:
        """POST /drain does not exist unless a token file is configured."""
        h = await harness()
        async with h.client.post("/drain") as response:
            assert response.status == 404

    async def test_drain_needs_the_token_and_keeps_the_real_check_state(self, harness: MakeHarness) -> None:
        """401 without or with a wrong token; 202 with it; then 503 with the check's real state and a drain line."""
        h = await harness(token="s3cret-token")
        h.make_ready("redis")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            async with h.client.post("/drain", headers=headers) as response:
                assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        async with h.client.post("/drain", headers={"Authorization": "Bearer s3cret-token"}) as response:
            assert response.status == 202
        status, body, _ = await h.get("/readyz?verbose")
        lines = body.splitlines()
        assert status == 503 and lines[0] == "[+]redis ok" and lines[1].startswith("[-]draining")
        assert (await h.get("/readyz/redis"))[0] == 503
