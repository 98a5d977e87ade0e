"""The scrape cache and the fast exposition, in-process and fast: reuse age, single flight and failures on an
injected clock (agent/server/render_cache.py); the exposition byte-equal to prometheus_client's encoders in every
negotiated format and accepted by promtool (agent/server/exposition.py); the app's renders counted per verdict.
The end-to-end figures (a flood against the real agent) are in tests/test_e2e_endpoints.py."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import metrics as client_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import Platform
from agent.core.model import CheckResult, Reason
from agent.server import direct_series
from agent.server.app import SCRAPES, make_app
from agent.server.exposition import VERIFY_TRIES, Exposition
from agent.server.metrics import Metrics
from agent.server.render_cache import RenderCache

ACCEPTS = [
    "",  # text 0.0.4, what curl gets
    "application/openmetrics-text",  # OpenMetrics, version defaulted
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",  # Prometheus 2
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0;escaping=values",
]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Renderer:
    """A render that counts its calls and finishes when the test says (``release``) or at once."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()
        self.fail = False

    async def __call__(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("render failed")
        return f"body {self.calls}"


class TestRenderCache:
    async def test_reused_until_the_age_then_rendered_anew(self) -> None:
        """A body is reused for max_age seconds from the render's start, not a moment longer."""
        clock, render = Clock(), Renderer()
        cache: RenderCache[str] = RenderCache(1.0, clock)
        assert await cache.get("text", 0, render) == "body 1"
        clock.now += 0.999
        assert await cache.get("text", 0, render) == "body 1"
        clock.now += 0.001
        assert await cache.get("text", 0, render) == "body 2"
        assert (render.calls, cache.renders) == (2, 2)

    async def test_concurrent_requests_share_one_render(self) -> None:
        """50 requests while a render is in flight: one render, every request gets its body."""
        render = Renderer(hold=True)
        cache: RenderCache[str] = RenderCache(1.0, Clock())
        waiters = [asyncio.ensure_future(cache.get("text", 0, render)) for _ in range(50)]
        await asyncio.sleep(0)
        render.gate.set()
        assert await asyncio.gather(*waiters) == ["body 1"] * 50
        assert render.calls == 1

    async def test_a_new_version_or_format_renders_anew(self) -> None:
        """A changed verdict is never answered from a body rendered before it; each format has its own."""
        render = Renderer()
        cache: RenderCache[str] = RenderCache(1.0, Clock())
        assert await cache.get("text", 0, render) == "body 1"
        assert await cache.get("text", 1, render) == "body 2"
        assert await cache.get("openmetrics", 1, render) == "body 3"
        assert await cache.get("text", 1, render) == "body 2"

    async def test_a_failed_render_is_not_reused(self) -> None:
        """Every waiter of a failed render sees the error; the next request renders again."""
        render = Renderer(hold=True)
        render.fail = True
        cache: RenderCache[str] = RenderCache(60.0, Clock())
        waiters = [asyncio.ensure_future(cache.get("text", 0, render)) for _ in range(3)]
        await asyncio.sleep(0)
        render.gate.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results) and render.calls == 1
        render.fail = False
        assert await cache.get("text", 0, render) == "body 2"

    async def test_a_cancelled_request_leaves_the_render_to_the_others(self) -> None:
        """A client that goes away does not cancel the render another request waits for."""
        render = Renderer(hold=True)
        cache: RenderCache[str] = RenderCache(1.0, Clock())
        first = asyncio.ensure_future(cache.get("text", 0, render))
        second = asyncio.ensure_future(cache.get("text", 0, render))
        await asyncio.sleep(0)
        first.cancel()
        render.gate.set()
        assert await second == "body 1" and render.calls == 1

    async def test_keys_are_bounded(self) -> None:
        """A client cycling Accept headers cannot grow the cache past max_keys (the oldest go)."""
        render = Renderer()
        cache: RenderCache[str] = RenderCache(60.0, Clock(), max_keys=2)
        for key in ("a", "b", "c"):
            await cache.get(key, 0, render)
        assert await cache.get("c", 0, render) == "body 3"
        assert await cache.get("a", 0, render) == "body 4"

    async def test_close_cancels_a_render_in_flight(self) -> None:
        render = Renderer(hold=True)
        cache: RenderCache[str] = RenderCache(1.0, Clock())
        waiter = asyncio.ensure_future(cache.get("text", 0, render))
        await asyncio.sleep(0)
        await cache.close()
        with pytest.raises(asyncio.CancelledError):
            await waiter


# ------------------------------------------------------------------------------------------------ exposition


class Odd(Collector):
    """Families the fast path must hand to the encoder: timestamps, a value-less sample, special values."""

    def collect(self) -> Iterator[Metric]:
        stamped = GaugeMetricFamily("odd_stamped", "With a timestamp.", labels=["k"])
        stamped.add_metric(["a"], 1.5, timestamp=1700000000.25)
        yield stamped
        values = GaugeMetricFamily("odd_values", 'Quotes " and \\ and\nnewline.', labels=["v"])
        for i, value in enumerate((-0.0, 0.0, math.inf, -math.inf, math.nan, 1e6, 123456789.0, 1e-7, True)):
            values.add_metric([f'x"{i}\\\n'], value)
        yield values


@pytest.fixture
def agent_registry(tmp_path: Path) -> CollectorRegistry:
    """The agent's registry with three checks (one failing with two reasons, one stabilizing) and extras."""
    config = tmp_path / "checks.yaml"
    config.write_text("checks:\n" + "".join(
        f"  - {{name: {name}, url: 'redis://127.0.0.1:1/0'}}\n" for name in ("sessions", "cache", "queue")))
    settings = load_settings({"platform": "local"}, {}, lambda _e: (Platform.LOCAL, "test"), str(config))
    now = [0.0]
    agent = build_agent(settings, clock=lambda: now[0])
    registry = CollectorRegistry()
    agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, settings.window))
    for t in (0.0, 0.3, 0.6):
        now[0] = t
        agent.record("sessions", CheckResult(True, 0.0012))
        agent.record("cache", CheckResult(False, 0.3, Reason.TIMEOUT if t else Reason.REFUSED, "down"))
    agent.record("queue", CheckResult(True, 7.5))
    Counter("extra_events", "Plain counter.", ["result"], registry=registry).labels("ok").inc(3)
    Gauge("extra_level", "Unlabelled gauge.", registry=registry).set(-2.25)
    Histogram("extra_seconds", "No labels.", registry=registry).observe(0.2)
    return registry


@pytest.fixture
def registry(agent_registry: CollectorRegistry) -> CollectorRegistry:
    """The same with families only prometheus_client's encoders write (timestamps, escapes, odd values)."""
    agent_registry.register(Odd())
    return agent_registry


@pytest.fixture(params=[False, True], ids=["created-off", "created-on"])
def created(request: pytest.FixtureRequest) -> Iterator[bool]:
    """prometheus_client's process-wide ``_created`` switch, off as ``run`` sets it and on (its default)."""
    was = client_metrics._use_created
    client_metrics._use_created = request.param
    yield request.param
    client_metrics._use_created = was


def body_lines(body: bytes) -> list[str]:
    """The lines of an exposition, process_* aside (CPU and memory move between two reads)."""
    return [x for x in body.decode().splitlines() if not x.startswith(("process_", "U__process"))]


class TestExposition:
    @pytest.mark.parametrize("accept", ACCEPTS)
    def test_byte_equal_to_the_encoder(self, registry: CollectorRegistry, created: bool, accept: str) -> None:
        """Three times (cold memo, verifying, trusted), the body is the negotiated encoder's, byte for byte."""
        encoder, content_type = choose_encoder(accept)
        exposition = Exposition(registry)
        for _ in range(3):
            assert body_lines(exposition.render(content_type, encoder)) == body_lines(encoder(registry))

    def test_the_per_check_series_are_read_directly(self, agent_registry: CollectorRegistry) -> None:
        """With _created off (as in the agent) the labelled Counter and Histogram take the direct path, and an
        exemplar sends that metric back to the encoder for the render, still byte-equal."""
        was = client_metrics._use_created
        client_metrics._use_created = False
        try:
            encoder, content_type = choose_encoder("application/openmetrics-text")
            exposition = Exposition(agent_registry)
            exposition.render(content_type, encoder)
            fmt = exposition._formats[content_type]
            direct = {c._name for c, state in fmt._direct.items() if state is True}  # type: ignore[attr-defined]
            assert {"readiness_agent_check_duration_seconds", "readiness_agent_check_failures",
                    "extra_events"} <= direct
            events = next(c for c in fmt._direct if isinstance(c, Counter) and c._name == "extra_events")
            events.labels("traced").inc(exemplar={"trace_id": "abc"})
            body = exposition.render(content_type, encoder)
            assert '# {trace_id="abc"} 1.0' in body.decode()
            assert body_lines(body) == body_lines(encoder(agent_registry))
        finally:
            client_metrics._use_created = was

    def test_direct_lines_that_differ_are_never_served(self, agent_registry: CollectorRegistry,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        """A direct read that disagrees with the encoder (a changed prometheus_client) loses: the encoder's lines
        are served, and after VERIFY_TRIES disagreements the direct path is off for that metric."""
        was = client_metrics._use_created
        client_metrics._use_created = False
        real = direct_series.rows

        def skewed(collector: object) -> list[direct_series.Row] | None:
            rows = real(collector)
            return None if rows is None else [(key, value + 1) for key, value in rows]

        monkeypatch.setattr(direct_series, "rows", skewed)
        try:
            encoder, content_type = choose_encoder("")
            exposition = Exposition(agent_registry)
            for _ in range(VERIFY_TRIES + 1):
                assert body_lines(exposition.render(content_type, encoder)) == body_lines(encoder(agent_registry))
            assert set(exposition._formats[content_type]._direct.values()) == {False}
        finally:
            client_metrics._use_created = was

    def test_promtool_accepts_it(self, agent_registry: CollectorRegistry) -> None:
        """promtool check metrics (it reads the text format) finds no problem in the fast body."""
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: run scripts/install-tools.sh (make test does)"
        encoder, content_type = choose_encoder("")
        body = Exposition(agent_registry).render(content_type, encoder)
        result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ the app


class TestApp:
    async def test_one_render_per_verdict_however_many_ask(self, tmp_path: Path) -> None:
        """30 concurrent /metrics and 30 /status: one render each; a verdict change renders anew at once, and the
        new body shows it; /status counts the renders under runtime.renders."""
        settings = load_settings({"platform": "local", "redis_url": "redis://127.0.0.1:1/0"}, {},
                                 lambda _e: (Platform.LOCAL, "test"))
        now = [0.0]
        agent = build_agent(settings, clock=lambda: now[0])
        registry = CollectorRegistry()
        agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, settings.window))
        app = make_app(agent, registry, scrape_reuse=3600)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            async def get(path: str) -> str:
                async with client.get(path) as response:
                    assert response.status == 200
                    return await response.text()

            bodies = await asyncio.gather(*(get(p) for p in ["/metrics", "/status"] * 30))
            scrapes = app[SCRAPES]
            assert scrapes.renders() == {"metrics": 1, "status": 1}
            assert len(set(bodies[0::2])) == 1 and "readiness_agent_ready 0.0" in bodies[0]
            for t in (0.0, 0.3, 0.6):  # through the window: ready
                now[0] = t
                agent.record("redis", CheckResult(True, 0.001))
            assert agent.snapshot.ready
            assert "readiness_agent_ready 1.0" in await get("/metrics")
            doc = json.loads(await get("/status"))
            assert doc["ready"] is True and doc["runtime"]["renders"] == {"metrics": 2, "status": 2}
            await get("/metrics")
            assert scrapes.renders() == {"metrics": 2, "status": 2}
        finally:
            await client.close()
