"""The agent's public interfaces, collected from a real run, so a refactor can prove it kept every promise.

Collected: the flags of each command (from ``--help``), the environment variables and YAML keys that are
accepted, the ``/status`` key paths, the metric family names, the endpoints' status codes, and the exit codes
of the documented usage errors. ``tests/golden/interfaces.json`` holds the set from before the renovation;
``test_interfaces.py`` asserts every entry of it still holds (additions are allowed and listed in the docs' tables).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.agent_process import ROOT, AgentProcess, agent_env
from harness.redis_server import free_port

GOLDEN = ROOT / "tests" / "golden" / "interfaces.json"
COMMANDS = ("run", "check", "wait")


def _agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          env=agent_env(env), cwd=ROOT, timeout=30)


def help_flags(command: str) -> list[str]:
    """Every ``--flag`` that ``readiness-agent COMMAND --help`` accepts."""
    out = _agent(command, "--help").stdout
    return sorted(set(re.findall(r"(--[a-z][a-z0-9-]+)", out)))


def key_paths(doc: Any, prefix: str = "") -> list[str]:
    """``a.b.c`` paths of every key in a JSON document (check names replaced by ``<check>``)."""
    paths: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            name = "<check>" if prefix == "checks" else key
            path = f"{prefix}.{name}" if prefix else name
            paths.append(path)
            paths.extend(key_paths(value, path))
    return paths


def readme_names() -> dict[str, list[str]]:
    """The flags, environment variables, endpoints and metric names the docs' tables document (README.md, and the
    pages its reference tables moved to: docs/settings.md, docs/observability.md)."""
    text = "\n".join((ROOT / page).read_text() for page in ("README.md", "docs/settings.md", "docs/observability.md"))
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = " ".join(rows)
    return {
        "flags": sorted(set(re.findall(r"`(--[a-z][a-z0-9-]+)", cells))),
        "env": sorted(set(re.findall(r"`(READINESS_AGENT_[A-Z0-9_]+)`", cells))),
        "endpoints": sorted(set(re.findall(r"`(?:GET |POST )?(/[a-z]+)", cells))),
        "metrics": sorted(set(re.findall(r"^\| `([a-z_]+)(?:\{[^`]*\})?` \|", _section(text, "## Metrics"), re.M))),
    }


def _section(text: str, heading: str) -> str:
    """The docs' text from ``heading`` to the next heading of the same level."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def metric_families(exposition: str) -> list[str]:
    """Family names from ``# TYPE`` lines."""
    return sorted(set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.M)))


def collect(workdir: Path) -> dict[str, Any]:
    """Run the agent against a closed port and read every public surface."""
    refused = free_port()
    url = f"redis://127.0.0.1:{refused}/0"
    token = workdir / "token"
    token.write_text("t0ken-value\n")
    settings_env = {"READINESS_AGENT_REDIS_URL": url, "READINESS_AGENT_DRAIN_TOKEN_FILE": str(token)}
    with AgentProcess(env=settings_env) as agent:
        status_doc = json.loads(agent.get("/status")[1])
        metrics = agent.get("/metrics")[1]
        endpoints = {
            path: agent.get(path)[0]
            for path in ("/livez", "/readyz", "/readyz?verbose", "/readyz/redis", "/readyz/nope", "/startupz",
                         "/status", "/metrics", "/nope")
        }
    exits = {
        "bad flag value": _agent("run", "--interval", "soon").returncode,
        "unknown flag": _agent("run", "--no-such-flag").returncode,
        "no command": _agent().returncode,
        "check refused": _agent("check", "--redis-url", url, "--platform", "local").returncode,
        "wait timeout": _agent("wait", "--max-wait", "0.3", "--redis-url", url, "--platform", "local").returncode,
    }
    return {
        "flags": {command: help_flags(command) for command in COMMANDS},
        "settings": sorted(status_doc["settings"]),
        "status_keys": sorted(set(key_paths(status_doc))),
        "metrics": metric_families(metrics),
        "endpoints": endpoints,
        "exit_codes": exits,
        "readme": readme_names(),
    }


if __name__ == "__main__":  # python -m tests.support.interfaces > tests/golden/interfaces.json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(collect(Path(tmp)), indent=1, sort_keys=True))
