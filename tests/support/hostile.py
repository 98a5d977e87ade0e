"""What the adversarial suite needs to attack the real agent: a child process with chosen resource limits,
raw loopback sockets that send half a request, and a search of everything the agent printed.

``ADVERSARIAL_AGENT_ROOT`` (a checkout of this repository) makes the child run that tree's agent instead of
this one: the suite is run once against the main from before the renovation to fill the "before" column of
the issue's table (``tests/test_adversarial.py`` says how). Loopback only.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.agentproc import ROOT, AgentProcess, agent_env

AGENT_ROOT = Path(os.environ.get("ADVERSARIAL_AGENT_ROOT") or ROOT)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, str, str, float]:
    """``python -m agent ARGS`` from ``AGENT_ROOT``: (exit code, stdout, stderr, wall seconds)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, env=agent_env(env), cwd=AGENT_ROOT, errors="replace")
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def _limits(nofile: tuple[int, int] | None) -> Callable[[], None] | None:
    if nofile is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return apply


class Agent(AgentProcess):
    """``readiness-agent run`` on ``127.0.0.1:0`` from ``AGENT_ROOT``, optionally under an open-file limit."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 nofile: tuple[int, int] | None = None) -> None:
        super().__init__(*args, env=env)
        self.nofile = nofile

    def start(self, wait: float = 15.0) -> Agent:
        cmd = [sys.executable, "-m", "agent", "run", "--listen", self.listen, "--platform", "local", *self.args]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=self.env, cwd=AGENT_ROOT,
                                         preexec_fn=_limits(self.nofile))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.output()}")
            match = re.search(r"listening on \S+ \(port (\d+)", self.stdout())
            if match:
                self.port = int(match.group(1))
                if http_status(self.port, "/livez") == 200:
                    return self
            time.sleep(0.01)
        raise TimeoutError(f"agent did not start within {wait}s: {self.output()}")

    def __enter__(self) -> Agent:
        return self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def soft_nofile(self) -> int:
        text = Path(f"/proc/{self.pid}/limits").read_text()
        match = re.search(r"^Max open files\s+(\d+)", text, re.M)
        assert match, text
        return int(match.group(1))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def http_request(port: int, raw: bytes, timeout: float = 2.0) -> tuple[int, bytes]:
    """Send ``raw`` bytes as one HTTP request on a fresh loopback connection: (status, whole answer).
    Status 0 means the connection closed or timed out without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(match.group(1)) if match else 0), data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return match is None or len(body) >= int(match.group(1))


def http_status(port: int, path: str, timeout: float = 1.0) -> int:
    """GET ``path`` with ``Connection: close``; 0 when there is no answer within ``timeout``."""
    try:
        return http_request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
                            timeout)[0]
    except OSError:
        return 0


@contextlib.contextmanager
def half_open(port: int, count: int, payload: bytes = b"GET /readyz HTTP/1.1\r\nHost: x\r\n") -> Iterator[
        list[socket.socket]]:
    """``count`` loopback connections that each sent ``payload`` (a request never finished); closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
                sock.sendall(payload)
            except OSError:
                continue
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the server has closed ``sock`` (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> float:
    """Poll ``predicate`` until true; the seconds it took, or TimeoutError."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(period)
    raise TimeoutError(f"not true within {timeout}s")


def one_error_line(stderr: str) -> list[str]:
    """The ``readiness-agent: error:`` lines of ``stderr``."""
    return [line for line in stderr.splitlines() if line.startswith("readiness-agent: error")]

