"""The pod readiness gate (agent.kube) driving the real ``kubernetes`` client against the kube-apiserver stand-in.

No kube-apiserver can run here, so ``harness/kube_api.py`` implements the wire protocol of exactly the
endpoints the gate uses. Everything else is real: the ``kubernetes`` client, its kubeconfig and in-cluster
loaders, urllib3, TLS with a CA made at test time. Figures (publish → condition patched, patches per
transition under flapping) are printed with ``-s`` and recorded as test properties.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from agent.core.model import CheckResult, ReadinessMode, Reason
from agent.core.store import VerdictStore
from agent.core.verdict import Timing
from agent.gate import api as kc
from agent.gate.sync import (
    CONDITION_REASONS,
    RESULTS,
    GateConfig,
    GateListener,
    GateSetupError,
    PodGate,
    condition_reason,
    gate_config,
    retry_delay,
)
from harness.kube_api import REASON_RE, KubeAPI, make_tls, write_kubeconfig
from harness.redis_server import free_port
from harness.wait import until_async
from tests.support.logcapture import AgentLogs, agent_logs

NS, POD, CTYPE = "shop", "web-0", "readiness-agent.io/dependencies-ready"
NEG = {"type": "cloud.google.com/load-balancer-neg-ready", "status": "True", "reason": "LoadBalancerNegReady",
       "lastTransitionTime": "2026-01-01T00:00:00Z"}
TOKEN = "token-1"
# The fixed set of check failure reasons (docs/checks.md "Failure reasons"; agent/ is being refactored; the words
# are the promise).
CHECK_REASONS = tuple(r.value for r in Reason)  # every reason the agent can give has its own
FAST = {"request_timeout": 1.0, "backoff_base": 0.02, "backoff_cap": 0.3}


@pytest.fixture(autouse=True)
def collected() -> Iterator[None]:
    """Collect garbage after each test, so a leaked socket or transport fails the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture
def logs() -> Iterator[AgentLogs]:
    with agent_logs(AgentLogs()) as handler:
        yield handler


@pytest_asyncio.fixture
async def api() -> AsyncIterator[KubeAPI]:
    server = await KubeAPI(tokens={TOKEN}).start()
    server.add_pod(NS, POD, [dict(NEG)])
    yield server
    await server.stop()


class Gates:
    """Starts gates against the stand-in and stops them after the test."""

    def __init__(self, api: KubeAPI, tmp: Path) -> None:
        self.api, self.tmp = api, tmp
        self.made: list[PodGate] = []
        self.registry = CollectorRegistry()

    async def start(self, *, token: str = TOKEN, server: str | None = None, **kw: Any) -> PodGate:
        kubeconfig = write_kubeconfig(self.tmp / f"kubeconfig-{len(self.made)}", server or self.api.url, token, NS)
        gate = PodGate(GateConfig(CTYPE, POD, NS, str(kubeconfig)), self.registry, **{**FAST, **kw})
        self.made.append(gate)
        await gate.start()
        return gate

    def metric(self, result: str, name: str = "readiness_agent_kube_patch_total") -> float | None:
        return self.registry.get_sample_value(name, {"result": result})


@pytest_asyncio.fixture
async def gates(api: KubeAPI, tmp_path: Path) -> AsyncIterator[Gates]:
    made = Gates(api, tmp_path)
    yield made
    for gate in made.made:
        await gate.stop(0.5)


def cond(api: KubeAPI) -> dict[str, Any]:
    return api.condition(NS, POD, CTYPE) or {}


async def synced(api: KubeAPI, status: str, reason: str | None = None, message: str | None = None,
                 timeout: float = 3.0) -> dict[str, Any]:
    """Wait until the stand-in's condition has ``status`` (and ``reason``, ``message`` when given); return it."""
    want = {"status": status, "reason": reason, "message": message}
    want = {k: v for k, v in want.items() if v is not None}
    await until_async(lambda: all(cond(api).get(k) == v for k, v in want.items()), timeout, f"condition {want}")
    return cond(api)


class TestGateConfig:
    def test_missing_pod_identity_is_one_line_naming_both(self) -> None:
        """Without POD_NAME and POD_NAMESPACE the error is one line naming both variables."""
        with pytest.raises(ValueError) as err:
            gate_config({}, CTYPE, None)
        message = str(err.value)
        assert "\n" not in message and "POD_NAME" in message and "POD_NAMESPACE" in message

    def test_missing_namespace_only(self) -> None:
        """Only the missing variable is named."""
        with pytest.raises(ValueError, match=r"needs POD_NAMESPACE in") as err:
            gate_config({"POD_NAME": "web-0"}, CTYPE, None)
        assert "POD_NAME " not in str(err.value)

    def test_bad_condition_type_names_the_value(self) -> None:
        """A condition type that is not a qualified name is rejected with its value."""
        with pytest.raises(ValueError, match=r"invalid --kube-condition-type 'not a type'"):
            gate_config({"POD_NAME": "a", "POD_NAMESPACE": "b"}, "not a type", None)

    def test_valid_settings(self, tmp_path: Path) -> None:
        """Pod identity comes from the downward-API variables."""
        kubeconfig = str(write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", TOKEN))
        cfg = gate_config({"POD_NAME": "web-0", "POD_NAMESPACE": "shop"}, CTYPE, kubeconfig)
        assert cfg == GateConfig(CTYPE, "web-0", "shop", kubeconfig)

    def test_missing_kubeconfig_names_the_file(self, tmp_path: Path) -> None:
        """A --kubeconfig that does not exist is a one-line error naming it."""
        with pytest.raises(ValueError, match=r"invalid --kubeconfig '.*nope': no such file"):
            gate_config({"POD_NAME": "a", "POD_NAMESPACE": "b"}, CTYPE, str(tmp_path / "nope"))

    def test_kubernetes_missing_gives_install_hint(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the kube extra is not installed the error says how to install it."""
        monkeypatch.setattr(kc, "kubernetes_available", lambda: False)
        with pytest.raises(ValueError, match=r"pip install 'readiness-agent\[kube\]'"):
            gate_config({"POD_NAME": "a", "POD_NAMESPACE": "b"}, CTYPE, None)


class TestKubeImport:
    def test_importing_the_gate_does_not_import_kubernetes(self) -> None:
        """agent.gate.sync and gate_config leave the kubernetes client unimported (the gate-off footprint)."""
        code = ("import sys, agent.gate.sync as k; k.gate_config({'POD_NAME': 'a', 'POD_NAMESPACE': 'b'}, "
                f"{CTYPE!r}, None); print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
        assert out.stdout.strip() == "[]"


class TestRetryDelay:
    def test_backoff_doubles_to_the_cap_with_jitter(self) -> None:
        """With the defaults (0.25 s → 30 s) delays double, stay within ±20 %, and stop growing at the cap."""
        timeout = kc.Outcome("timeout", None, "")
        lows = [retry_delay(n, timeout, 0.25, 30.0, jitter=lambda a, b: a) for n in range(1, 12)]
        highs = [retry_delay(n, timeout, 0.25, 30.0, jitter=lambda a, b: b) for n in range(1, 12)]
        assert lows[:4] == pytest.approx([0.2, 0.4, 0.8, 1.6]) and highs[0] == pytest.approx(0.3)
        assert lows[-1] == pytest.approx(24.0) and highs[-1] == pytest.approx(36.0)

    def test_operator_errors_wait_the_cap(self) -> None:
        """403, 404 and 422 go straight to the cap: retrying fast cannot fix them."""
        for result in ("forbidden", "not_found", "invalid"):
            assert retry_delay(1, kc.Outcome(result, 403, ""), 0.25, 30.0, jitter=lambda a, b: 1.0) == 30.0

    def test_retry_after_is_a_floor_up_to_a_minute(self) -> None:
        """Retry-After is honoured as a minimum, but a server asking for more than 60 s is not believed."""
        assert retry_delay(1, kc.Outcome("throttled", 429, "", 7.0), 0.25, 30.0) == 7.0
        assert retry_delay(1, kc.Outcome("throttled", 429, "", 3600.0), 0.25, 30.0) == 60.0


class TestConditionReason:
    def test_every_check_reason_has_a_camelcase_reason(self) -> None:
        """Each agent check reason maps to its own valid Kubernetes condition reason."""
        mapped = {word: condition_reason(False, word) for word in CHECK_REASONS}
        assert "NotReady" not in mapped.values()
        assert all(REASON_RE.match(v) for v in CONDITION_REASONS.values())
        assert len(set(mapped.values())) == len(mapped)

    def test_ready_draining_unknown(self) -> None:
        """Ready is DependenciesReady whatever the reason; draining and unknown words have their own."""
        assert condition_reason(True, "refused") == "DependenciesReady"
        assert condition_reason(False, "draining") == "Draining"
        assert condition_reason(False, "what") == condition_reason(False, None) == "NotReady"


class TestStandIn:
    async def test_patch_content_types(self, api: KubeAPI) -> None:
        """The stand-in answers 415 to a plain JSON patch and, like the real server, a merge patch replaces the list."""
        rv = int(api.pods[(NS, POD)]["metadata"]["resourceVersion"])
        url = f"{api.url}/api/v1/namespaces/{NS}/pods/{POD}/status"
        body = json.dumps({"status": {"conditions": [{"type": CTYPE, "status": "True"}]}})
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.patch(url, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
                assert r.status == 415
            async with http.patch(url, data=body, headers={**headers, "Content-Type": "text/plain"}) as r:
                assert r.status == 415
            async with http.get(url) as r:
                assert r.status == 401
            async with http.patch(url, data=body,
                                  headers={**headers, "Content-Type": "application/merge-patch+json"}) as r:
                assert r.status == 200
        assert api.condition(NS, POD, NEG["type"]) is None  # the whole list was replaced: why the gate never does this
        assert int(api.pods[(NS, POD)]["metadata"]["resourceVersion"]) > rv  # only the accepted write bumped it


class TestPodGate:
    async def test_condition_set_on_ready_and_cleared_on_failure(self, api: KubeAPI, gates: Gates) -> None:
        """Start writes False/Starting; ready writes True; a failure writes False with the mapped reason."""
        gate = await gates.start()
        first = await synced(api, "False", "Starting")
        gate.publish(True, None, "all checks ready")
        ready = await synced(api, "True", "DependenciesReady")
        assert ready["message"] == "all checks ready"
        gate.publish(False, "refused", "check redis: connection refused")
        failed = await synced(api, "False", "RedisRefused")
        assert failed["message"] == "check redis: connection refused"
        assert {"lastTransitionTime"} <= set(first) and {"lastTransitionTime"} <= set(failed)
        patches = [h for h in api.hits if h.method == "PATCH" and h.path.endswith("/status")]
        assert patches and {h.content_type for h in patches} == {kc.STRATEGIC_MERGE}
        await until_async(lambda: gate.status()["in_sync"], 2, "status in sync")
        status = gate.status()
        assert status["value"] is False and status["reason"] == "RedisRefused" and status["last_error"] is None
        assert isinstance(status["synced_at"], float) and abs(status["synced_at"] - time.time()) < 5

    async def test_other_conditions_untouched(self, api: KubeAPI, gates: Gates) -> None:
        """A pre-existing cloud.google.com/load-balancer-neg-ready condition survives every patch unchanged."""
        gate = await gates.start()
        for i in range(5):
            gate.publish(i % 2 == 0, None if i % 2 == 0 else "timeout", f"round {i}")
            await synced(api, "True" if i % 2 == 0 else "False", message=f"round {i}")
        assert api.condition(NS, POD, NEG["type"]) == NEG
        assert [c["type"] for c in api.pods[(NS, POD)]["status"]["conditions"]] == [NEG["type"], CTYPE]

    async def test_last_transition_time_only_when_status_changes(self, api: KubeAPI, gates: Gates) -> None:
        """A reason change with the same status keeps lastTransitionTime, as does a restart with the same status."""
        api.pods[(NS, POD)]["status"]["conditions"].append(
            {"type": CTYPE, "status": "False", "reason": "RedisLoading", "lastTransitionTime": "2026-01-01T00:00:09Z"})
        gate = await gates.start()
        await synced(api, "False", "Starting")
        gate.publish(False, "timeout", "check redis: timeout")
        after = await synced(api, "False", "RedisTimeout")
        assert after["lastTransitionTime"] == "2026-01-01T00:00:09Z"
        gate.publish(True, None, "ready")
        assert (await synced(api, "True"))["lastTransitionTime"] != "2026-01-01T00:00:09Z"

    async def test_flapping_converges(self, api: KubeAPI, gates: Gates,
                                      record_property: Any) -> None:
        """A verdict flapping 200 times ends with the latest value and no more patches than transitions + 1."""
        gate = await gates.start()
        await synced(api, "False", "Starting")
        before = len(api.writes)
        transitions = 200
        for i in range(transitions):
            gate.publish(i % 2 == 0, None if i % 2 == 0 else "refused", f"flap {i}")
            await asyncio.sleep(0.0005 if i % 7 else 0.003)  # a burst pattern, not an oracle
        await synced(api, "False", "RedisRefused", f"flap {transitions - 1}")
        patches = len(api.writes) - before
        assert patches <= transitions + 1
        record_property("patches_per_transition", round(patches / transitions, 3))
        print(f"\nflapping: {transitions} transitions -> {patches} patches "
              f"({patches / transitions:.3f} per transition)")

    async def test_publish_to_patched_latency(self, api: KubeAPI, gates: Gates, record_property: Any) -> None:
        """Each publish reaches the stand-in well within a second (median over 20 is the benchmark figure)."""
        gate = await gates.start()
        await synced(api, "False", "Starting")
        latencies = []
        for i in range(20):
            ready = i % 2 == 0
            t0 = time.monotonic()
            gate.publish(ready, None if ready else "loading", f"round {i}")
            await synced(api, "True" if ready else "False", message=f"round {i}")
            latencies.append(api.writes[-1].at - t0)
        median = statistics.median(latencies)
        record_property("publish_to_patched_median_ms", round(median * 1000, 2))
        print(f"\npublish -> patched: median {median * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms (n=20)")
        assert max(latencies) < 1.0


class TestPodGateFailures:
    async def test_rbac_denied_logged_once_and_counted(self, api: KubeAPI, gates: Gates, logs: AgentLogs) -> None:
        """A 403 on pods/status is one log line however often it is retried, counted as forbidden, then heals."""
        api.deny("patch", "pods/status")
        gate = await gates.start()
        assert gates.metric("forbidden") == 0.0 and gates.metric("ok") == 0.0  # pre-created
        await until_async(lambda: gate.patch_counts["forbidden"] >= 3, 3, "three denied attempts")
        assert len([line for line in logs.lines() if "forbidden" in line]) == 1
        assert gates.metric("forbidden") == gate.patch_counts["forbidden"]
        status = gate.status()
        assert status["value"] is None and "forbidden" in str(status["last_error"])
        assert 'cannot patch resource "pods/status"' in str(status["last_error"])
        api.clear()
        await synced(api, "False", "Starting")
        await until_async(lambda: any("in sync again" in line for line in logs.lines(logging.INFO)), 2, "recovery line")

    async def test_every_failure_class_is_counted(self, api: KubeAPI, gates: Gates, logs: AgentLogs) -> None:
        """409, 422, 500, 503, 404 and a 401 no reload cures each land in their metric label; the pod converges."""
        gate = await gates.start()
        await synced(api, "False", "Starting")
        expected = {409: "conflict", 422: "invalid", 500: "server_error", 503: "server_error", 404: "not_found"}
        for status, result in expected.items():
            api.inject(status, times=1, resource="pods/status")
            gate.publish(status % 2 == 0, None if status % 2 == 0 else "busy", f"after {status}")
            await synced(api, "True" if status % 2 == 0 else "False", message=f"after {status}")
            assert gate.patch_counts[result] >= 1, result
        api.tokens = {"other"}
        gate.publish(True, None, "unauthorized")
        await until_async(lambda: gate.patch_counts["unauthorized"] >= 1, 3, "401 counted")
        assert set(gate.patch_counts) == set(RESULTS)
        assert len(logs.lines()) == len(set(logs.lines()))  # each distinct error once

    async def test_429_honours_retry_after(self, api: KubeAPI, gates: Gates) -> None:
        """After a 429 with Retry-After: 1 the next patch waits at least one second."""
        gate = await gates.start()
        await synced(api, "False", "Starting")
        api.inject(429, times=1, retry_after=1, resource="pods/status")
        gate.publish(True, None, "ready")
        await synced(api, "True", timeout=4)
        throttled = next(h for h in api.hits if h.status == 429)
        retried = next(h for h in api.hits if h.at > throttled.at and h.method == "PATCH" and "/pods/" in h.path)
        assert 1.0 <= retried.at - throttled.at < 1.0 * 2 + 1
        assert gate.patch_counts["throttled"] == 1

    async def test_outage_publish_never_blocks(self, api: KubeAPI, gates: Gates, logs: AgentLogs,
                                               record_property: Any) -> None:
        """While the API stalls past its request timeout, publish() and the loop never wait on it; the latest wins.

        A publish or loop turn that waited on the API would take at least the 1.2 s request timeout; the bound
        is 1 s (expected: microseconds, × 2 + 1 s). The measured figures are printed.
        """
        gate = await gates.start(request_timeout=1.2)
        await synced(api, "False", "Starting")
        api.stall()
        lags: list[float] = []
        durations: list[float] = []
        deadline = time.monotonic() + 1.2 * 2 + 1
        i = 0
        while gate.patch_counts["timeout"] < 1:  # the verdict keeps moving until a request has timed out
            assert time.monotonic() < deadline, "no request timed out"
            t = time.perf_counter()
            gate.publish(i % 2 == 0, None if i % 2 == 0 else "timeout", f"outage {i}")
            durations.append(time.perf_counter() - t)
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)
            i += 1
        assert gate.patch_counts["timeout"] >= 1
        assert len([line for line in logs.lines() if "pods/status" in line]) == 1  # one line, many retries
        assert len([line for line in logs.lines() if "events" in line]) <= 1
        api.stall(False)
        last_ready = (i - 1) % 2 == 0
        await synced(api, "True" if last_ready else "False", message=f"outage {i - 1}")
        p99 = sorted(durations)[int(len(durations) * 0.99)]
        record_property("publish_p99_us_during_stall", round(p99 * 1e6, 1))
        print(f"\nstalled API: {len(durations)} publishes, median {statistics.median(durations) * 1e6:.1f} us, "
              f"max {max(durations) * 1e6:.1f} us; loop lag max {max(lags) * 1000:.1f} ms")
        assert max(durations) < 1.0 and max(lags) < 1.0

    async def test_api_unreachable(self, gates: Gates, logs: AgentLogs) -> None:
        """A closed port is counted as unreachable; /status and the log carry no token."""
        gate = await gates.start(server=f"http://127.0.0.1:{free_port()}", token="s3cret-token-value")
        await until_async(lambda: gate.patch_counts["unreachable"] >= 2, 3, "two unreachable attempts")
        text = json.dumps(gate.status()) + "\n".join(logs.lines(logging.DEBUG))
        assert "unreachable" in text and "s3cret" not in text
        assert len([line for line in logs.lines() if "unreachable" in line]) == 1

    async def test_pod_deleted_then_recreated(self, api: KubeAPI, gates: Gates, logs: AgentLogs) -> None:
        """404 (pod gone) is counted and logged once; a pod recreated under the same name is found again."""
        gate = await gates.start(backoff_cap=0.2)
        await synced(api, "False", "Starting")
        del api.pods[(NS, POD)]
        gate.publish(True, None, "ready")
        await until_async(lambda: gate.patch_counts["not_found"] >= 2, 3, "two 404s")
        assert len([line for line in logs.lines() if "not_found" in line]) == 1
        fresh = api.add_pod(NS, POD, [dict(NEG)])
        await synced(api, "True")
        gets = [h for h in api.hits if h.method == "GET"]
        assert len(gets) >= 2 and gets[-1].status == 200  # re-read the pod: new uid for events
        gate.publish(False, "loading", "loading")
        await until_async(lambda: any(e["involvedObject"]["uid"] == fresh["metadata"]["uid"]
                                      for e in api.events.values()), 3, "an event on the new pod")

    async def test_healed_403_does_not_delay_the_next_transition(self, api: KubeAPI, gates: Gates,
                                                                 record_property: Any) -> None:
        """RBAC denied while Redis flaps, restored once Redis is back: the next kill reaches the pod at once.

        The real defaults (0.25 s doubling to 10 s; a 403 waits the cap, 8-12 s): before the failure state was
        cleared on the verdict's return, this transition waited out that backoff (20.65 s measured in-cluster).
        """
        gate = await gates.start(backoff_base=0.25, backoff_cap=10.0)
        gate.publish(True, None, "all required checks ready")
        await synced(api, "True", "DependenciesReady")
        api.deny("patch", "pods/status")
        gate.publish(False, "refused", "redis: refused")
        await until_async(lambda: gate.patch_counts["forbidden"] == 1, 3, "the denied write")
        api.clear()
        gate.publish(True, None, "all required checks ready")
        assert gate.status()["in_sync"] is True and gate.status()["last_error"] is None
        t0 = time.monotonic()
        gate.publish(False, "timeout", "redis: timeout")
        await synced(api, "False", "RedisTimeout", timeout=3.0)
        took = api.pod_writes()[-1].at - t0 if api.pod_writes() else float("nan")
        await until_async(lambda: any(e["reason"] == "RedisTimeout" for e in api.events.values()), 3, "its Event")
        record_property("healed_403_next_transition_ms", round(took * 1000, 2))
        print(f"\nafter a healed 403: next transition written in {took * 1000:.1f} ms")

    async def test_stop_writes_the_last_value(self, api: KubeAPI, gates: Gates) -> None:
        """stop() right after publishing draining still writes False/Draining."""
        gate = await gates.start()
        await synced(api, "False", "Starting")
        gate.publish(True, None, "ready")
        gate.publish(False, "draining", "SIGTERM: draining")
        await gate.stop(1.0)
        assert cond(api)["reason"] == "Draining"

    async def test_stop_is_bounded_when_the_api_stalls(self, api: KubeAPI, gates: Gates) -> None:
        """stop(timeout) returns within its timeout even though the last sync cannot finish."""
        gate = await gates.start(request_timeout=5.0)
        await synced(api, "False", "Starting")
        api.stall()
        gate.publish(False, "draining", "draining")
        t = time.monotonic()
        await gate.stop(0.3)
        assert time.monotonic() - t < 0.3 * 2 + 1
        api.stall(False)


class TestPodGateEvents:
    async def test_event_per_transition(self, api: KubeAPI, gates: Gates) -> None:
        """Ready emits a Normal event, a failure a Warning with the reason, both about this pod's uid."""
        gate = await gates.start()
        gate.publish(True, None, "all checks ready")
        gate_uid = api.pods[(NS, POD)]["metadata"]["uid"]
        await until_async(lambda: len(api.events) == 1, 3, "first event")
        gate.publish(False, "oom", "check redis: OOM")
        await until_async(lambda: len(api.events) == 2, 3, "second event")
        by_reason = {e["reason"]: e for e in api.events.values()}
        assert by_reason["DependenciesReady"]["type"] == "Normal"
        assert by_reason["RedisOutOfMemory"]["type"] == "Warning"
        assert by_reason["RedisOutOfMemory"]["message"] == "check redis: OOM"
        assert {e["involvedObject"]["uid"] for e in api.events.values()} == {gate_uid}
        assert all(re.fullmatch(rf"{POD}\.[0-9a-f]+", name) for _, name in api.events)

    async def test_flapping_is_aggregated_and_rate_limited(self, api: KubeAPI, gates: Gates,
                                                           record_property: Any) -> None:
        """100 flaps make one Event per reason whose counts add up to every transition, in a bounded number of calls."""
        gate = await gates.start(event_burst=3, event_refill=0.2)
        await synced(api, "False", "Starting")
        t0 = time.monotonic()
        flaps = 100
        for i in range(flaps):
            gate.publish(i % 2 == 0, None if i % 2 == 0 else "refused", f"flap {i}")
            await asyncio.sleep(0.001)
        await until_async(lambda: sum(e["count"] for e in api.events.values()) == flaps, 5, "every transition counted")
        elapsed = time.monotonic() - t0
        assert sorted(e["reason"] for e in api.events.values()) == ["DependenciesReady", "RedisRefused"]
        calls = [h for h in api.hits if "/events" in h.path]
        assert len([h for h in calls if h.method == "POST"]) == 2
        assert len(calls) <= 3 + elapsed / 0.2 + 1
        record_property("event_calls_for_100_flaps", len(calls))
        print(f"\nevents: {flaps} transitions -> {len(calls)} event API calls in {elapsed:.2f} s")

    async def test_event_rbac_denied_does_not_block_the_condition(self, api: KubeAPI, gates: Gates,
                                                                  logs: AgentLogs) -> None:
        """Without events RBAC the condition still follows the verdict; the event error is logged once."""
        api.deny("create", "events")
        gate = await gates.start(event_burst=100, event_refill=0.01)
        for i in range(6):
            gate.publish(i % 2 == 0, None if i % 2 == 0 else "busy", f"r{i}")
            await synced(api, "True" if i % 2 == 0 else "False", message=f"r{i}")
        await until_async(lambda: gate.event_counts["forbidden"] >= 2, 3, "denied events")
        assert len([line for line in logs.lines() if "events" in line]) == 1
        assert gates.metric("forbidden", "readiness_agent_kube_events_total") == gate.event_counts["forbidden"]


class TestInClusterSession:
    async def test_token_rotation_over_tls(self, tmp_path: Path, logs: AgentLogs) -> None:
        """In-cluster (https, CA from the service account): a rotated token is picked up on the first 401."""
        ca_file, ctx = make_tls(tmp_path)
        api = await KubeAPI(tokens={"sa-token-1"}, ssl_context=ctx).start()
        api.add_pod(NS, POD, [dict(NEG)])
        token_file = tmp_path / "token"
        token_file.write_text("sa-token-1")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        gate = PodGate(GateConfig(CTYPE, POD, NS, None), None,
                       api_factory=lambda: kc.incluster_session(str(token_file), str(ca_file), env), **FAST)
        try:
            await gate.start()
            await synced(api, "False", "Starting")
            token_file.write_text("sa-token-2")  # the kubelet rotates the projected token; the old one expires
            api.tokens = {"sa-token-2"}
            gate.publish(True, None, "ready")
            await synced(api, "True")
            statuses = [(h.token, h.status) for h in api.hits]
            assert ("sa-token-1", 401) in statuses and statuses[-1][0] == "sa-token-2"
            assert gate.patch_counts["unauthorized"] == 0  # the reload retried inside the same attempt
        finally:
            await gate.stop(0.5)
            await api.stop()

    async def test_wrong_ca_is_unreachable_not_insecure(self, tmp_path: Path, logs: AgentLogs) -> None:
        """A server certificate from another CA is refused (verification is on) and reported as unreachable: TLS."""
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        _, server_ctx = make_tls(tmp_path / "a")
        other_ca, _ = make_tls(tmp_path / "b")
        api = await KubeAPI(tokens={"sa-token-1"}, ssl_context=server_ctx).start()
        api.add_pod(NS, POD)
        (tmp_path / "token").write_text("sa-token-1")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        gate = PodGate(GateConfig(CTYPE, POD, NS, None), None, **FAST,
                       api_factory=lambda: kc.incluster_session(str(tmp_path / "token"), str(other_ca), env))
        try:
            await gate.start()
            await until_async(lambda: gate.patch_counts["unreachable"] >= 1, 3, "a refused TLS handshake")
            assert "certificate verify failed" in str(gate.status()["last_error"])
            assert api.condition(NS, POD, CTYPE) is None and not api.hits
        finally:
            await gate.stop(0.5)
            await api.stop()

    async def test_no_incluster_credentials_is_one_line(self, tmp_path: Path) -> None:
        """Outside a cluster without --kubeconfig, start() fails with one line and no traceback text."""
        gate = PodGate(GateConfig(CTYPE, POD, NS, None), None,
                       api_factory=lambda: kc.open_session(None, environ={}, sa_dir=str(tmp_path)))
        with pytest.raises(GateSetupError) as err:
            await gate.start()
        assert "\n" not in str(err.value) and "--kubeconfig" in str(err.value)

    async def test_unexpected_loader_failure_is_one_line_without_secrets(self) -> None:
        """Any other failure while loading credentials is a one-line GateSetupError with tokens redacted."""
        def broken() -> kc.Session:
            raise RuntimeError("exec plugin said:\nAuthorization: Bearer abc.def.ghi")

        gate = PodGate(GateConfig(CTYPE, POD, NS, None), None, api_factory=broken)
        with pytest.raises(GateSetupError) as err:
            await gate.start()
        assert "\n" not in str(err.value) and "abc.def" not in str(err.value) and "RuntimeError" in str(err.value)

    async def test_bad_kubeconfig_is_one_line(self, tmp_path: Path) -> None:
        """A kubeconfig that is not one fails start() with one line naming the file."""
        bad = tmp_path / "kc"
        bad.write_text("clusters: 3\n")
        gate = PodGate(GateConfig(CTYPE, POD, NS, str(bad)), None)
        with pytest.raises(GateSetupError, match=r"invalid --kubeconfig '.*kc'") as err:
            await gate.start()
        assert "\n" not in str(err.value)


@dataclass
class Identity:
    """What the verdict store reads of a check (it never runs it): name, kind, target, required."""

    name: str
    kind: str = "redis"
    target: str = "redis://127.0.0.1:6379/0"
    required: bool = True

    async def run(self) -> CheckResult:
        raise AssertionError("the store never runs checks")

    async def wait_lost(self) -> None:
        raise AssertionError("the store never waits on monitors")

    async def close(self) -> None:
        return None


class TestGateListener:
    async def test_store_transitions_reach_the_pod(self, api: KubeAPI, gates: Gates) -> None:
        """Through the real verdict store: starting, ready, a refused Redis and draining each land on the pod."""
        now = [0.0]
        timing = Timing(window=0.5, interval=1.0, retry_interval=0.2, timeout=0.5, failure_threshold=3,
                        flap_window=10.0, backoff_after=5.0, jitter=0.0)
        store = VerdictStore([Identity("redis")], timing, ReadinessMode.ALWAYS, 10.0, lambda: now[0])
        gate = await gates.start()
        listener = GateListener(gate)
        store.subscribe(listener)
        listener.publish_snapshot(store.snapshot)
        await synced(api, "False", "Starting", "redis: starting")
        for t in (0.0, 0.3, 0.6):
            now[0] = t
            store.record("redis", CheckResult(ok=True, latency=0.001))
        await synced(api, "True", "DependenciesReady", "all required checks ready")
        for t in (1.0, 1.2, 1.4):
            now[0] = t
            store.record("redis", CheckResult(ok=False, latency=0.001, reason=Reason.REFUSED, detail="refused"))
        await synced(api, "False", "RedisRefused", "redis: refused")
        store.drain()
        await synced(api, "False", "Draining")
