"""The real agent as a child process (``python -m agent run``): the one wrapper tests, bench and examples use.

By default it listens on ``127.0.0.1:0`` and the bound port is read from its own start-up log, so tests never race
for a port; the bench passes a port it chose (``listen="127.0.0.1:PORT"``) so it can poll ``/livez`` from the
spawn instant. Output goes to files so a failing test can show it and secrets tests can search it. Options
cover every caller: ``root`` (run another checkout's agent: the adversarial suite's "before" column),
``nofile`` (an open-file limit), ``python_flags`` (``-X importtime``), ``own_session`` (a Ctrl-C on the
bench's terminal must not reach the agent and start its drain) and ``start_on_enter`` (the bench spawns a
fleet at once, then waits). Whatever happens, no agent outlives this process: ``close`` kills it, and so
does an exit hook for any left open.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.wait import until

ROOT = Path(__file__).resolve().parents[1]
_PORT_LOG = re.compile(r"listening on \S+ \(port (\d+)")
_LIVE: set[AgentProcess] = set()
WATCH_OFF = ("READINESS_AGENT_WATCH_PORT", "0")


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an agent child: nothing of ours (``READINESS_AGENT_*``, ``REDIS_URL``, platform
    variables) leaks in, so only what a test passes explicitly configures it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINESS_AGENT_")}
    for var in ("REDIS_URL", "K_SERVICE", "K_REVISION", "CLOUD_RUN_JOB", "KUBERNETES_SERVICE_HOST"):
        env.pop(var, None)
    env["PYTHONUNBUFFERED"] = "1"
    env[WATCH_OFF[0]] = WATCH_OFF[1]  # agents side by side would share the default /watch port; a test opts in
    env.update(extra or {})
    return env


def _limits(nofile: tuple[int, int] | None) -> Callable[[], None] | None:
    if nofile is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return apply


def agent_command(*args: str, listen: str = "127.0.0.1:0", python_flags: Sequence[str] = ()) -> list[str]:
    """The one command line that starts the agent under test (``run``, local platform, ``args`` last)."""
    return [sys.executable, *python_flags, "-m", "agent", "run", "--listen", listen, "--platform", "local", *args]


class AgentProcess:
    """``readiness-agent run`` in a subprocess. A context manager; ``close`` never leaves it running."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0",
                 root: Path = ROOT, nofile: tuple[int, int] | None = None, python_flags: Sequence[str] = (),
                 own_session: bool = False, start_on_enter: bool = True) -> None:
        self.args = list(args)
        self.listen = listen
        self.env = agent_env(env)
        self.root = root
        self.nofile = nofile
        self.python_flags = list(python_flags)
        self.own_session = own_session
        self.start_on_enter = start_on_enter
        self._dir = tempfile.TemporaryDirectory(prefix="agent-")
        self.stdout_path = Path(self._dir.name) / "stdout"
        self.stderr_path = Path(self._dir.name) / "stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(listen.rsplit(":", 1)[1])
        self.spawned_at = 0.0

    def spawn(self) -> AgentProcess:
        """Start the agent without waiting for it (a no-op once spawned)."""
        if self.proc is not None:
            return self
        cmd = agent_command(*self.args, listen=self.listen, python_flags=self.python_flags)
        # As for redis-server: if this process dies, the kernel kills the agent too (main thread only, since
        # the death signal follows the spawning thread). Not for the bench's own-session agents: the exit hook
        # kills those, and the start-up figure must not include an extra exec the floor it is compared with lacks.
        setpriv = shutil.which("setpriv")
        if setpriv and not self.own_session and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self.spawned_at = time.monotonic()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env,
                                         cwd=self.root, preexec_fn=_limits(self.nofile),
                                         start_new_session=self.own_session)
        _LIVE.add(self)
        return self

    def wait_live(self, timeout: float = 15.0, period: float = 0.01) -> float:
        """Block until the port is known and /livez answers 200; the seconds since spawn."""
        def live() -> float | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.output()}")
            if not self.port:
                match = _PORT_LOG.search(self.stdout())
                self.port = int(match.group(1)) if match else 0
            return time.monotonic() if self.port and self.get_status("/livez") == 200 else None

        return until(live, timeout, period=period, what=lambda: f"agent /livez 200: {self.output()}") - self.spawned_at

    def start(self, wait: float = 15.0) -> AgentProcess:
        """Spawn the agent and wait until /livez answers; on failure the agent is killed before raising."""
        self.spawn()
        try:
            self.wait_live(wait)
        except BaseException:
            self.close()
            raise
        return self

    def wait_status(self, path: str, status: int, timeout: float, period: float = 0.02) -> float:
        """Block until ``GET path`` answers ``status``; the time it did (``TimeoutError`` shows the output)."""
        return until(lambda: self.get_status(path) == status and time.monotonic(), timeout,
                     lambda: f"{path} {status} (agent output: {self.output()})", period=period)

    @property
    def base(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """A blocking GET: (status, body)."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get_status(self, path: str) -> int:
        """The status of ``GET path``; 0 when nothing answered within a second."""
        try:
            return self.get(path, timeout=1.0)[0]
        except OSError:
            return 0

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self) -> str:
        """Everything the agent printed so far (stdout then stderr)."""
        return self.stdout() + self.stderr()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records on stdout (run the agent with ``--log-format json``), for asserting fields."""
        found: list[dict[str, Any]] = []
        for line in self.stdout().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def events(self, event: str) -> list[dict[str, Any]]:
        """The JSON records whose label ``event`` is ``event`` (``transition``, ``failing``, ``deadline`` …)."""
        return [r for r in self.records() if r.get("logging.googleapis.com/labels", {}).get("event") == event]

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def soft_nofile(self) -> int:
        """The agent's own soft open-file limit, as the kernel reports it."""
        text = Path(f"/proc/{self.pid}/limits").read_text()
        match = re.search(r"^Max open files\s+(\d+)", text, re.M)
        assert match, text
        return int(match.group(1))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        _LIVE.discard(self)
        self._dir.cleanup()

    def __enter__(self) -> AgentProcess:
        return self.start() if self.start_on_enter and self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for agent in list(_LIVE):
        agent.close()


def run_cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None,
            root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m agent ARGS`` to completion (for ``check`` and ``wait``)."""
    cmd: Sequence[str] = [sys.executable, "-m", "agent", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=agent_env(env), cwd=root)
