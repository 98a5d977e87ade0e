"""ASGI integration (Starlette, FastAPI, any ASGI app): refuse WebSocket handshakes with 503 while not ready,
track the accepted sockets, drain them with 1012 on the app's SIGTERM. Imports no framework.

::

    app = FastAPI()
    app.add_middleware(ReadinessMiddleware)            # Starlette: Middleware(ReadinessMiddleware)

**The refusal** uses the ASGI WebSocket Denial Response extension (``websocket.http.response``): the handshake
gets an HTTP **503** with ``Retry-After`` instead of ``101``. uvicorn ≥ 0.25 and hypercorn support it; a server
without it (daphne) gets ``websocket.close`` before accept, which it answers with **403**. Either way a browser
sees a failed handshake (``close`` event code 1006), which its reconnect logic already handles.

**The drain**: uvicorn closes every WebSocket at once with 1012 as soon as it sees SIGTERM, before the lifespan
shutdown; so the middleware takes SIGTERM first (at lifespan start-up), closes the sockets with 1012 spread over
the drain window, then hands the signal to uvicorn. A second SIGTERM stops at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from readiness_client.sockets import OnRedisLost, OpenSockets, drain_on_sigterm, platform_drain_window
from readiness_client.watcher import ReadinessWatcher

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
DENIAL = "websocket.http.response"


class _Connection:
    """One accepted WebSocket: the app's receive merged with a disconnect the middleware may inject."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.injected: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pending: asyncio.Future[Message] | None = None
        self.closed = False

    async def receive(self) -> Message:
        if self.injected.done():
            return self.injected.result()
        if self.pending is None:
            self.pending = asyncio.ensure_future(self._receive())
        done, _ = await asyncio.wait({self.pending, self.injected}, return_when=asyncio.FIRST_COMPLETED)
        if self.pending in done:
            message, self.pending = self.pending.result(), None
            return message
        return self.injected.result()

    async def send(self, message: Message) -> None:
        if self.closed:
            return  # closed by the middleware: the app's last words go nowhere (the server would raise)
        if message["type"] == "websocket.close":
            self.closed = True
        await self._send(message)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.injected.done():
            self.injected.set_result({"type": "websocket.disconnect", "code": code, "reason": reason})
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def finish(self) -> None:
        if self.pending is not None:
            self.pending.cancel()


class ReadinessMiddleware:
    """Wraps an ASGI app. Keyword arguments as :func:`readiness_client.aiohttp_gate.setup`, plus
    ``drain_on_sigterm`` (default True: take SIGTERM at start-up, see the module docstring)."""

    def __init__(self, app: ASGIApp, watcher: ReadinessWatcher | None = None, *, url: str | None = None,
                 fail_open: bool = False, on_redis_lost: OnRedisLost | str = OnRedisLost.KEEP,
                 lost_window: float = 5.0, drain_window: float | None = None, drain_on_sigterm: bool = True) -> None:
        self.app = app
        self.watcher = watcher or ReadinessWatcher(url, fail_open=fail_open)
        self.gate = OpenSockets(self.watcher, on_redis_lost=OnRedisLost(on_redis_lost), lost_window=lost_window,
                                drain_window=platform_drain_window() if drain_window is None else drain_window)
        self.drain_on_sigterm = drain_on_sigterm
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            self._started = True
            await self.watcher.start()
            if self.drain_on_sigterm:
                drain_on_sigterm(self.gate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._start()  # a server run without lifespan: start following on the first handshake
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
            elif message["type"] == "lifespan.shutdown":
                await self.watcher.stop()
            return message

        await self.app(scope, wrapped, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.gate.ready():
            self.gate.refused += 1
            await self._deny(scope, receive, send)
            return
        conn = _Connection(receive, send)
        handle: object | None = None

        async def tracking_send(message: Message) -> None:
            nonlocal handle
            if message["type"] == "websocket.accept" and handle is None:
                handle = self.gate.add(conn.close)
            await conn.send(message)

        try:
            await self.app(scope, conn.receive, tracking_send)
        finally:
            conn.finish()
            if handle is not None:
                self.gate.discard(handle)

    async def _deny(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()  # websocket.connect
        if message["type"] != "websocket.connect":
            return
        body = f"not ready: {self.gate.why_not()}\n".encode()
        if DENIAL in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"retry-after", str(self.gate.retry_after).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # no denial extension (daphne): closing before accept is answered with 403
            await send({"type": "websocket.close", "code": 1013})
