"""The first hour of an operator, against the real agent and real redis-server processes: what is wrong is
logged at once (closed port, wrong password), every JSON line is parsed, ``/status`` explains transitions,
``check``/``wait`` keep stdout for their answer, run-only flags stay out of their help, a drain by POST keeps
the checks' real state, and ``/metrics`` has the per-check up gauge and the process collectors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import build_parser, main
from agent.config.settings import SPECS
from harness.agent_process import ROOT, AgentProcess, run_cli
from harness.redis_server import RedisProcess, free_port
from harness.wait import until
from tests.support.fast import FAST_WINDOW as FAST

SECRET = "s3cret-Operator-pw"
FIRST_FAILURE_BOUND = 1.0  # the first check runs at start and a refusal/auth error answers in milliseconds: ×2 + 1 s


def json_lines(agent: AgentProcess) -> list[dict[str, Any]]:
    """Every stdout line of a ``--log-format json`` agent, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in agent.stdout_path.read_text().splitlines() if line.strip()]


def labels(entry: dict[str, Any]) -> dict[str, str]:
    return dict(entry.get("logging.googleapis.com/labels", {}))


def first_failure(agent: AgentProcess) -> dict[str, Any]:
    """Wait (bounded) for the first ``failing`` record and return it."""
    def found() -> dict[str, Any] | None:
        return next((e for e in json_lines(agent) if labels(e).get("event") == "failing"), None)

    return until(found, FIRST_FAILURE_BOUND, what="the first failure's log line")


class TestSaysWhatIsWrongAtOnce:
    def test_closed_port_is_logged_within_a_second_and_every_json_line_is_clean(self) -> None:
        """Against a closed port the refusal is logged within a second, and every line is compact JSON."""
        with AgentProcess("--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--log-format", "json",
                          *FAST) as agent:
            entry = first_failure(agent)
            assert labels(entry) | {"component": "x"} == {"component": "x", "check": "redis", "state": "starting",
                                                           "event": "failing", "reason": "refused"}
            assert entry["severity"] == "WARNING"
            entries = json_lines(agent)
        assert entries, "no log lines"
        for e in entries:
            assert isinstance(e.get("message"), str) and e["message"], e
            assert not [k for k, v in e.items() if v in ("", {}, None) or v is False], e
            assert "python_logger" not in labels(e)
            assert "logging.googleapis.com/trace" not in e and "httpRequest" not in e
            source = e.get("logging.googleapis.com/sourceLocation")
            assert source is None or source["file"].startswith("agent/"), source

    def test_wrong_password_is_logged_as_auth_within_a_second(self, redis_factory: Any) -> None:
        """A real Redis with requirepass and a wrong password: the auth failure is logged within a second, no secret."""
        redis = redis_factory(requirepass=SECRET)
        url = f"redis://default:wrong-{SECRET}@127.0.0.1:{redis.port}/0"
        with AgentProcess("--log-format", "json", *FAST, env={"READINESS_AGENT_REDIS_URL": url}) as agent:
            entry = first_failure(agent)
            assert labels(entry)["reason"] == "auth"
            output = agent.output()
        assert SECRET not in output
        assert not any(labels(json.loads(line)).get("event") == "password_on_command_line"
                       for line in output.splitlines() if line.startswith("{"))

    def test_password_on_the_command_line_warns_once(self, redis_factory: Any) -> None:
        """A password in --redis-url gives exactly one warning record, without the password."""
        redis = redis_factory(requirepass=SECRET)
        url = f"redis://default:{SECRET}@127.0.0.1:{redis.port}/0"
        with AgentProcess("--redis-url", url, "--log-format", "json", *FAST) as agent:
            until(lambda: agent.get("/readyz")[0] == 200, 5, what="ready with the right password")
            entries = json_lines(agent)
        warnings = [e for e in entries if labels(e).get("event") == "password_on_command_line"]
        assert len(warnings) == 1 and warnings[0]["severity"] == "WARNING"
        assert SECRET not in json.dumps(entries)


class TestStatusTransitions:
    def test_three_transitions_are_explained(self, redis_proc: RedisProcess) -> None:
        """Ready, then Redis killed: /status lists starting→stabilizing→ready→degraded with reason and 503 flip."""
        with AgentProcess("--redis-url", redis_proc.url, *FAST) as agent:
            until(lambda: agent.get("/readyz")[0] == 200, 5, what="ready")
            redis_proc.kill()
            until(lambda: agent.get("/readyz")[0] == 503, 5, what="not ready")
            doc = json.loads(agent.get("/status")[1])
        checks = [e for e in doc["transitions"] if e["check"] == "redis"]
        assert [(e["from"], e["to"]) for e in checks[:3]] == [
            ("starting", "stabilizing"), ("stabilizing", "ready"), ("ready", "degraded")]
        out = checks[2]
        assert out["reason"] == "refused" and out["detail"] and out["readyz"] == 503
        assert out["time"].endswith("Z") and out["age_seconds"] >= 0


class TestOneShotCommands:
    def test_check_answers_on_stdout_only(self) -> None:
        """check: one result line per check on stdout; nothing else on stdout."""
        result = run_cli("check", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--platform", "local")
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith("[-]redis failed: refused")

    def test_wait_logs_on_stderr_and_never_names_readyz(self, redis_proc: RedisProcess) -> None:
        """wait: `ready after` alone on stdout; its progress on stderr, without /readyz (it serves none)."""
        result = run_cli("wait", "--max-wait", "5", "--redis-url", redis_proc.url, "--platform", "local", *FAST)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ready after ") and len(result.stdout.splitlines()) == 1
        assert "-> ready" in result.stderr and "/readyz" not in result.stderr

    def test_wait_gives_up_with_the_reason_on_stderr(self) -> None:
        """wait on a closed port: exit 1, nothing on stdout, the failure logged and the reason given on stderr."""
        result = run_cli("wait", "--max-wait", "0.5", "--redis-url", f"redis://127.0.0.1:{free_port()}/0",
                         "--platform", "local", "--log-format", "json")
        assert result.returncode == 1 and result.stdout == ""
        records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert any(labels(r).get("event") == "failing" and labels(r).get("reason") == "refused" for r in records)

    def test_run_only_flags_are_hidden_but_accepted(self) -> None:
        """check/wait --help omit run-only flags, which they still accept (exit 1 not-ready, not 2 usage)."""
        run_only = [s.flag for s in SPECS if s.run_only]
        assert {"--listen", "--drain-seconds", "--drain-token-file", "--readiness-mode",
                "--exit-on-startup-timeout"} <= set(run_only)
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")
        for command in ("check", "wait"):
            text = sub.choices[command].format_help()  # type: ignore[union-attr]
            assert not [f for f in run_only if f + " " in text or f + "\n" in text], command
            assert "--redis-url" in text
        assert all(f in sub.choices["run"].format_help() for f in run_only)  # type: ignore[union-attr]
        result = run_cli("check", "--listen", "127.0.0.1:1", "--drain-seconds", "1",
                         "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--platform", "local")
        assert result.returncode == 1, result.stderr


    def test_one_argument_list_for_all_three_commands(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The README's promise: the same arguments, --max-wait and run-only flags included, work for run, check
        and wait (run and check accept --max-wait, check it and leave it to wait; a bad one is refused)."""
        args = ["--max-wait", "0.3", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--timeout", "0.2",
                "--listen", "127.0.0.1:0", "--drain-seconds", "0", "--platform", "local"]
        for command in ("check", "wait"):
            result = run_cli(command, *args)
            assert result.returncode == 1 and "unrecognized" not in result.stderr, (command, result.stderr)
        with AgentProcess(*args) as agent:  # started: /livez answered
            assert agent.get("/readyz")[0] == 503
        for command in ("run", "check"):  # refused before anything starts, so in-process; wait's: test_config.py
            assert main([command, *args[2:], "--max-wait", "soon"], environ={}) == 2
            assert capsys.readouterr().err == ("readiness-agent: error: invalid --max-wait 'soon': "
                                               "expected a duration such as 0.5, 500ms, 2s or 1m\n")


class TestDrainByPost:
    def test_verbose_keeps_the_real_state_and_the_process_keeps_running(self, redis_proc: RedisProcess,
                                                                         tmp_path: Path) -> None:
        """After POST /drain: 503, `[+]redis ok` and a draining line of its own; no exit (only a signal exits)."""
        token = tmp_path / "token"
        token.write_text("drain-me\n")
        with AgentProcess("--redis-url", redis_proc.url, "--drain-token-file", str(token),
                          "--drain-seconds", "0.2", *FAST) as agent:
            until(lambda: agent.get("/readyz")[0] == 200, 5, what="ready")
            request = urllib.request.Request(agent.base + "/drain", method="POST",
                                             headers={"Authorization": "Bearer drain-me"})
            with urllib.request.urlopen(request, timeout=2) as response:
                assert response.status == 202
            drained_at = time.monotonic()
            status, body = agent.get("/readyz?verbose")
            lines = body.splitlines()
            assert status == 503
            assert "[+]redis ok" in lines
            assert [line for line in lines if line.startswith("[-]")] == [
                line for line in lines if line.startswith("[-]draining")] != []
            until(lambda: time.monotonic() - drained_at > 2 * 0.2 + 1, 3, period=0.05,
                       what="twice the drain time")
            assert agent.proc is not None and agent.proc.poll() is None
            assert agent.get("/livez")[0] == 200 and agent.get("/readyz")[0] == 503


class TestMetrics:
    def test_check_up_for_every_kind_and_process_metrics(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """check_up{check,kind} for a Redis and a TCP check, redis_up kept, process_* and python_info present."""
        cfg = tmp_path / "agent.yaml"
        cfg.write_text("checks:\n"
                       f"  - {{name: sessions, url: '{redis_proc.url}'}}\n"
                       f"  - {{name: db, type: tcp, address: '127.0.0.1:{free_port()}', required: false}}\n")
        with AgentProcess("--config", str(cfg), *FAST) as agent:
            until(lambda: agent.get("/readyz")[0] == 200, 5, what="ready")
            until(lambda: json.loads(agent.get("/status")[1])["checks"]["db"]["checks_run"] > 0, 5,
                       what="the tcp check ran")
            families = {f.name: f for f in text_string_to_metric_families(agent.get("/metrics")[1])}
        up = {(s.labels["check"], s.labels["kind"]): s.value for s in families["readiness_agent_check_up"].samples}
        assert up == {("sessions", "redis"): 1.0, ("db", "tcp"): 0.0}
        assert {s.labels["check"]: s.value for s in families["readiness_agent_redis_up"].samples} == {"sessions": 1.0}
        assert families["process_resident_memory_bytes"].samples[0].value > 0
        assert "process_cpu_seconds" in families and "python_info" in families


class TestBenchOnAFreshMachine:
    def test_a_missing_tool_is_a_miss_row_not_a_crash(self, tmp_path: Path) -> None:
        """With hey absent and nothing to install it with, the probes part is one MISS row naming hey; exit 0."""
        bin_dir = tmp_path / "bin"  # a PATH with bash and the basics but no hey and no apt-get
        bin_dir.mkdir()
        for tool in ("bash", "id", "git", "redis-server", "redis-cli", "wrk"):
            found = shutil.which(tool)
            if found:
                (bin_dir / tool).symlink_to(found)
        result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "probes"], cwd=ROOT,
                                env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        [row] = [line for line in result.stdout.splitlines() if line.startswith("|") and "probes: not run" in line]
        assert "hey" in row and row.rstrip(" |").endswith("MISS")
        [missing] = [line for line in result.stderr.splitlines() if "still missing:" in line]
        assert "hey" in missing.split("still missing:")[1]  # (wrk too, on a machine that lacks it)
