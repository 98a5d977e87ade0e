"""End to end: the real agent process against real redis-server processes, real time, real HTTP.

Lower time bounds are exact (never ready too early); upper bounds get slack (expected × 2 + 1 s), because
this machine is small and shared.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from harness.agent_process import AgentProcess, run_cli
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess
from harness.wait import until
from tests.support.fast import FAST, FAST_TIMING


class TestStartup:
    async def test_ready_no_earlier_than_window_after_redis_starts(self, tmp_path: Path) -> None:
        """Agent up before Redis: 503; Redis starts; 200 no earlier than the window after Redis could answer."""
        window = 1.0
        redis = RedisProcess()
        try:
            with AgentProcess("--redis-url", f"redis://127.0.0.1:{redis.port}/0", "--window", str(window),
                              *FAST) as agent:
                sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
                try:
                    await sampler.expect(503, after=0, timeout=5)
                    redis_started = time.monotonic()  # Redis cannot answer PING before this instant
                    redis.start()
                    ready_at = await sampler.expect(200, after=redis_started, timeout=(window + 0.12) * 2 + 1)
                finally:
                    sampler.stop()
                assert ready_at - redis_started >= window
                assert all(s.status == 503 for s in sampler.samples if s.at < redis_started + window)
                status = json.loads(agent.get("/status")[1])
                assert status["startup"]["startup_seconds"] is not None
                assert agent.get("/startupz")[0] == 200
        finally:
            redis.close()

    def test_startup_deadline_flag_and_exit(self) -> None:
        """With no Redis, the deadline passes: ERROR log, metric 1, /startupz 503; with exit-on-timeout, exit 1."""
        redis = RedisProcess()  # never started: nothing listens on its port
        url = f"redis://127.0.0.1:{redis.port}/0"
        with AgentProcess("--redis-url", url, "--startup-timeout", "1", "--log-format", "json", *FAST) as agent:
            until(lambda: bool(agent.events("deadline")), 4, what="deadline log record")
            (record,) = agent.events("deadline")
            assert record["severity"] == "ERROR"
            assert record["logging.googleapis.com/labels"]["reason"] == "refused"
            assert agent.get("/startupz")[0] == 503
            assert "readiness_agent_startup_deadline_exceeded 1.0" in agent.get("/metrics")[1]
        agent = AgentProcess("--redis-url", url, "--startup-timeout", "1", "--exit-on-startup-timeout", *FAST)
        try:
            started = time.monotonic()
            agent.start()
            assert agent.wait(timeout=10) == 1
            assert time.monotonic() - started >= 1.0
        finally:
            agent.close()


class TestFaults:
    async def test_kill_9_turns_503_within_detection_bound(self, redis_proc: RedisProcess) -> None:
        """SIGKILL of a ready Redis turns /readyz 503 within the detection bound (the monitor sees it at once)."""
        with AgentProcess("--redis-url", redis_proc.url, "--window", "0.3", *FAST) as agent:
            sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
            try:
                await sampler.expect(200, after=0, timeout=5)
                killed = time.monotonic()
                redis_proc.kill()
                down_at = await sampler.expect(503, after=killed, timeout=FAST_TIMING.detection_bound * 2 + 1)
            finally:
                sampler.stop()
            assert down_at - killed <= FAST_TIMING.detection_bound + 1
            assert "refused" in agent.get("/readyz?verbose")[1]

    async def test_loading_stays_503(self, redis_proc: RedisProcess) -> None:
        """While PING answers -LOADING, /readyz never says 200; it turns 200 after loading ends."""
        window = 0.5
        redis_proc.start_loading(seconds=3.0)
        with AgentProcess("--redis-url", redis_proc.url, "--window", str(window), *FAST) as agent:
            sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
            loading_seen: list[float] = []
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    reply = redis_proc.cli("PING")
                    now = time.monotonic()
                    if "LOADING" in str(reply):
                        loading_seen.append(now)
                    elif reply == "PONG" and loading_seen:
                        break
                    await asyncio.sleep(0.02)  # pacing of the ground-truth poller, not an oracle
                ready_at = await sampler.expect(200, after=0, timeout=(window + 0.2) * 2 + 1)
            finally:
                sampler.stop()
            assert len(loading_seen) > 10, "the recipe must give a real LOADING phase"
            assert ready_at >= loading_seen[-1] + window - 0.05
            for s in sampler.samples:
                if s.status == 200:
                    assert not any(s.at - window <= t <= s.at for t in loading_seen), s
            metrics = agent.get("/metrics")[1]
            line = next(x for x in metrics.splitlines() if 'check_failures_total{check="redis",reason="loading"}' in x)
            assert float(line.split()[-1]) > 0

    def test_wrong_password_is_503_auth(self, redis_factory: object) -> None:
        """A wrong password gives 503 with reason auth, and the password never shows anywhere."""
        redis = redis_factory(requirepass="right-horse-battery")  # type: ignore[operator]
        bad = f"redis://:wrong-staple-secret@127.0.0.1:{redis.port}/0"
        with AgentProcess("--redis-url", bad, *FAST) as agent:
            until(lambda: "auth" in agent.get("/readyz?verbose")[1], 5, what="reason auth")
            status, body = agent.get("/readyz?verbose")
            assert status == 503 and "[-]redis failed: auth" in body
            everything = agent.output() + agent.get("/status")[1] + agent.get("/metrics")[1] + body
            assert "wrong-staple-secret" not in everything
            assert "readiness_agent_check_failures_total{check=\"redis\",reason=\"auth\"}" in everything


class TestCommands:
    def test_check_exit_codes(self, redis_proc: RedisProcess) -> None:
        """check: 0 with one ok line when Redis is usable, 1 with the reason when it is not."""
        ok = run_cli("check", "--redis-url", redis_proc.url)
        assert ok.returncode == 0 and ok.stdout.startswith("[+]redis ok"), ok
        redis_proc.kill()
        bad = run_cli("check", "--redis-url", redis_proc.url)
        assert bad.returncode == 1 and bad.stdout.startswith("[-]redis failed: refused"), bad

    def test_wait_exit_codes(self, redis_proc: RedisProcess) -> None:
        """wait: 0 once ready (window included), 1 with the last reason when --max-wait passes."""
        started = time.monotonic()
        ok = run_cli("wait", "--max-wait", "10", "--window", "0.5", "--redis-url", redis_proc.url)
        assert ok.returncode == 0, ok
        assert time.monotonic() - started >= 0.5
        redis_proc.kill()
        started = time.monotonic()
        bad = run_cli("wait", "--max-wait", "1", "--redis-url", redis_proc.url)
        assert bad.returncode == 1 and "redis: refused" in bad.stderr, bad
        assert time.monotonic() - started >= 1.0


class TestDrain:
    async def test_sigterm_drains_then_exits_0(self, redis_proc: RedisProcess) -> None:
        """SIGTERM: /readyz 503 at once, still serving for drain_seconds, then exit 0."""
        with AgentProcess("--redis-url", redis_proc.url, "--drain-seconds", "1.5", *FAST) as agent:
            sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
            try:
                await sampler.expect(200, after=0, timeout=5)
                sent = time.monotonic()
                agent.signal(signal.SIGTERM)
                not_ready = await sampler.expect(503, after=sent, timeout=2)
                assert not_ready - sent < 1.0
                assert agent.get("/livez")[0] == 200  # still serving while draining
            finally:
                sampler.stop()
            assert agent.wait(timeout=10) == 0
            assert time.monotonic() - sent >= 1.5
            assert "draining" in agent.output()

    def test_drain_endpoint_needs_the_token(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """POST /drain: 404 without a token file; 401 with a wrong token; 202 with the right one."""
        import urllib.error
        import urllib.request

        def post(agent: AgentProcess, token: str | None) -> int:
            req = urllib.request.Request(agent.base + "/drain", method="POST")
            if token is not None:
                req.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        with AgentProcess("--redis-url", redis_proc.url, *FAST) as agent:
            assert post(agent, "x") == 404
        token_file = tmp_path / "token"
        token_file.write_text("drain-me-please\n")
        with AgentProcess("--redis-url", redis_proc.url, "--drain-token-file", str(token_file), *FAST) as agent:
            assert post(agent, None) == 401
            assert post(agent, "nope") == 401
            assert post(agent, "drain-me-please") == 202
            assert agent.get("/readyz")[0] == 503
            assert "drain-me-please" not in agent.output()
