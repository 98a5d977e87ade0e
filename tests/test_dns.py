"""A resolver that never answers: every check says ``dns`` within its timeout, and SIGTERM is not held up.

The agent runs in a private mount namespace whose ``/etc/resolv.conf`` names a UDP socket on a loopback
address that this test binds and never reads (queries are swallowed, as by a resolver behind a dead path).
Before checks/dns.py, the Redis check said ``timeout`` and SIGTERM with a 1 s drain exited after 10.6 s,
because interpreter exit joined the default executor's thread stuck in ``getaddrinfo``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks import dns
from agent.checks.redis.replies import classify
from agent.core.model import Reason
from harness.agent_process import ROOT, agent_command, agent_env
from harness.redis_server import free_port
from harness.wait import until

NAME = "redis.never-answers.test"  # not in /etc/hosts: only the (silent) resolver could answer
DRAIN = 1.0
CONFIG = f"""\
checks:
  - name: tcp
    type: tcp
    address: {NAME}:5432
  - name: http
    type: http
    url: http://{NAME}:8080/healthz
  - name: sentinel
    url: redis+sentinel://{NAME}:26379/mymaster
"""


@pytest.fixture
def silent_resolver(tmp_path: Path) -> Iterator[Path]:
    """A resolv.conf naming a loopback UDP socket that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(50):  # a random loopback address: another test's stub may hold port 53 on one of them
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            sock.bind((address, 53))
            break
        except OSError:
            continue
    else:
        sock.close()
        pytest.fail("no loopback address with UDP port 53 free for the stub resolver")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {address}\n")
    try:
        yield conf
    finally:
        sock.close()


def status(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1.0) as response:
            body: dict[str, object] = json.loads(response.read())
            return body
    except OSError:
        return None


def test_silent_resolver_is_dns_and_does_not_hold_sigterm(silent_resolver: Path, tmp_path: Path) -> None:
    """Redis, Sentinel, TCP and HTTP checks all fail with ``dns``; SIGTERM ends the agent within drain + 1 s."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed to give the agent its own resolv.conf"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    # As root a mount namespace is enough; otherwise a user namespace maps us to root inside it.
    namespace = ["-m"] if os.getuid() == 0 else ["-m", "--map-root-user"]
    cmd = [unshare, *namespace, "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(silent_resolver),
           *agent_command("--redis-url", f"redis://{NAME}:6379/0", "--config", str(config), "--timeout", "0.5",
                          "--drain-seconds", f"{DRAIN:g}", listen=f"127.0.0.1:{port}")]
    out = tmp_path / "agent.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=agent_env(), cwd=ROOT)
    try:
        def reasons() -> dict[str, object] | None:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited with {proc.returncode}: {out.read_text()}")
            body = status(port)
            if body is None:
                return None
            checks = body["checks"]
            assert isinstance(checks, dict)
            found = {name: check["last_failure_reason"] for name, check in checks.items()}
            return found if all(found.values()) else None

        found = until(reasons, 15.0, what=lambda: f"a failure of every check: {out.read_text()}")
        assert found == {"redis": "dns", "tcp": "dns", "http": "dns", "sentinel": "dns"}
        body = status(port)
        assert body is not None
        details = {name: check["last"]["detail"] for name, check in body["checks"].items()}  # type: ignore[attr-defined]
        assert all("resolver" in detail for detail in details.values()), details
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - sent
        assert proc.returncode == 0, out.read_text()
        assert DRAIN <= took <= DRAIN + 1.0, f"SIGTERM -> exit took {took:.2f}s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


class TestLookups:
    async def test_one_thread_per_name_in_flight_and_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Lookups of one name share a thread; each waiter gives up after ``within`` with a ``dns`` failure."""
        release, calls = threading.Event(), []

        def stuck(*args: object) -> list[object]:
            calls.append(args)
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "late")

        monkeypatch.setattr(dns.socket, "getaddrinfo", stuck)
        try:
            results = await asyncio.gather(*(dns.resolve(NAME, 6379, 0.05) for _ in range(3)),
                                           return_exceptions=True)
            assert len(calls) == 1
            assert all(isinstance(r, dns.LookupTimeout) for r in results)
            assert classify(results[0]) == (Reason.DNS, "no answer from the resolver within the check timeout")
        finally:
            release.set()

    async def test_an_address_is_not_looked_up(self) -> None:
        """An IP literal needs no resolver, not even with no time left."""
        assert (await dns.resolve("127.0.0.1", 6379, 0.0))[0][4] == ("127.0.0.1", 6379)
        assert (await dns.resolve("::1", 6379, 0.0))[0][4][:2] == ("::1", 6379)

    def test_the_budget_leaves_the_caller_its_margin(self) -> None:
        """A lookup ends before its caller's timeout, so the caller sees ``dns``, not ``timeout``."""
        assert dns.lookup_budget(0.5) == pytest.approx(0.45)
        assert dns.lookup_budget(0.05) == pytest.approx(0.04)
        assert dns.lookup_budget(-1.0) == 0.0
