"""A small WebSocket backend that depends on Redis the way the one in docs/origin.md did.

It exists to reproduce the 1011 race for real, so it does what the real backend did and nothing clever:

* on connect it writes the user's session state (``HSET``). That is a *data* command: Redis refuses it with
  ``-LOADING`` while it loads its dataset, whereas ``SUBSCRIBE``/``PUBLISH`` keep working. A backend that only
  fanned out through pub/sub would never show the race;
* it subscribes the user to a channel and echoes every message *through Redis* (``PUBLISH`` → subscriber →
  WebSocket), so each message needs Redis;
* when Redis is unusable it closes the WebSocket with **1011** (internal error), the code clients saw;
* its client retries a failed command once, at once: after a Redis restart every pooled connection is dead and
  the retry on a fresh connection heals it. Never more: retrying longer would only hide an unusable Redis.

``GET /healthz`` is the naive readiness check of the time: 200 when a TCP connect to Redis succeeds (what
``is_connected()`` amounted to). It says nothing about ``-LOADING``, which is the point.

Run it alone with ``python -m examples.websocket_app.app --redis-url redis://127.0.0.1:6379/0 --port 8080``,
or start it inside a test or the race with :func:`start_backend`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

READY = "ready"  # first frame a client gets: its session is stored and its channel subscribed

REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)
REDIS_URL: web.AppKey[str] = web.AppKey("redis_url", str)
NAME: web.AppKey[str] = web.AppKey("name", str)
# What the race reads back from the app (same clock as the clients: time.monotonic()): when each user's handshake
# was let through (the gate's decision, same loop turn), and when the app's watcher learned each verdict.
ACCEPTED: web.AppKey[dict[str, float]] = web.AppKey("accepted", dict)
VERDICTS: web.AppKey[list[tuple[float, bool]]] = web.AppKey("verdicts", list)

# What "Redis is unusable" looks like from the app: every redis-py error, and OS errors underneath it.
RedisFailure = (rx.RedisError, OSError)


def redis_client(url: str) -> Redis:
    """The app's client: one immediate retry (heals a stale pooled connection), bounded timeouts."""
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 1),
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        decode_responses=True,
        # Each WebSocket's subscription holds a connection; redis-py's default cap (100) would fail a burst of
        # clients released by the load balancer for a reason that has nothing to do with Redis. Redis's own
        # maxclients default.
        max_connections=10_000,
    )


def _close_reason(exc: BaseException) -> bytes:
    """A short close reason (a WebSocket close frame carries at most 123 bytes)."""
    return f"redis unusable: {type(exc).__name__}: {exc}".encode()[:120]


async def _relay(pubsub: PubSub, ws: web.WebSocketResponse, failed: asyncio.Event) -> None:
    """Subscriber → WebSocket. A broken subscription closes the socket with 1011 (and sets ``failed``)."""
    try:
        async for message in pubsub.listen():
            await ws.send_str(message["data"])
    except RedisFailure as exc:
        failed.set()
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=_close_reason(exc))


async def session(request: web.Request) -> web.WebSocketResponse:
    """One user's WebSocket: store the session, subscribe, echo through Redis until either side ends."""
    user = request.query.get("user", "anonymous")
    # Before the first await: the gate (mode d) decided in this same loop turn, so this is its decision's instant.
    request.app[ACCEPTED][user] = time.monotonic()
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    channel = f"echo:{user}"
    client = request.app[REDIS]
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    relay: asyncio.Task[None] | None = None
    relay_failed = asyncio.Event()
    try:
        await client.hset(f"session:{user}", mapping={"backend": request.app[NAME], "since": str(time.time())})
        await pubsub.subscribe(channel)
        relay = asyncio.create_task(_relay(pubsub, ws, relay_failed), name=f"relay:{user}")
        await ws.send_str(READY)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await client.publish(channel, msg.data)
    except RedisFailure as exc:
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=_close_reason(exc))
    finally:
        if relay is not None:
            if not relay_failed.is_set():  # the client left: stop listening. Else let the 1011 close finish.
                relay.cancel()
            await asyncio.wait([relay])  # never suppress(CancelledError): it would swallow this handler's own
            if not relay.cancelled():
                relay.result()
        await pubsub.aclose()  # disconnects: a read cancelled mid-reply must not go back to the pool
    return ws


async def healthz(request: web.Request) -> web.Response:
    """The naive check: can we open a TCP connection to Redis? (True during -LOADING too.)"""
    parts = urlsplit(request.app[REDIS_URL])
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379)
    except (OSError, TimeoutError):
        return web.Response(status=503, text="redis: no connection\n")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return web.Response(text="ok\n")


def make_app(redis_url: str, name: str = "backend", watch_url: str | None = None,
             drain_window: float | None = None) -> web.Application:
    """The backend application; its Redis client lives as long as the app (``cleanup_ctx``).

    With ``watch_url`` (mode (d)) the app uses readiness_client: upgrades are refused with 503 while the agent
    at ``watch_url`` says not ready, and its shutdown closes the open WebSockets with 1012 over ``drain_window``.
    """
    app = web.Application()
    app[REDIS_URL] = redis_url
    app[NAME] = name
    app[ACCEPTED] = {}
    app[VERDICTS] = []

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = redis_client(redis_url)
        yield
        await app[REDIS].aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/ws", session)
    app.router.add_get("/healthz", healthz)
    if watch_url is not None:
        from readiness_client import aiohttp_gate

        gate = aiohttp_gate.setup(app, url=watch_url, drain_window=drain_window)
        gate.watcher.add_listener(lambda verdict: app[VERDICTS].append((time.monotonic(), verdict.ready)))
    return app


@dataclass
class Backend:
    """A running backend: where it listens, and how to stop it."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def healthz_url(self) -> str:
        return f"http://{self.host}:{self.port}/healthz"

    @property
    def accepted(self) -> dict[str, float]:
        """user → when its handshake was let through (``time.monotonic()``)."""
        return self.runner.app[ACCEPTED]

    @property
    def verdicts(self) -> list[tuple[float, bool]]:
        """(``time.monotonic()``, ready) each time the app's watcher learned a new verdict (mode d; else empty)."""
        return self.runner.app[VERDICTS]

    async def stop(self) -> None:
        """Close every WebSocket (1001 going away) and the Redis client."""
        await self.runner.cleanup()


async def start_backend(redis_url: str, host: str = "127.0.0.1", port: int = 0, name: str = "backend",
                        watch_url: str | None = None) -> Backend:
    """Start the backend (port 0: any free port). Without ``watch_url`` it accepts connections at once, whatever
    Redis is doing; with it, only while the agent says ready."""
    runner = web.AppRunner(make_app(redis_url, name, watch_url), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return Backend(runner, host, runner.addresses[0][1])


def main() -> None:
    """``python -m examples.websocket_app.app``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="WebSocket echo backend that stores sessions in Redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--watch-url", default=None, help="use readiness_client with the agent's /watch here")
    parser.add_argument("--drain-window", type=float, default=None, help="seconds to spread the 1012 closes over")
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    web.run_app(make_app(args.redis_url, args.name, args.watch_url, args.drain_window), host=args.host,
                port=args.port, print=None)


if __name__ == "__main__":
    main()
