"""The readiness gate's failure state, driven by an injected clock and an in-process fake of the client's API.

The clock never moves in these tests, so a write that happens at all happened "at once": a gate that still
honoured a stale backoff would wait for a clock that does not advance. The fake implements just the
``CoreV1Api`` calls ``agent.gate.api`` makes; the wire protocol is tested against the stand-in API server
in ``tests/test_kube.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from kubernetes.client.exceptions import ApiException

from agent.gate import api as kc
from agent.gate.sync import BACKOFF_CAP, GateConfig, PodGate, retry_delay
from harness.wait import until_async

CTYPE = "readiness-agent.io/dependencies-ready"


class FakeCore:
    """The four ``CoreV1Api`` calls the gate makes; ``fail`` makes pod status patches answer that HTTP status."""

    def __init__(self) -> None:
        self.fail: int | None = None
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, int]] = []
        self.status: str | None = None
        self.api_client = SimpleNamespace(close=lambda: None)

    def _pod(self) -> Any:
        conditions = [SimpleNamespace(type=CTYPE, status=self.status)] if self.status else []
        return SimpleNamespace(metadata=SimpleNamespace(uid="uid-1"), status=SimpleNamespace(conditions=conditions))

    def read_namespaced_pod_status(self, name: str, namespace: str, **_: Any) -> Any:
        return self._pod()

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        if self.fail:
            raise ApiException(status=self.fail, reason="Forbidden")
        condition = body["status"]["conditions"][0]
        self.patches.append(condition)
        self.status = condition["status"]
        return self._pod()

    def create_namespaced_event(self, namespace: str, event: Any, **_: Any) -> Any:
        self.events.append((event.type, event.reason, event.count))
        return event

    def patch_namespaced_event(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        return body


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[tuple[PodGate, FakeCore]]:
    core = FakeCore()
    session = kc.Session(core, lambda: None, "fake")
    gate = PodGate(GateConfig(CTYPE, "web-0", "shop", None), None, clock=lambda: 100.0,
                   api_factory=lambda: session, request_timeout=1.0, event_burst=1, event_refill=1000.0)
    await gate.start()
    await until_async(lambda: core.patches, 3, "the Starting patch")
    assert gate.backoff_cap == BACKOFF_CAP
    yield gate, core
    await gate.stop(0.5)


def last(core: FakeCore) -> tuple[str, str]:
    return (core.patches[-1]["status"], core.patches[-1]["reason"]) if core.patches else ("", "")


class TestHealedFailure:
    async def test_verdict_back_to_the_pods_value_clears_the_backoff(self, fake: tuple[PodGate, FakeCore]) -> None:
        """A 403 starts a backoff of the cap; the verdict returning to the written value ends it and the error.

        The clock is frozen, so the next transition is written only if nothing waits for the backoff.
        """
        gate, core = fake
        gate.publish(True, None, "all required checks ready")
        await until_async(lambda: last(core) == ("True", "DependenciesReady"), 3, "ready written")
        core.fail = 403
        gate.publish(False, "refused", "redis: refused")
        await until_async(lambda: gate.patch_counts["forbidden"] == 1, 3, "the denied write")
        assert gate.status()["in_sync"] is False and "forbidden" in str(gate.status()["last_error"])
        core.fail = None  # the RoleBinding is back; Redis recovered before any retry
        gate.publish(True, None, "all required checks ready")
        status = gate.status()
        assert status["in_sync"] is True and status["last_error"] is None and status["last_error_at"] is None
        gate.publish(False, "timeout", "redis: timeout")
        await until_async(lambda: last(core) == ("False", "RedisTimeout"), 3, "the next transition, at once")
        assert gate.patch_counts["forbidden"] == 1

    async def test_unhealed_failure_keeps_its_backoff(self, fake: tuple[PodGate, FakeCore]) -> None:
        """A new verdict that still differs from the pod's value does not reset the backoff (no patch storm)."""
        gate, core = fake
        core.fail = 503
        gate.publish(True, None, "ready")
        await until_async(lambda: gate.patch_counts["server_error"] == 1, 3, "the failed write")
        core.fail = None
        gate.publish(True, None, "ready, another message")
        gate.publish(False, "refused", "redis: refused")  # the pod holds Starting: still a write to do
        await gate.stop(0.5)  # stop() makes its one last attempt regardless of the backoff
        assert gate.patch_counts["server_error"] == 1 and gate.patch_counts["ok"] == 2
        assert last(core) == ("False", "RedisRefused")


class TestEvents:
    async def test_phases_are_normal_and_pending_events_are_written_at_stop(
            self, fake: tuple[PodGate, FakeCore]) -> None:
        """Starting, Stabilizing and Draining are Normal; with the bucket empty, stop() writes every pending Event."""
        gate, core = fake
        for ready, reason in ((False, "starting"), (False, "stabilizing"), (True, None), (False, "refused"),
                              (False, "draining")):
            gate.publish(ready, reason, "m")
        await until_async(lambda: core.events, 3, "the one Event the bucket allows")
        await gate.stop(1.0)
        assert core.events == [("Normal", "Starting", 1), ("Normal", "Stabilizing", 1),
                               ("Normal", "DependenciesReady", 1), ("Warning", "RedisRefused", 1),
                               ("Normal", "Draining", 1)]


def test_default_cap_is_about_ten_seconds() -> None:
    """The gate's default backoff cap is 10 s ±20 %, also for errors only an operator fixes."""
    forbidden = kc.Outcome("forbidden", 403, "")
    assert BACKOFF_CAP == 10.0
    assert retry_delay(1, forbidden, 0.25, BACKOFF_CAP, jitter=lambda a, b: a) == pytest.approx(8.0)
    assert retry_delay(1, forbidden, 0.25, BACKOFF_CAP, jitter=lambda a, b: b) == pytest.approx(12.0)
    assert retry_delay(30, kc.Outcome("timeout", None, ""), 0.25, BACKOFF_CAP, jitter=lambda a, b: b) <= 12.0
