"""aiohttp integration: refuse WebSocket upgrades with 503 while not ready, track the accepted ones, drain them
with 1012 when the app stops. Imports aiohttp: only when used.

::

    app = web.Application()
    readiness_client.aiohttp_gate.setup(app)   # before the app runs

What it adds to ``app``: a middleware that answers an upgrade request (``Upgrade: websocket``) with **503** and
``Retry-After`` while the verdict is not ready or the app is draining, before the handler runs (never ``101``
then 1011); an ``on_response_prepare`` hook that tracks each ``WebSocketResponse`` the app prepares; an
``on_startup`` that starts following the agent; an ``on_shutdown`` (aiohttp runs it on SIGTERM, after it stops
listening) that closes the open WebSockets with 1012 spread over the drain window, then lets shutdown continue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from readiness_client.sockets import OnRedisLost, OpenSockets, platform_drain_window
from readiness_client.watcher import ReadinessWatcher

GATE = web.AppKey("readiness_client_gate", OpenSockets)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def refusal(gate: OpenSockets) -> web.Response:
    """The answer to an upgrade while not ready: 503, ``Retry-After``, and the reason in one line."""
    return web.Response(status=503, text=f"not ready: {gate.why_not()}\n",
                        headers={"Retry-After": str(gate.retry_after)})


def setup(app: web.Application, watcher: ReadinessWatcher | None = None, *, url: str | None = None,
          fail_open: bool = False, on_redis_lost: OnRedisLost | str = OnRedisLost.KEEP, lost_window: float = 5.0,
          drain_window: float | None = None) -> OpenSockets:
    """Gate ``app``'s WebSocket upgrades on the agent's verdict; returns the gate (also ``app[GATE]``).

    ``url``: the agent's ``/watch`` (default: ``READINESS_CLIENT_WATCH_URL``, else ``http://127.0.0.1:9181/watch``).
    ``fail_open``: accept upgrades while the agent cannot be reached (default: refuse). ``on_redis_lost``: keep
    open sockets when the verdict turns not ready, or ``close`` them with 1013 within ``lost_window`` seconds.
    ``drain_window``: seconds over which the 1012 closes are spread (default: ``READINESS_CLIENT_DRAIN_WINDOW``,
    else per platform: :func:`readiness_client.platform_drain_window`).
    """
    watcher = watcher or ReadinessWatcher(url, fail_open=fail_open)
    gate = OpenSockets(watcher, on_redis_lost=OnRedisLost(on_redis_lost), lost_window=lost_window,
                       drain_window=platform_drain_window() if drain_window is None else drain_window)
    app[GATE] = gate
    handles: dict[int, object] = {}  # id(request) → its tracked WebSocket, while its handler runs

    @web.middleware
    async def refuse_when_not_ready(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_upgrade(request) and not gate.ready():
            gate.refused += 1
            return refusal(gate)
        try:
            return await handler(request)
        finally:
            handle = handles.pop(id(request), None)
            if handle is not None:
                gate.discard(handle)

    async def track(request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            async def close(code: int, reason: str) -> None:
                await response.close(code=code, message=reason.encode()[:120])

            handles[id(request)] = gate.add(close)

    async def start(_: web.Application) -> None:
        await watcher.start()

    async def drain(_: web.Application) -> None:
        await gate.drain()

    async def stop(_: web.Application) -> None:
        await watcher.stop()

    app.middlewares.append(refuse_when_not_ready)
    app.on_response_prepare.append(track)
    app.on_startup.append(start)
    app.on_shutdown.append(drain)
    app.on_cleanup.append(stop)
    return gate
