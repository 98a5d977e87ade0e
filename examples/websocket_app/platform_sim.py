"""The platform in miniature: a kubelet-like readiness prober, a load balancer, and the clients.

The 1011 race is between the platform's routing and the backend's Redis, so reproducing it (and showing that
the agent prevents it) needs the platform's real behaviour, not a mock that says "ready" when asked:

* :class:`Prober` polls a readiness URL every ``period`` with a ``timeout`` and turns ready after
  ``success_threshold`` consecutive successes, not ready after ``failure_threshold`` failures, like kubelet
  (a pod starts not ready). With no URL there is no readiness probe: ready as soon as the backend runs.
* :class:`Router` sends each *new* connection to a backend whose pod is Ready, and holds the connection while
  none is (as a load balancer queues requests), for at most ``hold`` seconds. Connections already open are
  never moved: readiness only steers new ones (docs/design.md, "What readiness cannot do"). A pod is Ready, as
  in Kubernetes, when its containers are ready (the prober) *and* every readiness gate's condition is True;
  gates arrive pushed (:func:`pod_gates` on each pod the API server's watch delivers), never polled. The router
  acts on a change ``propagation`` seconds after it (default 0: the mechanisms' own latency only; a real cluster
  adds the EndpointSlice controller, kube-proxy or load-balancer programming on top).
* :class:`ClientLoad` starts a client every ``spacing`` seconds; each connects through the router, waits for
  the backend's ``ready`` frame, sends a few messages and expects each echoed back. Every client's fate is an
  :class:`Outcome`: served, closed with 1011, another error, or gave up waiting for a ready backend.

Which URL the prober watches is the whole experiment: the backend's naive ``/healthz`` (or nothing), as before
this project, or the agent's ``/readyz``; and whether the agent also pushes its verdict into a readiness gate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from examples.websocket_app.app import READY

Clock = Callable[[], float]


@dataclass(frozen=True)
class ProbeSpec:
    """A readiness probe's timing, as in a pod spec (seconds; kubelet's minimum period is 1 s, ours is faster)."""

    period: float = 0.25
    timeout: float = 0.5
    failure_threshold: int = 2
    success_threshold: int = 1


class Prober:
    """Polls one readiness URL and keeps kubelet's view of it: ``ready`` and when it changed."""

    def __init__(self, url: str | None, spec: ProbeSpec, on_change: Callable[[], None] = lambda: None,
                 clock: Clock = time.monotonic) -> None:
        self.url = url
        self.spec = spec
        self.on_change = on_change
        self.clock = clock
        self.ready = url is None  # no readiness probe: ready once running
        self.transitions: list[tuple[float, bool]] = [(clock(), self.ready)]
        self.probes = 0
        self._successes = 0
        self._failures = 0

    async def _probe(self, session: aiohttp.ClientSession) -> bool:
        assert self.url is not None
        try:
            async with asyncio.timeout(self.spec.timeout), session.get(self.url) as response:
                await response.read()
                return 200 <= response.status < 400  # kubelet's rule for HTTP probes
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    def _observe(self, ok: bool) -> None:
        self.probes += 1
        self._successes, self._failures = (self._successes + 1, 0) if ok else (0, self._failures + 1)
        if not self.ready and self._successes >= self.spec.success_threshold:
            self._set(True)
        elif self.ready and self._failures >= self.spec.failure_threshold:
            self._set(False)

    def _set(self, ready: bool) -> None:
        self.ready = ready
        self.transitions.append((self.clock(), ready))
        self.on_change()

    async def run(self) -> None:
        """Probe every ``period`` (measured from probe start, like kubelet's ticker) until cancelled."""
        if self.url is None:
            return
        async with aiohttp.ClientSession() as session:
            next_at = self.clock()
            while True:
                self._observe(await self._probe(session))
                next_at += self.spec.period
                await asyncio.sleep(max(0.0, next_at - self.clock()))


def pod_gates(pod: dict[str, Any]) -> dict[str, bool]:
    """Each readiness gate of ``pod`` → whether its condition is True (a missing condition is False, as in
    Kubernetes: a gate nobody has set keeps the pod un-Ready)."""
    conditions = {c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions", [])}
    return {g["conditionType"]: conditions.get(g["conditionType"]) == "True"
            for g in pod.get("spec", {}).get("readinessGates", [])}


@dataclass
class Target:
    """One backend behind the router: where clients connect and who decides whether it gets them."""

    name: str
    ws_url: str
    prober: Prober
    gates: dict[str, bool] = field(default_factory=dict)  # readiness gate → condition True (none: no gates)
    routable: bool = False  # the router's view of ``pod_ready``, ``propagation`` s late
    routable_changes: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def pod_ready(self) -> bool:
        """Kubernetes' rule: Ready when every container is ready and every readiness gate's condition is True."""
        return self.prober.ready and all(self.gates.values())


class Router:
    """Routes each new connection to a Ready target (round robin); holds it while none is ready."""

    def __init__(self, propagation: float = 0.0, clock: Clock = time.monotonic) -> None:
        self.targets: list[Target] = []
        self.propagation = propagation
        self.clock = clock
        self._changed = asyncio.Event()
        self._turn = 0

    def add(self, name: str, ws_url: str, readiness_url: str | None, spec: ProbeSpec,
            clock: Clock = time.monotonic) -> Target:
        """Put a backend behind the router, watched by its own prober (run ``target.prober.run()``)."""
        prober = Prober(readiness_url, spec, lambda: self._update(target), clock)
        target = Target(name, ws_url, prober)
        self.targets.append(target)
        self._update(target)
        return target

    def set_gates(self, target: Target, gates: dict[str, bool]) -> None:
        """The pod's readiness-gate conditions as a watch delivered them (``pod_gates``)."""
        target.gates = dict(gates)
        self._update(target)

    def _update(self, target: Target) -> None:
        """The pod's readiness may have changed: act on it now, or ``propagation`` s from now."""
        ready = target.pod_ready
        if self.propagation > 0:
            asyncio.get_running_loop().call_later(self.propagation, self._apply, target, ready)
        else:
            self._apply(target, ready)

    def _apply(self, target: Target, ready: bool) -> None:
        if ready != target.routable or not target.routable_changes:
            target.routable = ready
            target.routable_changes.append((self.clock(), ready))
        self.changed()

    def changed(self) -> None:
        """A target's readiness changed: wake every held connection to look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def route(self, hold: float) -> Target | None:
        """A ready target, waiting up to ``hold`` seconds for one; None when the wait runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        while True:
            ready = [t for t in self.targets if t.routable]
            if ready:
                self._turn += 1
                return ready[self._turn % len(ready)]
            try:
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()
            except TimeoutError:
                return None


@dataclass
class Outcome:
    """What happened to one client. Times are ``clock()`` values."""

    client: int
    arrived: float
    pinned: bool = False
    routed: float | None = None
    ended: float = 0.0
    result: str = "error"  # served | 1011 | refused (handshake answered 503 by the app) | error | gave_up
    detail: str = ""
    accepted: float | None = None  # when the backend let the handshake through (its record; the race fills it)

    @property
    def gated(self) -> float:
        """Seconds the router held this client before any backend was ready for it."""
        return (self.routed if self.routed is not None else self.ended) - self.arrived


async def run_client(session: aiohttp.ClientSession, router: Router, client: int, *, messages: int = 3,
                     hold: float = 30.0, timeout: float = 10.0, pinned: bool = False,
                     clock: Clock = time.monotonic) -> Outcome:
    """One user: connect through the router, wait for ``ready``, send ``messages`` messages, expect the echoes."""
    out = Outcome(client, clock(), pinned)
    target = await router.route(hold)
    if target is None:
        out.result, out.ended = "gave_up", clock()
        return out
    out.routed = clock()
    expected = [READY] + [f"c{client}-m{k}" for k in range(messages)]
    try:
        # One deadline for the whole conversation: a backend that hangs is an error, never a stuck test.
        async with asyncio.timeout(timeout), session.ws_connect(f"{target.ws_url}?user=c{client}") as ws:
            for k, text in enumerate(expected):
                if k > 0:
                    await ws.send_str(text)
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    code = ws.close_code
                    out.result = "1011" if code == aiohttp.WSCloseCode.INTERNAL_ERROR else "error"
                    out.detail = f"close {code}: {msg.extra or msg.type.name}"
                    break
                if msg.data != text:
                    out.detail = f"expected {text!r}, got {msg.data!r}"
                    break
            else:
                out.result = "served"
    except aiohttp.WSServerHandshakeError as exc:
        out.result = "refused" if exc.status == 503 else "error"
        out.detail = f"handshake {exc.status}: {exc.message}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        out.detail = f"{type(exc).__name__}: {exc}"
    out.ended = clock()
    return out


@dataclass
class ClientLoad:
    """Clients arriving every ``spacing`` seconds, from ``start`` until ``stop``; keeps every outcome."""

    router: Router
    spacing: float = 0.04
    messages: int = 3
    hold: float = 30.0
    clock: Clock = time.monotonic
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)  # bugs in a client, raised by ``stop``
    _tasks: set[asyncio.Task[Outcome]] = field(default_factory=set)
    _finished: asyncio.Event = field(default_factory=asyncio.Event)
    _arrivals: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None
    _next_id: int = 0

    async def start(self) -> ClientLoad:
        # limit=0: a load balancer does not cap the connections it forwards; WebSockets hold theirs for long.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._arrivals = asyncio.create_task(self._arrive(), name="client-arrivals")
        return self

    def spawn(self, pinned: bool = False) -> asyncio.Task[Outcome]:
        """Start one client now (the arrival loop uses this; so does a scenario pinning one at a known moment)."""
        assert self._session is not None
        self._next_id += 1
        task = asyncio.create_task(run_client(self._session, self.router, self._next_id, messages=self.messages,
                                              hold=self.hold, pinned=pinned, clock=self.clock))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    @property
    def in_flight(self) -> int:
        """Clients started and not finished (held by the router, or talking to a backend)."""
        return len(self._tasks)

    async def settled(self, at_most: int = 5, timeout: float = 10.0) -> None:
        """Wait until at most ``at_most`` clients are in flight: a burst released by the router has drained."""
        async with asyncio.timeout(timeout):
            while self.in_flight > at_most:
                self._finished.clear()
                await self._finished.wait()

    def _done(self, task: asyncio.Task[Outcome]) -> None:
        self._tasks.discard(task)
        self._finished.set()
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            self.errors.append(exc)
        else:
            self.outcomes.append(task.result())

    async def _arrive(self) -> None:
        next_at = self.clock()
        while True:
            self.spawn()
            next_at += self.spacing  # a schedule, not a pause after each: arrivals stay steady under load
            await asyncio.sleep(max(0.0, next_at - self.clock()))

    async def stop(self, grace: float = 10.0) -> list[Outcome]:
        """No more arrivals; let clients in flight finish (up to ``grace`` s), cancel the rest, close."""
        if self._arrivals is not None:
            self._arrivals.cancel()
            await asyncio.wait([self._arrivals])
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self.errors:
            raise self.errors[0]
        return sorted(self.outcomes, key=lambda o: o.client)
