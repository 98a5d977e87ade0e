"""The pod readiness gate: pushes the agent's verdict into a pod condition and emits transition Events.

Why: a readiness gate (``spec.readinessGates``) is how GKE's NEG controller and the AWS Load Balancer Controller
hold a pod out of rotation; with the agent writing its own condition, ``kubectl get pod`` and the load balancer
see the *stable* Redis verdict, and every transition shows in ``kubectl describe pod`` as an Event.

Opt-in (``--kube-readiness-gate``); with it off nothing here touches the ``kubernetes`` client, which is
imported only by ``agent.gate.api`` functions running on the gate's worker thread.

Wiring (the whole interface)::

    cfg = gate_config(os.environ, settings.kube_condition_type, settings.kubeconfig)  # ValueError → exit 2
    gate = PodGate(cfg, registry)
    await gate.start()                       # loads credentials off the loop (GateSetupError → exit 2)
    gate.publish(ready, reason, message)     # on every agent-level transition; never blocks, never raises
    gate.status()                            # → /status["kube_gate"] (disabled_status() when the gate is off)
    await gate.stop(timeout)                 # after publishing "draining": one last best-effort sync

``GateListener(gate)`` (from ``agent.gate.verdict``, re-exported here) does the ``publish`` part as a
verdict-store listener (``store.subscribe(listener)``, then ``listener.publish_snapshot(store.snapshot)`` once
after ``start``); ``verdict_of(snapshot)`` is the mapping it uses.

Behaviour: one worker task and one worker thread, so at most one API call is in flight; ``publish`` only
records the latest value and wakes the worker, so bursts coalesce and the pod converges to the latest verdict.
Before the first ``publish`` the gate writes ``False``/``Starting``. Failures back off exponentially
(``backoff_base`` doubling to ``backoff_cap``, ±20 % jitter; ``Retry-After`` honoured on 429; straight to the
cap for 403/404/422, which only an operator fixes), are logged once per distinct error and counted in
``readiness_agent_kube_patch_total{result}``. A verdict back at the pod's value (nothing to write, so no
success could reset it) clears the failure state: the next transition is written at once. Events (``Normal``
for ready and the agent's phases, ``Warning`` for a failing dependency) are aggregated per (type, reason) and
rate-limited by a token bucket (``event_burst`` calls, one more every ``event_refill`` seconds); transitions
that happen while the bucket is empty are folded into the next call's ``count``, never dropped: ``stop``
writes every pending one within its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from agent.gate import api as kc
from agent.gate.api import RESULTS, GateSetupError, Outcome, Session
from agent.gate.verdict import CONDITION_REASONS, GateListener, condition_reason, disabled_status, verdict_of
from agent.logs.labels import labels

__all__ = ["CONDITION_REASONS", "RESULTS", "GateConfig", "GateListener", "GateSetupError", "PodGate",
           "condition_reason", "disabled_status", "gate_config", "retry_delay", "verdict_of"]

log = logging.getLogger("readiness_agent")

_QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
RETRY_AFTER_MAX = 60.0  # a server asking for longer than this is not believed
_PERMANENT = {"forbidden", "not_found", "invalid"}  # need an operator (RBAC, a new pod, a bad condition type)
BACKOFF_CAP = 10.0  # ±20 %: a fleet retrying through a long outage spreads out, and a healed one is back soon
_NORMAL_REASONS = {"Starting", "Stabilizing", "Draining"}  # the agent's own phases, not a dependency failing


@dataclass(frozen=True)
class GateConfig:
    """Which condition to write on which pod, and where the credentials come from."""

    condition_type: str
    pod_name: str
    namespace: str
    kubeconfig: str | None


def gate_config(environ: Mapping[str, str], condition_type: str, kubeconfig: str | None) -> GateConfig:
    """Validate the gate's settings; ``ValueError`` with one line naming what is wrong or missing."""
    missing = [name for name in ("POD_NAME", "POD_NAMESPACE") if not environ.get(name, "").strip()]
    if missing:
        raise ValueError(f"--kube-readiness-gate needs {' and '.join(missing)} in the environment (downward API: "
                         "fieldRef metadata.name / metadata.namespace)")
    if len(condition_type) > 316 or not _QUALIFIED_NAME.match(condition_type):
        raise ValueError(f"invalid --kube-condition-type {condition_type!r}: must be a qualified name like "
                         "readiness-agent.io/dependencies-ready")
    if kubeconfig is not None and not os.path.isfile(kubeconfig):
        raise ValueError(f"invalid --kubeconfig {kubeconfig!r}: no such file")
    if not kc.kubernetes_available():
        raise ValueError(f"--kube-readiness-gate: {kc.INSTALL_HINT}")
    return GateConfig(condition_type, environ["POD_NAME"].strip(), environ["POD_NAMESPACE"].strip(), kubeconfig)


def retry_delay(failures: int, outcome: Outcome, base: float, cap: float,
                jitter: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the next attempt after ``failures`` consecutive failures ending in ``outcome``.

    ``base`` doubling up to ``cap`` (straight to ``cap`` for errors only an operator fixes), ±20 % jitter, and
    never sooner than the server's ``Retry-After`` (believed up to ``RETRY_AFTER_MAX``).
    """
    delay = cap if outcome.result in _PERMANENT else min(cap, base * 2 ** max(0, failures - 1))
    delay *= jitter(0.8, 1.2)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, RETRY_AFTER_MAX))
    return delay


@dataclass(frozen=True)
class _Value:
    ready: bool
    reason: str
    message: str


class PodGate:
    """Keeps one pod condition equal to the latest published verdict; see the module docstring."""

    def __init__(self, config: GateConfig, registry: CollectorRegistry | None,
                 clock: Callable[[], float] = time.monotonic, api_factory: Callable[[], Session] | None = None,
                 *, request_timeout: float = 5.0, backoff_base: float = 0.25, backoff_cap: float = BACKOFF_CAP,
                 event_burst: int = 10, event_refill: float = 10.0) -> None:
        self.config = config
        self.clock = clock
        self._factory = api_factory or (lambda: kc.open_session(config.kubeconfig))
        self.request_timeout = request_timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.event_burst, self.event_refill = event_burst, event_refill
        self._patches = Counter("readiness_agent_kube_patch_total",
                                "Pod condition patches (readiness gate) by result.", ["result"], registry=registry)
        self._events_metric = Counter("readiness_agent_kube_events_total",
                                      "Transition Event writes (create or count bump) by result.", ["result"],
                                      registry=registry)
        for result in RESULTS:
            self._patches.labels(result)
            self._events_metric.labels(result)
        self.patch_counts = dict.fromkeys(RESULTS, 0)
        self.event_counts = dict.fromkeys(RESULTS, 0)
        self._desired = _Value(False, "Starting", "readiness-agent started; dependencies not checked yet")
        self._published: tuple[bool, str] | None = None
        self._synced: _Value | None = None
        self._synced_at: float | None = None
        self._pending_events: dict[tuple[str, str], tuple[int, str]] = {}
        self._tokens, self._tokens_at = float(event_burst), clock()
        self._failures = 0
        self._next_at = 0.0
        self._event_next_at = 0.0
        self._logged: dict[str, str | None] = {"patch": None, "event": None}
        self._errors: dict[str, tuple[str, float] | None] = {"patch": None, "event": None}  # standing errors
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_deadline = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer: kc.PodStatusWriter | None = None
        self._recorder: kc.EventRecorder | None = None

    # --- the interface -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load credentials on the worker thread (imports ``kubernetes``), then start the worker task."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kube-gate")
        loop = asyncio.get_running_loop()
        try:
            session = await loop.run_in_executor(self._executor, self._factory)
        except Exception as exc:
            self._executor.shutdown(wait=False)
            if isinstance(exc, GateSetupError):
                raise
            reason = kc.scrub(kc.one_line(f"{type(exc).__name__}: {exc}"))
            raise GateSetupError(f"--kube-readiness-gate: cannot load credentials: {reason}") from None
        cfg = self.config
        self._writer = kc.PodStatusWriter(session, cfg.namespace, cfg.pod_name, cfg.condition_type)
        self._recorder = kc.EventRecorder(session, cfg.namespace, cfg.pod_name, self.clock)
        log.info("kube gate: condition %s on pod %s/%s via %s", cfg.condition_type, cfg.namespace, cfg.pod_name,
                 session.describe, extra=labels(event="kube_gate"))
        self._task = asyncio.create_task(self._run(), name="kube-gate")

    def publish(self, ready: bool, reason: str | None, message: str) -> None:
        """Record the latest verdict (and an Event when ``ready``/``reason`` changed); never blocks or raises."""
        try:
            value = _Value(bool(ready), condition_reason(bool(ready), reason), " ".join(str(message).split())[:1024])
            self._desired = value
            if value == self._synced and self._failures:
                self._healed()  # back to what the pod holds: the failed write is moot, and so is its backoff
            key = (value.ready, value.reason)
            if key != self._published:
                self._published = key
                normal = value.ready or value.reason in _NORMAL_REASONS
                ekey = ("Normal" if normal else "Warning", value.reason)
                count, _ = self._pending_events.pop(ekey, (0, ""))
                self._pending_events[ekey] = (count + 1, value.message)  # re-inserted: flushed in time order
            self._wake.set()
        except Exception:  # the verdict path must never fail because of the gate
            log.exception("kube gate: publish failed", extra=labels(event="kube_publish_failed"))

    async def stop(self, timeout: float) -> None:
        """One last best-effort sync of the latest value within ``timeout`` seconds, then stop the worker."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_deadline = self.clock() + timeout
        self._wake.set()
        if self._task is not None and not self._task.done():
            done, _ = await asyncio.wait([self._task], timeout=timeout)
            if not done:
                self._task.cancel()
                await asyncio.wait([self._task])
        if self._executor is not None:
            if self._writer is not None:  # queued behind any call still running (a stalled one: its own timeout)
                closed = asyncio.wrap_future(self._executor.submit(self._writer.session.close))
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(max(0.0, self._stop_deadline - self.clock()) + 0.05):
                        await closed
            self._executor.shutdown(wait=False)

    def status(self) -> dict[str, object]:
        """For ``/status``: what the pod's condition holds as far as the agent knows, and how syncing goes."""
        synced = self._synced
        standing = [e for e in self._errors.values() if e is not None]
        last = max(standing, key=lambda e: e[1]) if standing else None
        return {
            "enabled": True,
            "condition_type": self.config.condition_type,
            "pod": f"{self.config.namespace}/{self.config.pod_name}",
            "value": synced.ready if synced else None,
            "reason": synced.reason if synced else None,
            "synced_at": self._synced_at,
            "in_sync": synced == self._desired,
            "last_error": last[0] if last else None,
            "last_error_at": last[1] if last else None,
            "patches": {k: v for k, v in self.patch_counts.items() if v},
            "events": {k: v for k, v in self.event_counts.items() if v},
        }

    # --- the worker ----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        last_was_condition = False
        while not self._stopping:
            self._wake.clear()
            now = self.clock()
            event_wait = self._event_wait(now)
            condition_due = self._synced != self._desired and now >= self._next_at
            # The condition goes first, but a due Event gets every other turn so flapping cannot starve it.
            if condition_due and not (event_wait == 0.0 and last_was_condition):
                await self._sync_condition(self.request_timeout)
                last_was_condition = True
                continue
            if event_wait == 0.0:
                await self._flush_event(self.request_timeout)
                last_was_condition = False
                continue
            waits = [w for w in (event_wait, self._next_at - now if self._synced != self._desired else None)
                     if w is not None]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(waits) if waits else None):
                    await self._wake.wait()
            last_was_condition = False  # after a quiet spell the condition is first again
        # stopping: one attempt, no backoff, within what is left of stop()'s timeout
        if self._synced != self._desired:
            await self._sync_condition(max(0.05, self._stop_deadline - self.clock()))
        # then every pending Event that fits in the time left (the bucket is not consulted: at most one call
        # per (type, reason), and this is the last chance); a failed one ends it
        while (remaining := self._stop_deadline - self.clock()) > 0.05 and self._event_wait(self.clock()) is not None:
            if not await self._flush_event(remaining):
                break

    def _event_wait(self, now: float) -> float | None:
        """Seconds until an Event can be written (0.0 now), or None when nothing is pending."""
        if not self._pending_events or self._writer is None or self._writer.uid is None or self._failures:
            return None  # the condition goes first; events wait until its patch works (and the pod uid is known)
        self._tokens = min(float(self.event_burst), self._tokens + (now - self._tokens_at) / self.event_refill)
        self._tokens_at = now
        token_wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) * self.event_refill
        return max(token_wait, self._event_next_at - now, 0.0)

    async def _sync_condition(self, timeout: float) -> None:
        value, writer = self._desired, self._writer
        assert writer is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, writer.sync, value.ready, value.reason, value.message,
                                       timeout)
        except Exception as exc:  # every failure is classified, counted and retried
            outcome = kc.classify(exc)
            if outcome.result in ("not_found", "conflict"):
                writer.forget()
            self._count("patch", outcome.result)
            self._failed("patch", outcome)
            self._failures += 1
            self._next_at = self.clock() + self._delay(self._failures, outcome)
            return
        self._count("patch", "ok")
        self._synced, self._synced_at = value, time.time()
        self._healed()

    def _healed(self) -> None:
        """The pod holds the desired value again: forget the failure, its backoff and its error."""
        if self._logged["patch"] is not None:
            value = self._desired
            log.info("kube gate: condition %s=%s (%s) in sync again after %d failed attempts",
                     self.config.condition_type, value.ready, value.reason, self._failures,
                     extra=labels(event="kube_in_sync"))
        self._logged["patch"] = None
        self._errors["patch"] = None
        self._failures, self._next_at = 0, 0.0

    async def _flush_event(self, timeout: float) -> bool:
        (etype, reason), (count, message) = next(iter(self._pending_events.items()))
        del self._pending_events[(etype, reason)]
        self._tokens -= 1.0
        recorder, writer = self._recorder, self._writer
        assert recorder is not None and writer is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, recorder.record, writer.uid, etype, reason, message, count,
                                       timeout)
        except Exception as exc:  # classified, counted, retried later
            outcome = kc.classify(exc)
            pending, _ = self._pending_events.pop((etype, reason), (0, message))
            # put it back first in line, keeping any newer message
            self._pending_events = {(etype, reason): (count + pending, message), **self._pending_events}
            self._count("event", outcome.result)
            self._failed("event", outcome)
            self._event_next_at = self.clock() + self._delay(3, outcome)
            return False
        self._count("event", "ok")
        self._logged["event"] = None
        self._errors["event"] = None
        return True

    def _delay(self, failures: int, outcome: Outcome) -> float:
        return retry_delay(failures, outcome, self.backoff_base, self.backoff_cap)

    def _count(self, what: str, result: str) -> None:
        counts, metric = (self.patch_counts, self._patches) if what == "patch" else (self.event_counts,
                                                                                     self._events_metric)
        counts[result] += 1
        metric.labels(result).inc()

    def _failed(self, what: str, outcome: Outcome) -> None:
        key = f"{outcome.result}:{outcome.status}"
        self._errors[what] = (f"{what}: {outcome.result}: {outcome.message}", time.time())
        if self._logged[what] != key:  # one line per distinct error, not one per retry
            self._logged[what] = key
            target = "pods/status" if what == "patch" else "events"
            log.warning("kube gate: %s on %s/%s failed: %s (%s); retrying with backoff", target, self.config.namespace,
                        self.config.pod_name, outcome.result, outcome.message, extra=labels(event="kube_write_failed"))
