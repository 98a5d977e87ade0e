"""deploy/cloudrun/service.yaml against the rules of Cloud Run that its README lists, and the real agent's
/startupz against what Cloud Run needs from it.

Cloud Run may route traffic to a new instance before its first readiness probe, so the startup probe must
already mean "ready, stability window included": the real agent and a real redis-server show that /startupz
turns 200 no earlier than the window after Redis could answer, and that it stays 200 when Redis fails later
(after the start only the readiness probe on /readyz gates traffic). The manifest checks encode the limits
cited in deploy/cloudrun/README.md; the shared helpers (kubernetes-validate, the agent run with a manifest's
environment) come from tests/test_deploy.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.agent_process import AgentProcess
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess
from tests.test_deploy import (
    AGENT_CONTAINER,
    DEPLOY,
    assert_probes_match_agent,
    listen_port,
    run_agents,
)
from tests.test_helm import HEADROOM, measured_peaks, mebibytes  # the chart's sizing rule, same table

SERVICE = DEPLOY / "cloudrun" / "service.yaml"
CLOUD_RUN_README = DEPLOY / "cloudrun" / "README.md"
STARTUP_PROBE_MAX_SECONDS = 240  # failureThreshold × periodSeconds and initialDelaySeconds (cloudrun/README.md)
# seconds, the agent's default (docs/checks.md "How the verdict works"); far less for a killed Redis
DETECTION_BOUND = 3.42
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def containers(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in service["spec"]["template"]["spec"]["containers"]}


def ingress(service: dict[str, Any]) -> dict[str, Any]:
    """The one container with a port: Cloud Run sends the requests to it."""
    with_ports = [c for c in containers(service).values() if c.get("ports")]
    assert len(with_ports) == 1, [c["name"] for c in with_ports]
    return with_ports[0]


def cpu(value: str) -> Decimal:
    """A Kubernetes CPU quantity ("1", "500m", "2") in vCPU, exactly."""
    return Decimal(value[:-1]) / 1000 if value.endswith("m") else Decimal(value)


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SERVICE.read_text())
    return loaded


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, not listening): the manifest's Redis stand-in."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class TestCloudRunReadinessProbe:
    def test_readiness_probe_is_on_the_ingress_container_and_asks_the_agent(self, service: dict[str, Any]) -> None:
        """The ingress container's readiness probe GETs /readyz on the port the agent listens on."""
        app, agent = ingress(service), containers(service)[AGENT_CONTAINER]
        probe = app["readinessProbe"]
        assert probe["httpGet"] == {"path": "/readyz", "port": listen_port(agent)}
        assert app["name"] != AGENT_CONTAINER
        assert_probes_match_agent(agent, {"startupProbe", "livenessProbe"})

    def test_launch_stage_allows_a_preview_readiness_probe(self, service: dict[str, Any]) -> None:
        """The Service (not its template) carries the BETA launch stage a Preview readiness probe needs."""
        assert service["metadata"]["annotations"]["run.googleapis.com/launch-stage"] == "BETA"
        assert "run.googleapis.com/launch-stage" not in service["spec"]["template"]["metadata"]["annotations"]

    def test_probe_timings_are_within_cloud_runs_limits(self, service: dict[str, Any]) -> None:
        """Every probe's timeout is below its period, and the startup probe's budget is at most 240 s."""
        probes = [(name, c[kind]) for name, c in containers(service).items() for kind in PROBES if kind in c]
        assert len(probes) == 3
        for name, probe in probes:
            assert 1 <= probe["timeoutSeconds"] < probe["periodSeconds"], name
        startup = containers(service)[AGENT_CONTAINER]["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] <= STARTUP_PROBE_MAX_SECONDS
        assert startup.get("initialDelaySeconds", 0) <= STARTUP_PROBE_MAX_SECONDS

    def test_readiness_follows_the_agent_within_its_detection_bound(
        self, service: dict[str, Any], refusing_port: int, tmp_path: Path,
    ) -> None:
        """The readiness probe's failure budget fits in the real agent's detection bound for this manifest."""
        agent = containers(service)[AGENT_CONTAINER]
        status = run_agents({"cloudrun": (agent, None)}, refusing_port, tmp_path)["cloudrun"].status
        probe = ingress(service)["readinessProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] <= status["detection_bound_seconds"]
        deadline = status["startup"]["deadline_seconds"]
        startup = agent["startupProbe"]
        assert deadline < startup["periodSeconds"] * startup["failureThreshold"] <= STARTUP_PROBE_MAX_SECONDS


class TestCloudRunCpu:
    def test_every_cpu_reading_gives_a_whole_number(self, service: dict[str, Any]) -> None:
        """Each container's CPU limit and their sum are whole vCPUs, so no reading of the rules forces
        request-based billing on a service that keeps CPU allocated."""
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        assert annotations["run.googleapis.com/cpu-throttling"] == "false"
        assert service["spec"]["template"]["spec"]["containerConcurrency"] > 1
        limits = [cpu(c["resources"]["limits"]["cpu"]) for c in containers(service).values()]
        assert all(limit >= 1 and limit == limit.to_integral_value() for limit in limits), limits
        total = sum(limits, Decimal(0))
        assert total == total.to_integral_value() <= 8

    def test_readme_names_the_choice(self) -> None:
        """The Cloud Run README explains the CPU combination and the readiness probe placement it ships."""
        text = CLOUD_RUN_README.read_text()
        for phrase in ("App 1 + agent 1 = 2 vCPU", "ingress container (`app`)", "Only reasoned", "launch-stage"):
            assert phrase in text, phrase


class TestStartupzMeansReady:
    """/startupz is what Cloud Run's startup probe sees: it must already include the stability window."""

    WINDOW = 1.0

    def agent_args(self, service: dict[str, Any], redis: RedisProcess) -> tuple[list[str], dict[str, str]]:
        """The manifest's agent settings, with the Redis URL pointed at the test's server."""
        agent = containers(service)[AGENT_CONTAINER]
        env = {e["name"]: str(e["value"]) for e in agent["env"] if "value" in e}
        env["READINESS_AGENT_REDIS_URL"] = redis.url
        return ["--window", str(self.WINDOW)], env

    async def test_startupz_turns_200_no_earlier_than_the_window_after_redis(self, service: dict[str, Any]) -> None:
        """With the agent up before Redis, /startupz answers 503 until Redis has been usable for the window."""
        with RedisProcess() as redis:
            args, env = self.agent_args(service, redis)
            with AgentProcess(*args, env=env) as agent:
                sampler = ReadyzSampler(agent.port, "/startupz", period=0.02).start()
                try:
                    await sampler.expect(503, after=0, timeout=5)
                    redis_started = time.monotonic()  # Redis cannot answer PING before this instant
                    redis.start()
                    started_at = await sampler.expect(200, after=redis_started, timeout=(self.WINDOW + 0.5) * 2 + 1)
                finally:
                    sampler.stop()
                assert started_at - redis_started >= self.WINDOW
                assert all(s.status == 503 for s in sampler.samples if s.at < redis_started + self.WINDOW)
                assert json.loads(agent.get("/status")[1])["started"] is True

    async def test_startupz_stays_200_when_redis_fails_after_the_start(self, service: dict[str, Any]) -> None:
        """After the first ready a Redis crash turns /readyz 503 while /startupz and /livez stay 200."""
        with RedisProcess() as redis:
            redis.start()
            args, env = self.agent_args(service, redis)
            with AgentProcess(*args, env=env) as agent:
                readyz = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
                startupz = ReadyzSampler(agent.port, "/startupz", period=0.02).start()
                try:
                    await readyz.expect(200, after=0, timeout=(self.WINDOW + 0.5) * 2 + 1)
                    await startupz.expect(200, after=0, timeout=2)
                    killed = time.monotonic()
                    redis.kill()
                    not_ready = await readyz.expect(503, after=killed, timeout=DETECTION_BOUND * 2 + 1)
                    # The kill is seen within milliseconds: keep sampling /startupz for a while after the 503.
                    await startupz.expect(200, after=not_ready + 0.3, timeout=3)
                finally:
                    readyz.stop()
                    startupz.stop()
                after_kill = [s.status for s in startupz.samples if s.at >= killed]
                assert len(after_kill) >= 5 and set(after_kill) == {200}
                assert agent.get("/livez")[0] == 200


class TestCloudRunSizing:
    def test_agent_memory_holds_the_measured_peak(self, service: dict[str, Any]) -> None:
        """The agent's memory limit is at least 1.5 x its measured peak in this configuration (Cloud Logging JSON,
        no gate: docs/benchmarks.md), and the instance total is within gen2's minimum and the 2 vCPU maximum."""
        limits = {name: mebibytes(c["resources"]["limits"]["memory"]) for name, c in containers(service).items()}
        assert limits[AGENT_CONTAINER] >= HEADROOM * measured_peaks()[("json", "off")]
        assert 512 <= sum(limits.values()) <= 8 * 1024  # gen2 minimum; "2 vCPU: up to 8 GiB"

    def test_startup_cpu_boost_and_own_service_account(self, service: dict[str, Any]) -> None:
        """Startup CPU boost is on, and the revision runs as a dedicated account, not the default compute one."""
        template = service["spec"]["template"]
        assert template["metadata"]["annotations"]["run.googleapis.com/startup-cpu-boost"] == "true"
        account = template["spec"]["serviceAccountName"]
        assert account.endswith(".iam.gserviceaccount.com") and "-compute@" not in account
