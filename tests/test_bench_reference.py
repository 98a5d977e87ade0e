"""The fleet's PING clients send what ``redis-cli ping`` sends, byte for byte.

bench/fleet.py judges the agent against one PING per second from bench/ping_client.c (redis-cli's C twin) on a
fixed grid, and bench/reference.py compares it and bench/ping_client.py with redis-cli on the premise that the
requests are identical, so that a difference in Redis CPU is the client process, not the request. If a client's bytes
drifted from redis-cli's, those figures would silently measure something else; this keeps the premise true.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from bench.fleet import asyncio_pings, build_c_client, redis_cli_pings

REDIS_CLI_PING = b"*1\r\n$4\r\nping\r\n"


def first_request(argv: list[str]) -> bytes:
    """What the client writes first on its kept connection, answered as Redis answers a PING."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = str(listener.getsockname()[1])
        proc = subprocess.Popen([a.replace("{port}", port) for a in argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)  # the clients wait up to 1 s (their phase) before the first PING
                data = b""
                while len(data) < len(REDIS_CLI_PING) and (chunk := conn.recv(4096)):
                    data += chunk
                conn.sendall(b"+PONG\r\n")
                return data
        finally:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def c_client() -> Iterator[list[str]]:
    with tempfile.TemporaryDirectory() as directory:
        yield [build_c_client(directory), "{port}"]


def test_redis_cli_sends_the_reference_bytes() -> None:
    assert first_request(redis_cli_pings()) == REDIS_CLI_PING


@pytest.mark.parametrize("schedule", ["agent", "grid"])
def test_asyncio_client_sends_what_redis_cli_sends(schedule: str) -> None:
    assert first_request(asyncio_pings(schedule)) == REDIS_CLI_PING


@pytest.mark.parametrize("schedule", ["after-reply", "grid"])
def test_c_twin_sends_what_redis_cli_sends(c_client: list[str], schedule: str) -> None:
    assert first_request([*c_client, schedule]) == REDIS_CLI_PING
