"""The real agent as a child process (`python -m agent run`), for end-to-end tests and benchmarks.

It listens on ``127.0.0.1:0`` and the bound port is read from its own start-up log, so tests never race for a
port. Output goes to files so a failing test can show it and secrets tests can search it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an agent child: nothing of ours (``READINESS_AGENT_*``, ``REDIS_URL``, platform
    variables) leaks in, so only what a test passes explicitly configures it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINESS_AGENT_")}
    for var in ("REDIS_URL", "K_SERVICE", "K_REVISION", "CLOUD_RUN_JOB", "KUBERNETES_SERVICE_HOST"):
        env.pop(var, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class AgentProcess:
    """``readiness-agent run`` in a subprocess. Use as a context manager; ``close`` never leaves it running."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0") -> None:
        self.args = list(args)
        self.listen = listen
        self.env = agent_env(env)
        self._dir = tempfile.TemporaryDirectory(prefix="agent-")
        self.stdout_path = Path(self._dir.name) / "stdout"
        self.stderr_path = Path(self._dir.name) / "stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.started_at = 0.0

    def start(self, wait: float = 15.0) -> AgentProcess:
        """Spawn the agent and wait until it logs its bound port and /livez answers."""
        cmd = [sys.executable, "-m", "agent", "run", "--listen", self.listen, "--platform", "local", *self.args]
        # As for redis-server: if the test runner dies, the kernel kills the agent too (main thread only, since
        # the death signal follows the spawning thread).
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self.started_at = time.monotonic()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.output()}")
            match = re.search(r"listening on \S+ \(port (\d+)\)", self.stdout_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                if self.get_status("/livez") == 200:
                    return self
            time.sleep(0.01)
        raise TimeoutError(f"agent did not start within {wait}s: {self.output()}")

    @property
    def base(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        return f"http://{host}:{self.port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """A blocking GET: (status, body)."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get_status(self, path: str) -> int:
        try:
            return self.get(path, timeout=1.0)[0]
        except OSError:
            return 0

    def output(self) -> str:
        """Everything the agent printed so far (stdout then stderr)."""
        text = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        if self.stderr_path.exists():
            text += self.stderr_path.read_text(errors="replace")
        return text

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records on stdout (run the agent with ``--log-format json``), for asserting fields."""
        found: list[dict[str, Any]] = []
        for line in self.stdout_path.read_text(errors="replace").splitlines() if self.stdout_path.exists() else []:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def events(self, event: str) -> list[dict[str, Any]]:
        """The JSON records whose label ``event`` is ``event`` (``transition``, ``failing``, ``deadline`` …)."""
        return [r for r in self.records() if r.get("logging.googleapis.com/labels", {}).get("event") == event]

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop the agent (SIGKILL if needed) and remove its output files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._dir.cleanup()

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Sample:
    """One /readyz probe: when it was sent, its status (0 = no answer), and how long it took."""

    at: float
    status: int
    latency: float


@dataclass
class ReadyzSampler:
    """Polls a readiness URL every ``period`` seconds from its own aiohttp client, recording every answer."""

    url: str
    period: float = 0.02
    samples: list[Sample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            next_at = time.monotonic()
            while True:
                sent = time.monotonic()
                try:
                    async with session.get(self.url) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                self.samples.append(Sample(sent, status, time.monotonic() - sent))
                next_at += self.period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> ReadyzSampler:
        self._task = asyncio.create_task(self._run(), name="readyz-sampler")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, status: int, after: float, timeout: float) -> float:
        """The send time of the first sample at or after ``after`` with ``status``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for sample in self.samples[seen:]:
                if sample.at >= after and sample.status == status:
                    return sample.at
            seen = max(0, len(self.samples) - 1)
            await asyncio.sleep(self.period / 2)
        raise TimeoutError(f"no /readyz {status} within {timeout}s; last: {self.samples[-3:]}")

    def first(self, status: int, after: float = 0.0) -> float | None:
        return next((s.at for s in self.samples if s.at >= after and s.status == status), None)


def run_cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m agent ARGS`` to completion (for ``check`` and ``wait``)."""
    cmd: Sequence[str] = [sys.executable, "-m", "agent", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=agent_env(env), cwd=ROOT)
