"""The HTTP server: probe endpoints, ``/status``, ``/metrics`` and ``POST /drain``.

Handlers only read the verdict's latest snapshot: a probe never waits on Redis, so it answers in microseconds
even while Redis is blackholed. ``/livez`` depends only on the agent's own tasks. ``/status`` and ``/metrics``
are rendered off the loop, once per reuse period however many ask (agent/server/scrape.py), so no request rate of
theirs delays a probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.core.snapshot import AgentSnapshot
from agent.server.drain_token import DrainToken
from agent.server.limits import (
    BACKLOG,
    IDLE_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    ConnectionLimiter,
    RateLimitedLog,
    connection_cap,
    install_client_error_logging,
)
from agent.server.scrape import REUSE_SECONDS, Scrapes
from agent.server.view import ServedAgent

AGENT = web.AppKey("agent", ServedAgent)
REGISTRY = web.AppKey("registry", CollectorRegistry)
SCRAPES = web.AppKey("scrapes", Scrapes)


@dataclass(frozen=True)
class GateView:
    """What ``/status`` reads of the readiness gate: its status, or None when the gate is off."""

    status: Callable[[], dict[str, object]] | None = None


GATE = web.AppKey("gate", GateView)
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


def _check_lines(snap: AgentSnapshot, names: list[str]) -> list[str]:
    lines = []
    for name in names:
        check = snap.checks[name]
        optional = "" if check.required else " (optional)"
        if check.ready:
            lines.append(f"[+]{name} ok{optional}")
        else:
            lines.append(f"[-]{name} failed: {check.why()}{optional}")
    return lines


def _probe_response(snap: AgentSnapshot, request: web.Request, endpoint: str, ok: bool, names: list[str],
                    extra: list[str]) -> web.Response:
    status = 200 if ok else 503
    if not _flag(request, "verbose") and ok:
        return web.Response(status=200, text="ok\n", content_type="text/plain")
    lines = _check_lines(snap, names) + extra
    if snap.draining:  # its own line: the checks above keep showing their dependency's real state
        lines.append("[-]draining: not taking new connections (503 until the process ends)")
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
    if not request.query_string and agent.store.ready.is_set():
        # The probe's own request: the store keeps ``ready`` equal to the verdict, so answer at once.
        return web.Response(body=b"ok\n", content_type="text/plain", charset="utf-8")
    snap = agent.snapshot
    excluded = _excluded(request)
    ok = snap.ready_excluding(excluded)
    names = [n for n in snap.checks if n not in excluded]
    extra = [f"[+]{n} excluded: ok" for n in sorted(excluded & set(snap.checks))]
    unknown = sorted(excluded - set(snap.checks))
    if unknown:
        extra.append("warn: some checks cannot be excluded: no matches for " + ",".join(unknown))
    return _probe_response(snap, request, "readyz", ok, names, extra)


async def readyz_one(request: web.Request) -> web.Response:
    """``/readyz/<check>``: that one check's readiness (draining counts as not ready)."""
    snap = request.app[AGENT].snapshot
    name = request.match_info["check"]
    if name not in snap.checks:
        raise web.HTTPNotFound(text=f"no check named {name!r}\n")
    ok = snap.checks[name].ready and not snap.draining
    return _probe_response(snap, request, "readyz", ok, [name], [])


async def startupz(request: web.Request) -> web.Response:
    """200 once the first ``ready`` was reached."""
    snap = request.app[AGENT].snapshot
    extra = ["[-]startup deadline exceeded"] if snap.deadline_exceeded else []
    return _probe_response(snap, request, "startupz", snap.started, list(snap.checks), extra)


async def status(request: web.Request) -> web.Response:
    """JSON status for humans and scripts."""
    body = await request.app[SCRAPES].status()
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, or OpenMetrics when the scraper asks for it."""
    body, content_type = await request.app[SCRAPES].metrics(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def drain_handler(token: DrainToken) -> Callable[[web.Request], Any]:
    """``POST /drain`` with ``Authorization: Bearer <token>``; 401 for anything else, malformed included."""

    async def drain(request: web.Request) -> web.Response:
        if not await token.authorizes(request.headers.get("Authorization")):
            return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"})
        request.app[AGENT].drain()
        return web.Response(status=202, text="draining\n")

    return drain


def make_app(agent: ServedAgent, registry: CollectorRegistry, gate: GateView | None = None, *,
             scrape_reuse: float = REUSE_SECONDS) -> web.Application:
    """The aiohttp application; the agent's lifetime is managed by the caller.

    ``scrape_reuse``: seconds a ``/metrics`` or ``/status`` body is reused while the verdict holds.
    """
    app = web.Application()
    app[AGENT] = agent
    app[REGISTRY] = registry
    app[GATE] = gate or GateView()
    app[SCRAPES] = Scrapes(agent, registry, app[GATE].status, max_age=scrape_reuse)
    app.on_cleanup.append(_close_scrapes)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/readyz/{check}", readyz_one)
    app.router.add_get("/startupz", startupz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    token_file = agent.settings.drain_token_file
    if token_file:
        token = DrainToken(token_file)
        token.refresh()  # at start: a missing or unusable file is a warning now, not at the first drain
        app.router.add_post("/drain", drain_handler(token))
    return app


async def _close_scrapes(app: web.Application) -> None:
    await app[SCRAPES].close()


@dataclass(frozen=True, slots=True)
class Listening:
    """A running HTTP server: aiohttp's runner, the listening socket(s) and the connection limiter."""

    runner: web.AppRunner
    server: asyncio.Server
    limiter: ConnectionLimiter


@asynccontextmanager
async def serve(app: web.Application, host: str, port: int, *, idle_timeout: float = IDLE_TIMEOUT,
                max_connections: int | None = None) -> AsyncIterator[Listening]:
    """Serve ``app`` on ``host:port`` (IPv4 or IPv6) until the block exits, within the limits of server/limits.py.

    Leaving the block closes the socket, gives in-flight requests ``SHUTDOWN_TIMEOUT`` and closes every
    connection: a client holding an unfinished request body cannot delay the exit.
    """
    errors = RateLimitedLog()
    install_client_error_logging(errors)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=idle_timeout, lingering_time=0)
    await runner.setup()
    try:
        cap = max_connections if max_connections is not None else connection_cap(_nofile_soft())
        assert runner.server is not None  # set by setup()
        limiter = ConnectionLimiter(runner.server, cap, errors)
        server = await asyncio.get_running_loop().create_server(limiter, host, port, reuse_address=True,
                                                                    backlog=BACKLOG)
        try:
            yield Listening(runner, server, limiter)
        finally:
            server.close()
    finally:
        await runner.cleanup()


def _nofile_soft() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bound_port(listening: Listening) -> int:
    """The port actually bound (useful with ``--listen 127.0.0.1:0``)."""
    for sock in listening.server.sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("server is not listening")
