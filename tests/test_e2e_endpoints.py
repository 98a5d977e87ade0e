"""The HTTP surface of the real agent: probe variants, /status, /metrics (parsed and linted), logs, IPv6, and
what a flood of /metrics costs the probes (one render shared by concurrent scrapers, /readyz still prompt)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.agent_process import AgentProcess
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess
from harness.wait import until

FAST = ["--interval", "0.5", "--retry-interval", "0.1", "--timeout", "0.3", "--window", "0.2"]
DESIGN_METRICS = {
    "readiness_agent_ready", "readiness_agent_state", "readiness_agent_check_duration_seconds",
    "readiness_agent_check_failures", "readiness_agent_transitions", "readiness_agent_startup_seconds",
    "readiness_agent_startup_deadline_exceeded", "readiness_agent_stability_window_seconds",
    "readiness_agent_redis_up", "readiness_agent_build_info",
}


@pytest.fixture
def two_checks(tmp_path: Path, redis_proc: RedisProcess) -> Path:
    """A config with the live Redis as `sessions` and a dead optional `cache`."""
    dead = RedisProcess()  # not started: its port refuses
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "checks:\n"
        f"  - {{name: sessions, url: '{redis_proc.url}'}}\n"
        f"  - {{name: cache, url: 'redis://127.0.0.1:{dead.port}/0', required: false}}\n"
    )
    return cfg


class TestProbes:
    def test_verbose_exclude_and_single_check(self, two_checks: Path) -> None:
        """?verbose lists each check; optional failures do not gate; /readyz/<check> and ?exclude work."""
        with AgentProcess("--config", str(two_checks), *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            status, body = agent.get("/readyz?verbose")
            assert status == 200
            assert "[+]sessions ok" in body and "[-]cache failed: refused (optional)" in body
            assert body.rstrip().endswith("readyz check passed")
            assert agent.get("/readyz/sessions")[0] == 200
            assert agent.get("/readyz/cache")[0] == 503
            assert agent.get("/readyz/nope")[0] == 404
            status, body = agent.get("/readyz?exclude=sessions&verbose")
            assert status == 200 and "[+]sessions excluded: ok" in body
            assert agent.get("/startupz")[0] == 200
            assert agent.get("/livez") == (200, "ok\n")

    def test_status_document(self, redis_proc: RedisProcess) -> None:
        """/status has the verdict, platform with reason, every setting with its source, and check detail."""
        env = {"READINESS_AGENT_FLAP_WINDOW": "20s", "READINESS_AGENT_PORT": "tcp://10.0.0.1:9180"}  # a service link
        with AgentProcess("--redis-url", redis_proc.url, *FAST, env=env) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            doc = json.loads(agent.get("/status")[1])
            assert doc["state"] == "ready" and doc["ready"] is True
            assert doc["platform"]["resolved"] == "local" and doc["platform"]["reason"]
            assert doc["settings"]["window"] == {"value": 0.2, "source": "flag"}
            assert doc["settings"]["flap_window"] == {"value": 20.0, "source": "env"}
            assert doc["settings"]["failure_threshold"] == {"value": 3, "source": "default"}
            assert doc["settings"]["startup_timeout"] == {"value": 10.0, "source": "default"}
            check = doc["checks"]["redis"]
            assert check["state"] == "ready" and check["last"]["ok"] is True and check["monitor_connected"]
            assert "ignoring unknown environment variable READINESS_AGENT_PORT" in agent.output()
            assert doc["detection_bound_seconds"] == pytest.approx(0.5 * 1.2 + 3 * (0.3 + 0.1 * 1.2))

    def test_ipv6_listen(self, redis_proc: RedisProcess) -> None:
        """The agent listens on an IPv6 address ([::1])."""
        with AgentProcess("--redis-url", redis_proc.url, *FAST, listen="[::1]:0") as agent:
            agent.wait_status("/readyz", 200, 5.0)
            assert agent.base.startswith("http://[::1]:")


class TestMetrics:
    def test_every_design_metric_parses(self, redis_proc: RedisProcess) -> None:
        """/metrics parses with prometheus_client's parser and holds every metric docs/design.md names."""
        with AgentProcess("--redis-url", redis_proc.url, *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            text = agent.get("/metrics")[1]
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert set(families) >= DESIGN_METRICS, DESIGN_METRICS - set(families)
        ready = families["readiness_agent_ready"].samples[0].value
        assert ready == 1.0
        states = {s.labels["state"]: s.value for s in families["readiness_agent_state"].samples}
        assert states == {"starting": 0, "stabilizing": 0, "ready": 1, "degraded": 0, "draining": 0}
        transitions = {(s.labels["from"], s.labels["to"]) for s in families["readiness_agent_transitions"].samples
                       if s.name.endswith("_total")}
        assert ("starting", "stabilizing") in transitions and ("stabilizing", "ready") in transitions
        assert families["readiness_agent_startup_seconds"].samples[0].value > 0

    def test_promtool_accepts_the_exposition(self, redis_proc: RedisProcess) -> None:
        """promtool check metrics finds no problem in the text and OpenMetrics expositions."""
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: run scripts/install-tools.sh (make test does)"
        with AgentProcess("--redis-url", redis_proc.url, *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            text = agent.get("/metrics")[1]
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


class TestScrapeCost:
    SCRAPERS = 24
    FLOOD_SECONDS = 2.5
    # Slack bounds on a noisy shared machine. Measured with this test, 10 checks: before the render cache /readyz
    # p90 185 ms and kill -> 503 490 ms; after, p90 5-7 ms and kill -> 503 8-99 ms (docs/benchmarks.md).
    READYZ_P90 = 0.060
    KILL_TO_503 = 0.250

    def test_a_metrics_flood_shares_renders_and_leaves_the_probes_prompt(self, tmp_path: Path,
                                                                          redis_proc: RedisProcess) -> None:
        """24 concurrent scrapers cause exactly one render; under a 32-connection /metrics flood /readyz stays
        answered within tens of ms (p90) and a Redis kill still turns it 503 promptly."""
        cfg = tmp_path / "agent.yaml"
        cfg.write_text("checks:\n" + "".join(f"  - {{name: r{i}, url: '{redis_proc.url}'}}\n" for i in range(10)))
        with AgentProcess("--config", str(cfg), *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            before = json.loads(agent.get("/status")[1])["runtime"]["renders"]
            barrier = threading.Barrier(self.SCRAPERS)

            def scrape(_: int) -> tuple[int, str]:
                barrier.wait(5)
                return agent.get("/metrics", timeout=10)

            with ThreadPoolExecutor(self.SCRAPERS) as pool:
                answers = list(pool.map(scrape, range(self.SCRAPERS)))
            assert {status for status, _ in answers} == {200} and len({body for _, body in answers}) == 1

            def fresh_status() -> dict[str, int] | None:  # a /status rendered after the burst
                renders: dict[str, int] = json.loads(agent.get("/status")[1])["runtime"]["renders"]
                return renders if renders["status"] > before["status"] else None

            after = until(fresh_status, 5, "a fresh /status", period=0.05)
            assert after["metrics"] == before["metrics"] + 1, (before, after)

            with ReadyzSampler(agent.port, period=0.005) as sampler:
                flood = subprocess.Popen([sys.executable, "-m", "tests.support.flood", f"{agent.base}/metrics",
                                          str(self.FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True)
                try:
                    started = time.monotonic()
                    until(lambda: time.monotonic() - started > 1.2 and sampler.samples[-1].at > started + 1.2,
                          5, "a second of samples under the flood", period=0.02)
                    killed = time.monotonic()
                    redis_proc.kill()
                    down_at = sampler.wait_for(503, killed, 5)
                    out, _ = flood.communicate(timeout=self.FLOOD_SECONDS + 10)
                finally:
                    flood.kill()
                    flood.wait()
        result = json.loads(out)
        under = sorted(s.latency for s in sampler.samples if started + 0.2 <= s.at < killed)
        p90 = under[int(len(under) * 0.9)]
        assert result["statuses"].get("200", 0) > 100, result  # the flood ran (before the cache: ~500 in 2.5 s)
        assert down_at is not None and all(s.status in (200, 503) for s in sampler.samples)
        assert p90 <= self.READYZ_P90, f"/readyz p90 {p90 * 1000:.1f} ms under the /metrics flood"
        assert down_at - killed <= self.KILL_TO_503, f"kill -> 503 {(down_at - killed) * 1000:.0f} ms"


class TestLogs:
    def test_json_logs_are_cloud_logging_structured(self, redis_proc: RedisProcess) -> None:
        """--log-format json: every stdout line is one JSON object with severity, message and labels."""
        with AgentProcess("--redis-url", redis_proc.url, "--log-format", "json", *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            lines = [line for line in agent.stdout_path.read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        messages = [r for r in records if "message" in r]
        assert all("severity" in r for r in records)
        change = next(r for r in messages if "stabilizing -> ready" in r["message"])
        assert change["logging.googleapis.com/labels"]["check"] == "redis"
        assert change["logging.googleapis.com/labels"]["state"] == "ready"

    def test_one_line_per_verdict_change_not_per_check(self, redis_proc: RedisProcess) -> None:
        """A healthy agent running many checks logs its changes once, not once per check."""
        with AgentProcess("--redis-url", redis_proc.url, "--log-format", "json", *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            deadline = time.monotonic() + 10
            while json.loads(agent.get("/status")[1])["checks"]["redis"]["checks_run"] < 8:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            changes = [r["logging.googleapis.com/labels"] for r in agent.events("transition")]
        states = [(c.get("check"), c.get("state")) for c in changes]
        assert states == [("redis", "stabilizing"), ("redis", "ready")], states  # one record per change


class TestSecrets:
    def test_password_never_leaks(self, redis_factory: object, tmp_path: Path) -> None:
        """A password in the URL never appears in logs, /status, /metrics or error output, right or wrong."""
        secret = "correct-Horse-battery-9137"
        redis = redis_factory(requirepass=secret)  # type: ignore[operator]
        url = f"redis://default:{secret}@127.0.0.1:{redis.port}/0"
        with AgentProcess("--redis-url", url, "--log-level", "debug", *FAST) as agent:
            agent.wait_status("/readyz", 200, 5.0)
            redis.kill()
            deadline = time.monotonic() + 5
            while json.loads(agent.get("/status")[1])["checks"]["redis"]["state"] != "degraded":
                assert time.monotonic() < deadline, agent.output()  # failures are logged with their detail
                time.sleep(0.02)
            seen = agent.output() + agent.get("/status")[1] + agent.get("/metrics")[1] + agent.get("/readyz?verbose")[1]
        assert secret not in seen
        assert "***" in seen
