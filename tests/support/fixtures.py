"""Pytest fixtures over the fault-injection harness: real Redis servers and fault proxies, always cleaned up.

Registered for the whole suite by ``pytest_plugins = ["tests.support.fixtures"]`` in ``tests/conftest.py``.
Every server and proxy made through these fixtures is torn down at the end of the test, pass or fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import pytest
import pytest_asyncio

from harness.fault_proxy import FaultProxy
from harness.redis_server import RedisProcess, free_port

__all__ = ["ProxyFactory", "RedisFactory", "fault_proxy", "free_port", "redis_factory", "redis_proc"]


class RedisFactory(Protocol):
    """``redis_factory(*extra_args, requirepass=None, save="", start=True) -> RedisProcess``."""

    def __call__(
        self, *extra_args: str, requirepass: str | None = None, save: str = "", start: bool = True
    ) -> RedisProcess: ...


class ProxyFactory(Protocol):
    """``await fault_proxy(target) -> FaultProxy`` (started, mode ``pass``); target is a RedisProcess or
    ``(host, port)``."""

    async def __call__(self, target: RedisProcess | tuple[str, int]) -> FaultProxy: ...


@pytest.fixture
def redis_proc() -> Iterator[RedisProcess]:
    """A started ``redis-server`` with the harness defaults, killed after the test."""
    with RedisProcess() as proc:
        yield proc.start()


@pytest.fixture
def redis_factory() -> Iterator[RedisFactory]:
    """Make any number of servers with custom arguments; all are killed after the test."""
    yield from server_factory()


def server_factory(**process: Any) -> Iterator[RedisFactory]:
    """The body of ``redis_factory`` for any server (``binary=`` another one); reused by test_valkey.py."""
    made: list[RedisProcess] = []

    def make(*extra_args: str, requirepass: str | None = None, save: str = "", start: bool = True) -> RedisProcess:
        proc = RedisProcess(extra_args, requirepass=requirepass, save=save, **process)
        made.append(proc)
        return proc.start() if start else proc

    try:
        yield make
    finally:
        for proc in made:
            proc.close()


@pytest_asyncio.fixture
async def fault_proxy() -> AsyncIterator[ProxyFactory]:
    """Start ``FaultProxy`` instances in the test's event loop in front of a target; stopped after the test."""
    made: list[FaultProxy] = []

    async def make(target: RedisProcess | tuple[str, int]) -> FaultProxy:
        address = target.address if isinstance(target, RedisProcess) else target
        proxy = FaultProxy(address)
        made.append(proxy)
        return await proxy.start()

    try:
        yield make
    finally:
        for proxy in made:
            await proxy.stop()
