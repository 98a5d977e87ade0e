"""Hostile HTTP clients for the adversarial suite: raw loopback sockets that send half a request or bytes
no client should send, and the agent's CLI run from ``AGENT_ROOT``.

``ADVERSARIAL_AGENT_ROOT`` (a checkout of this repository) makes the suite run that tree's agent instead of
this one (``cli`` here, ``AgentProcess(root=AGENT_ROOT)`` for ``run``): the suite is run once against the
main from before the renovation to fill the "before" column of the issue's table (``tests/test_adversarial.py``
says how). Loopback only.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from harness.agent_process import ROOT, agent_env

AGENT_ROOT = Path(os.environ.get("ADVERSARIAL_AGENT_ROOT") or ROOT)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, str, str, float]:
    """``python -m agent ARGS`` from ``AGENT_ROOT``: (exit code, stdout, stderr, wall seconds)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, env=agent_env(env), cwd=AGENT_ROOT, errors="replace")
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


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


def one_error_line(stderr: str) -> list[str]:
    """The ``readiness-agent: error:`` lines of ``stderr``."""
    return [line for line in stderr.splitlines() if line.startswith("readiness-agent: error")]

