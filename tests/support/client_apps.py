"""The two apps the client's tests serve for real: an aiohttp app and a Starlette app (run by uvicorn as its
own process, so SIGTERM reaches the server's real signal handling). Both echo text over a WebSocket and are
gated by readiness_client; the agent's watch URL and the windows come from the environment for the ASGI one.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import WSMsgType, web
from readiness_client import aiohttp_gate
from readiness_client.asgi import ReadinessMiddleware


def aiohttp_app(watch_url: str, **gate: Any) -> web.Application:
    """``/ws``: echo each text message."""
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    aiohttp_gate.setup(app, url=watch_url, **gate)
    return app


def starlette_app() -> Any:
    """The ASGI app for ``uvicorn tests.support.client_apps:asgi``: ``/ws`` echoes text."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    options = {"url": os.environ["WATCH_URL"], "drain_window": float(os.environ.get("DRAIN_WINDOW", "1")),
               "on_redis_lost": os.environ.get("ON_REDIS_LOST", "keep"),
               "lost_window": float(os.environ.get("LOST_WINDOW", "1"))}
    return Starlette(routes=[WebSocketRoute("/ws", echo)], middleware=[Middleware(ReadinessMiddleware, **options)])


def __getattr__(name: str) -> Any:
    if name == "asgi":  # built on import by uvicorn only: the environment holds its settings
        return starlette_app()
    raise AttributeError(name)
