"""The HTTP server: probe endpoints, ``/status``, ``/metrics`` and ``POST /drain``.

Handlers only read the agent's cached state: a probe never waits on Redis, so it answers in microseconds
even while Redis is blackholed. ``/livez`` depends only on the agent's own tasks.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent import __version__
from agent.runner import Agent
from agent.verdict import State

AGENT = web.AppKey("agent", Agent)
REGISTRY = web.AppKey("registry", CollectorRegistry)
TEXT = "text/plain; charset=utf-8"


def _flag(request: web.Request, name: str) -> bool:
    """``?verbose`` and ``?verbose=1`` are on; ``?verbose=0``/``false`` are off."""
    if name not in request.query:
        return False
    return request.query[name].lower() not in ("0", "false", "no")


def _excluded(request: web.Request) -> frozenset[str]:
    return frozenset(
        part.strip() for value in request.query.getall("exclude", []) for part in value.split(",") if part.strip()
    )


def _check_lines(agent: Agent, names: list[str]) -> list[str]:
    lines = []
    for name in names:
        status = agent.status[name]
        optional = "" if status.check.required else " (optional)"
        if status.verdict.state is State.READY:
            lines.append(f"[+]{name} ok{optional}")
        else:
            reason = status.verdict.last_reason if status.last and not status.last.ok else None
            what = str(reason) if reason else str(status.verdict.state)
            lines.append(f"[-]{name} failed: {what}{optional}")
    return lines


def _probe_response(agent: Agent, request: web.Request, endpoint: str, ok: bool, names: list[str],
                    extra: list[str]) -> web.Response:
    status = 200 if ok else 503
    if not _flag(request, "verbose") and ok:
        return web.Response(status=200, text="ok\n", content_type="text/plain")
    lines = _check_lines(agent, names) + extra
    if agent.verdict.draining:
        lines.append("[-]draining: the agent is shutting down")
    lines.append(f"{endpoint} check {'passed' if ok else 'failed'}")
    return web.Response(status=status, text="\n".join(lines) + "\n", content_type="text/plain")


async def livez(request: web.Request) -> web.Response:
    """200 while the agent's own loop and tasks are healthy. Never depends on Redis."""
    ok = request.app[AGENT].healthy()
    return web.Response(status=200 if ok else 503, text="ok\n" if ok else "agent loop unhealthy\n",
                        content_type="text/plain")


async def readyz(request: web.Request) -> web.Response:
    """200 when every required check is ready (``?exclude=`` drops some), 503 otherwise."""
    agent = request.app[AGENT]
    if not request.query_string and agent.ready.is_set():
        # The probe's own request: the writer keeps ``agent.ready`` equal to the verdict, so answer at once.
        return web.Response(body=b"ok\n", content_type="text/plain", charset="utf-8")
    excluded = _excluded(request)
    ok = agent.verdict.is_ready(excluded & agent.verdict.required)
    names = [n for n in agent.status if n not in excluded]
    extra = [f"[+]{n} excluded: ok" for n in sorted(excluded & set(agent.status))]
    unknown = sorted(excluded - set(agent.status))
    if unknown:
        extra.append("warn: some checks cannot be excluded: no matches for " + ",".join(unknown))
    return _probe_response(agent, request, "readyz", ok, names, extra)


async def readyz_one(request: web.Request) -> web.Response:
    """``/readyz/<check>``: that one check's readiness (draining counts as not ready)."""
    agent = request.app[AGENT]
    name = request.match_info["check"]
    if name not in agent.status:
        raise web.HTTPNotFound(text=f"no check named {name!r}\n")
    ok = agent.status[name].verdict.state is State.READY and not agent.verdict.draining
    return _probe_response(agent, request, "readyz", ok, [name], [])


async def startupz(request: web.Request) -> web.Response:
    """200 once the first ``ready`` was reached."""
    agent = request.app[AGENT]
    names = list(agent.status)
    extra = ["[-]startup deadline exceeded"] if agent.verdict.deadline_exceeded else []
    return _probe_response(agent, request, "startupz", agent.verdict.is_started(), names, extra)


def status_document(agent: Agent) -> dict[str, Any]:
    """The ``/status`` JSON: verdict, platform, effective settings with sources, per-check detail."""
    now = agent.clock()
    verdict = agent.verdict
    settings = agent.settings
    checks: dict[str, Any] = {}
    for name, status in agent.status.items():
        v = status.verdict
        last = status.last
        config = next((c for c in settings.checks if c.name == name), None)
        checks[name] = {
            "kind": getattr(status.check, "kind", "unknown"),
            "target": config.describe() if config else None,
            "required": status.check.required,
            "state": str(v.state),
            "since_seconds": round(now - v.since, 3),
            "last": None if last is None else {
                "ok": last.ok,
                "reason": None if last.reason is None else str(last.reason),
                "detail": last.detail,
                "latency_ms": round(last.latency * 1000, 3),
                "age_seconds": round(now - (status.last_at or now), 3),
            },
            "last_failure_reason": None if v.last_reason is None else str(v.last_reason),
            "consecutive_successes": v.consecutive_successes,
            "consecutive_failures": v.consecutive_failures,
            "window_remaining_seconds": v.window_remaining(now),
            "checks_run": status.checks_run,
            "monitor_connected": status.monitor_up,
        }
    remaining = verdict.deadline_remaining(now)
    return {
        "version": __version__,
        "state": str(verdict.state),
        "ready": verdict.is_ready(),
        "started": verdict.is_started(),
        "since_seconds": round(now - verdict.since, 3),
        "uptime_seconds": round(now - verdict.started_at, 3),
        "readiness_mode": str(verdict.mode),
        "draining": verdict.draining,
        "platform": {"resolved": str(settings.platform), "reason": settings.platform_reason},
        "startup": {
            "deadline_seconds": verdict.startup_timeout,
            "deadline_remaining_seconds": None if remaining is None else round(remaining, 3),
            "deadline_exceeded": verdict.deadline_exceeded,
            "startup_seconds": None if verdict.first_ready_at is None
            else round(verdict.first_ready_at - verdict.started_at, 3),
        },
        "detection_bound_seconds": round(agent.timing.detection_bound, 3),
        "runtime": {"asyncio_tasks": len(asyncio.all_tasks()), "healthy": agent.healthy()},
        "checks": checks,
        "settings": settings.effective(),
        "config_file": settings.config_file,
        "time": time.time(),
    }


async def status(request: web.Request) -> web.Response:
    """JSON status for humans and scripts."""
    return web.json_response(status_document(request.app[AGENT]), dumps=lambda d: json.dumps(d, indent=2))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


def drain_handler(token_file: str) -> Callable[[web.Request], Any]:
    """``POST /drain`` with ``Authorization: Bearer <token>``; the token file is read on each call."""

    async def drain(request: web.Request) -> web.Response:
        try:
            expected = Path(token_file).read_text(encoding="utf-8").strip()  # noqa: ASYNC240 (tiny local file)
        except OSError:
            expected = ""
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        ok = bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), expected.encode()
        )
        if not ok:
            return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"})
        request.app[AGENT].drain()
        return web.Response(status=202, text="draining\n")

    return drain


def make_app(agent: Agent, registry: CollectorRegistry) -> web.Application:
    """The aiohttp application; the agent's lifetime is managed by the caller."""
    app = web.Application()
    app[AGENT] = agent
    app[REGISTRY] = registry
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/readyz/{check}", readyz_one)
    app.router.add_get("/startupz", startupz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    token_file = agent.settings["drain_token_file"]
    if token_file:
        app.router.add_post("/drain", drain_handler(token_file))
    return app


@asynccontextmanager
async def serve(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on ``host:port`` (IPv4 or IPv6) until the block exits."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        yield runner
    finally:
        await runner.cleanup()


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with ``--listen 127.0.0.1:0``)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("server is not listening")
