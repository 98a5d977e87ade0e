"""A new client's view: what only a new connection meets takes the agent out of rotation within the period.

The agent holds one connection, and a held connection outlives a password set or changed on the server and a
full ``maxclients``: new pods and the application's new pool connections fail while ``/readyz`` said 200 for
good (before ``--redis-fresh-connection-interval``). Each test changes the server under a ready agent (real
``redis-server``, the agent as a process, a 1 s period) and asserts ``/readyz`` 503 within the period plus the
checks that take a ready check out, with the reason and detail a new client met.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from harness.agent_process import AgentProcess
from harness.redis_server import RedisProcess
from harness.tls import Authority, TlsRedis
from tests.support.fixtures import RedisFactory

PERIOD = 1.0
# Checks every 0.5 s while healthy, 0.1 s while failing: a fresh connection is due at most PERIOD + one interval
# (with jitter) after the change, and two more failures take the check out; the rest is slack for a busy machine.
TIMING = ("--redis-fresh-connection-interval", f"{PERIOD:g}", "--interval", "0.5", "--retry-interval", "0.1",
          "--timeout", "0.5")
BOUND = PERIOD + 2.0


def leaves_rotation(agent: AgentProcess, change: Callable[[], object]) -> tuple[float, dict[str, str]]:
    """Wait until ready, ``change`` the server, and return how long until /readyz 503 and the check's last result."""
    agent.wait_status("/readyz", 200, 10.0)
    changed = time.monotonic()
    change()
    left = agent.wait_status("/readyz", 503, BOUND + 5.0, period=0.02) - changed
    last: dict[str, str] = json.loads(agent.get("/status")[1])["checks"]["redis"]["last"]
    return left, last


def test_requirepass_set_server_first_over_tls(tmp_path: Path) -> None:
    """``CONFIG SET requirepass`` on a TLS server: the held connection stays logged in, a new one gets
    ``-NOAUTH``: reason ``auth`` within the period."""
    ca = Authority(tmp_path)
    with TlsRedis(ca.issue("server", ips=("127.0.0.1",)), ca.path) as server:
        server.start()
        with AgentProcess("--redis-url", server.tls_url, "--redis-ca-file", str(ca.path), *TIMING) as agent:
            left, last = leaves_rotation(agent, lambda: server.set_password("rotated-first"))
    assert left <= BOUND, f"/readyz 503 {left:.2f}s after requirepass was set"
    assert last["reason"] == "auth"
    assert last["detail"].startswith("a new connection: NOAUTH"), last


def test_acl_password_changed(redis_factory: RedisFactory) -> None:
    """An ACL user's password replaced while the agent's connection stays authenticated: ``-WRONGPASS`` for a
    new client, reason ``auth`` within the period."""
    server = redis_factory()
    server.cli("ACL", "SETUSER", "app", "on", ">before", "~*", "&*", "+@all")
    with AgentProcess("--redis-url", f"redis://app:before@127.0.0.1:{server.port}/0", *TIMING) as agent:
        left, last = leaves_rotation(agent, lambda: server.cli("ACL", "SETUSER", "app", "resetpass", ">after"))
    assert left <= BOUND, f"/readyz 503 {left:.2f}s after the password changed"
    assert last["reason"] == "auth"
    assert last["detail"].startswith("a new connection: WRONGPASS"), last


def test_maxclients_reached_while_the_agent_holds_its_slot(redis_proc: RedisProcess) -> None:
    """``maxclients`` lowered to the one connection the agent holds: a new client is refused with
    ``-ERR max number of clients reached``, and the reason and detail say so (not ``refused``)."""
    with AgentProcess("--redis-url", redis_proc.url, *TIMING) as agent:
        left, last = leaves_rotation(agent, lambda: redis_proc.cli("CONFIG", "SET", "maxclients", "1"))
    assert left <= BOUND, f"/readyz 503 {left:.2f}s after maxclients was reached"
    assert last["reason"] == "maxclients"
    assert "max number of clients reached" in last["detail"], last
