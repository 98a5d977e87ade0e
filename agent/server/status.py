"""The ``/status`` document: the verdict, platform, effective settings with sources, per-check detail and the
recent transitions (agent/core/history.py).

Built from a snapshot and the settings only, so it shows exactly what the probes answer from. Every value is
secret-free: targets and URLs are the redacted forms.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent import __version__
from agent.config.settings import Settings
from agent.core.history import History
from agent.core.snapshot import AgentSnapshot, CheckSnapshot


def _check(check: CheckSnapshot, now: float) -> dict[str, Any]:
    last = check.last
    return {
        "kind": check.kind,
        "target": check.target,
        "required": check.required,
        "state": str(check.state),
        "since_seconds": round(now - check.since, 3),
        "last": None if last is None else {
            "ok": last.ok,
            "reason": None if last.reason is None else str(last.reason),
            "detail": last.detail,
            "latency_ms": round(last.latency * 1000, 3),
            "age_seconds": round(now - (check.last_at or now), 3),
        },
        "last_failure_reason": None if check.last_reason is None else str(check.last_reason),
        "consecutive_successes": check.consecutive_successes,
        "consecutive_failures": check.consecutive_failures,
        "window_remaining_seconds": check.window_remaining(now),
        "checks_run": check.checks_run,
        "monitor_connected": check.monitor_up,
        **({} if last is None or last.facts is None else last.facts.status()),
    }


def status_document(snap: AgentSnapshot, settings: Settings, now: float, healthy: bool,
                    history: History | None = None, gate: dict[str, object] | None = None, *,
                    tasks: int | None = None, transitions: list[dict[str, Any]] | None = None,
                    renders: dict[str, int] | None = None) -> dict[str, Any]:
    """The ``/status`` JSON for ``snap`` at monotonic time ``now``; ``history`` gives ``transitions``.

    Off the event loop (the render worker) pass what only the loop may read: ``tasks`` (the asyncio task
    count) and ``transitions`` (``history.document(now)``, taken on the loop); ``renders`` counts the renders
    of ``/metrics`` and ``/status`` so far.
    """
    remaining = snap.deadline_remaining(now)
    if transitions is None:
        transitions = [] if history is None else history.document(now)
    runtime: dict[str, Any] = {"asyncio_tasks": len(asyncio.all_tasks()) if tasks is None else tasks,
                               "healthy": healthy}
    if renders is not None:
        runtime["renders"] = renders
    return {
        "version": __version__,
        "state": str(snap.state),
        "ready": snap.ready,
        "started": snap.started,
        "since_seconds": round(now - snap.since, 3),
        "uptime_seconds": round(now - snap.started_at, 3),
        "readiness_mode": str(snap.mode),
        "draining": snap.draining,
        "platform": {"resolved": str(settings.resolved_platform), "reason": settings.platform_reason},
        "startup": {
            "deadline_seconds": snap.startup_timeout,
            "deadline_remaining_seconds": None if remaining is None else round(remaining, 3),
            "deadline_exceeded": snap.deadline_exceeded,
            "startup_seconds": None if snap.first_ready_at is None
            else round(snap.first_ready_at - snap.started_at, 3),
        },
        "detection_bound_seconds": round(settings.timing.detection_bound, 3),
        "runtime": runtime,
        "checks": {name: _check(check, now) for name, check in snap.checks.items()},
        "transitions": transitions,
        "kube_gate": gate if gate is not None else {"enabled": False},
        "settings": settings.effective(),
        "config_file": settings.config_file,
        "time": time.time(),
    }
