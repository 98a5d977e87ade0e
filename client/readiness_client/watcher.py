"""Follow the agent's verdict from the app: one background stream of ``GET /watch``, reconnected with backoff.

Why: the app must know *now* whether its Redis is usable, to refuse a WebSocket upgrade instead of accepting it
and closing it with 1011 a moment later. Polling ``/readyz`` would be a period late; the agent pushes each
change (docs/design.md, "The watch protocol").

When the agent cannot be reached (not started yet, restarting, gone, silent for ``stale_after`` seconds) the
verdict is ``state="unreachable"`` and ``ready`` is ``fail_open``: False by default (fail closed: refuse new
WebSockets rather than accept them blind). Reconnects back off from ``backoff_initial`` doubling up to
``backoff_max``, each delay spread by ±``jitter`` so that the workers of a pod do not reconnect in step; a 503
from a full agent is retried no sooner than its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from readiness_client._sse import Event, StreamRefused, events, open_stream

DEFAULT_URL = "http://127.0.0.1:9181/watch"  # the agent's --watch-port default, on IPv4 loopback
WATCH_URL_ENV = "READINESS_CLIENT_WATCH_URL"  # set by the pod spec when the agent's watch port is not the default
log = logging.getLogger("readiness_client")


def watch_url(environ: Mapping[str, str] | None = None) -> str:
    """The agent's watch URL when the app names none: ``READINESS_CLIENT_WATCH_URL``, else :data:`DEFAULT_URL`."""
    env = os.environ if environ is None else environ
    url = env.get(WATCH_URL_ENV, "").strip()
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"invalid {WATCH_URL_ENV} {url!r}: must be an http:// URL such as {DEFAULT_URL}")
    return url or DEFAULT_URL


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the agent said last (or that it could not be reached). ``ready`` is what the app should act on."""

    ready: bool
    state: str  # starting | stabilizing | ready | degraded | draining | unreachable
    reason: str | None = None
    draining: bool = False
    reachable: bool = True

    @classmethod
    def unreachable(cls, why: str, fail_open: bool) -> Verdict:
        return cls(ready=fail_open, state="unreachable", reason=f"agent unreachable: {why}", reachable=False)

    @classmethod
    def from_event(cls, event: Event) -> Verdict:
        data = event.json()
        if not isinstance(data, dict):
            raise ValueError("verdict data is not a JSON object")
        return cls(ready=data.get("ready") is True, state=str(data.get("state", "")),
                   reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
                   draining=data.get("draining") is True)


class ReadinessWatcher:
    """The agent's verdict, kept current by a background task (``start``/``stop``, or ``async with``)."""

    def __init__(self, url: str | None = None, *, fail_open: bool = False, stale_after: float = 15.0,
                 connect_timeout: float = 1.0, backoff_initial: float = 0.2, backoff_max: float = 5.0,
                 jitter: float = 0.2, rng: random.Random | None = None) -> None:
        self.url = url or watch_url()  # None: READINESS_CLIENT_WATCH_URL, else the default port on loopback
        self.fail_open = fail_open
        self.stale_after = stale_after
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.verdict = Verdict.unreachable("not connected yet", fail_open)
        self.connects = 0  # streams opened (for tests and metrics)
        self._listeners: list[Callable[[Verdict], None]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Accept new WebSockets? The agent's verdict, or ``fail_open`` while it cannot be reached."""
        return self.verdict.ready

    def add_listener(self, callback: Callable[[Verdict], None]) -> None:
        """Call ``callback(verdict)`` on each change (synchronously, on the loop: it must not block)."""
        self._listeners.append(callback)

    async def start(self) -> ReadinessWatcher:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="readiness-watch")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def __aenter__(self) -> ReadinessWatcher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the verdict is ready; False when ``timeout`` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                while not self.ready:
                    await self._next_change()
        except TimeoutError:
            return False
        return True

    async def changes(self) -> AsyncIterator[Verdict]:
        """The current verdict, then each new one. A slow consumer skips to the latest (verdicts are states)."""
        last = self.verdict
        yield last
        while True:
            while self.verdict == last:
                await self._next_change()
            last = self.verdict
            yield last

    async def _next_change(self) -> None:
        await self._changed.wait()

    def _set(self, verdict: Verdict) -> None:
        if verdict == self.verdict:
            return
        self.verdict = verdict
        self._changed.set()
        self._changed = asyncio.Event()
        for callback in list(self._listeners):
            try:
                callback(verdict)
            except Exception:  # a listener's bug must not stop following the agent
                log.exception("readiness_client: a verdict listener failed")

    def _delay(self, attempt: int, at_least: float = 0.0) -> float:
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt, 30))
        return max(at_least, base * self.rng.uniform(1 - self.jitter, 1 + self.jitter))

    async def _run(self) -> None:
        attempt = 0
        while True:
            at_least = 0.0
            try:
                if await self._follow():
                    attempt = 0  # a stream that delivered a verdict: start the backoff over
                why = "stream ended"
            except StreamRefused as exc:
                why, at_least = str(exc), exc.retry_after or 0.0
            except TimeoutError:
                why = "no event or heartbeat in time"
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if self.verdict.reachable:
                log.warning("readiness_client: lost the agent at %s (%s); %s", self.url, why,
                            "accepting WebSockets (fail open)" if self.fail_open else "refusing new WebSockets")
            self._set(Verdict.unreachable(why, self.fail_open))
            await asyncio.sleep(self._delay(attempt, at_least))
            attempt += 1

    async def _follow(self) -> bool:
        """One stream, until it ends or goes silent; True once it delivered a verdict."""
        writer, body = await open_stream(self.url, self.connect_timeout)
        self.connects += 1
        delivered = False
        try:
            stream = events(body).__aiter__()
            while True:
                async with asyncio.timeout(self.stale_after):
                    try:
                        event = await stream.__anext__()
                    except StopAsyncIteration:
                        return delivered
                if event.name == "verdict":
                    self._set(Verdict.from_event(event))
                    delivered = True
                elif event.name == "bye":
                    return delivered
        finally:
            writer.close()


async def wait_ready(timeout: float | None = None, url: str | None = None) -> bool:
    """Block until the agent at ``url`` says ready (True), or ``timeout`` seconds pass (False)."""
    async with ReadinessWatcher(url) as watcher:
        return await watcher.wait_ready(timeout)
