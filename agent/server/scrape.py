"""The ``/metrics`` and ``/status`` bodies: rendered in one worker thread, shared, reused for a short time.

Why: anyone on the pod network reaches the HTTP port, and a render costs the event loop, which also answers
``/readyz``: a flood of ``/metrics`` requests delayed ``/readyz`` and the 503 after a Redis kill by tens to
hundreds of milliseconds (docs/benchmarks.md). So (docs/design.md, "Scrape caching"):

* a render runs in one dedicated worker thread, never on the loop (nor in the default executor, which other
  work shares); the loop only gathers what must be read there (task count, transitions, the gate's status);
* at most one render per format is in flight, and every request arriving meanwhile waits for that one
  (:class:`agent.server.render_cache.RenderCache`);
* a body is reused for ``REUSE_SECONDS`` while the verdict it was rendered for holds: any change of the
  agent's or a check's state, of a check's last result (passed or failed) or failure reason makes the next
  request render anew, so ``/status`` and ``/metrics`` never contradict a ``/readyz`` answer given after them.

prometheus_client's metrics take a lock per value, so collecting from the worker while the loop counts is
safe; a histogram's ``_sum`` may include an observation its buckets do not yet show (as with any threaded
exporter). The snapshot is immutable and the settings are read-only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent.core.snapshot import AgentSnapshot
from agent.server.exposition import Exposition
from agent.server.render_cache import RenderCache
from agent.server.status import status_document
from agent.server.view import ServedAgent

REUSE_SECONDS = 1.0  # why 1 s: docs/design.md, "Scrape caching"
T = TypeVar("T")


def verdict_version(snap: AgentSnapshot) -> Hashable:
    """What a cached body must agree with: the verdict, and each check's state and last outcome."""
    return (snap.state, snap.ready, snap.draining, snap.deadline_exceeded, snap.first_ready_at,
            tuple((c.state, c.last is not None and c.last.ok, c.last_reason, c.monitor_up)
                  for c in snap.checks.values()))


class Scrapes:
    """Serves the two expensive bodies of one app; ``close()`` at the app's cleanup."""

    def __init__(self, agent: ServedAgent, registry: CollectorRegistry,
                 gate: Callable[[], dict[str, object]] | None = None, *, max_age: float = REUSE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.gate = gate
        self.metrics_cache: RenderCache[bytes] = RenderCache(max_age, clock)
        self.status_cache: RenderCache[bytes] = RenderCache(max_age, clock, max_keys=1)
        self._exposition = Exposition(registry)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness-agent-render")
        self._snap: AgentSnapshot | None = None
        self._version: Hashable = None

    def version(self) -> Hashable:
        """The current snapshot's :func:`verdict_version`, computed once per snapshot."""
        snap = self.agent.snapshot
        if snap is not self._snap:
            self._snap, self._version = snap, verdict_version(snap)
        return self._version

    def renders(self) -> dict[str, int]:
        """Renders started so far, per endpoint (shown in ``/status`` under ``runtime``)."""
        return {"metrics": self.metrics_cache.renders, "status": self.status_cache.renders}

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def metrics(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for a scraper's ``Accept`` header (text, or OpenMetrics when asked)."""
        encoder, content_type = choose_encoder(accept)

        async def render() -> bytes:
            return await self._in_worker(self._exposition.render, content_type, encoder)

        return await self.metrics_cache.get(content_type, self.version(), render), content_type

    async def status(self) -> bytes:
        """The ``/status`` JSON document, UTF-8."""
        return await self.status_cache.get("status", self.version(), self._render_status)

    async def _render_status(self) -> bytes:
        agent = self.agent
        now = agent.clock()
        # Read on the loop: the task set, the transitions and the gate change there.
        inputs: dict[str, Any] = {
            "tasks": len(asyncio.all_tasks()),
            "transitions": agent.history.document(now),
            "renders": self.renders(),
        }
        gate = self.gate() if self.gate is not None else None
        snap, healthy = agent.snapshot, agent.healthy()

        def build() -> bytes:
            document = status_document(snap, agent.settings, now, healthy, None, gate, **inputs)
            return json.dumps(document, indent=2).encode("utf-8")

        return await self._in_worker(build)

    async def close(self) -> None:
        """Cancel renders in flight; the worker finishes the one it runs (bounded) and exits."""
        await self.metrics_cache.close()
        await self.status_cache.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
