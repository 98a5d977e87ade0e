"""The Redis check: "connected" is not enough, Redis must be *usable*.

One check is ``PING`` (must answer exactly ``PONG``: ``-LOADING``, ``-BUSY``, ``-MASTERDOWN``, ``-MISCONF``,
``-NOAUTH`` all fail it), then ``INFO persistence replication`` (``loading``, ``async_loading``, ``role``,
``master_link_status``), then, if configured, ``EXISTS`` on a maintenance key. Design choices, each from a
real failure mode (docs/design.md, "Redis facts"):

* no client retries (redis-py's default retries hid ``-LOADING`` for seconds) and every check is bounded by
  ``asyncio.timeout``;
* the probe connection is reused while healthy and *discarded* after any error, timeout or cancellation,
  because a cancelled read can leave it off by one reply (redis-py #2624);
* a separate monitor connection (redis_monitor.py) reports its loss at once, so a kill is seen in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

from agent.checkconfig import CheckConfig
from agent.checks.redis_conn import RedisEndpoint
from agent.checks.redis_monitor import Monitor
from agent.checks.redis_replies import classify, judge_info, parse_info
from agent.model import CheckResult, Reason


class RedisCheck:
    """Checks one Redis. ``run`` never raises and returns within ``timeout`` (plus scheduling noise)."""

    kind = "redis"

    def __init__(self, config: CheckConfig, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = config.name
        self.required = config.required
        self.target = config.describe()
        self.config = config
        self.timeout = timeout
        self.clock = clock
        self.endpoint = RedisEndpoint(config, timeout)
        self.monitor = Monitor(self.endpoint)
        self._conn: AbstractConnection | None = None
        self._info_sections: tuple[str, ...] = ("persistence", "replication")

    @staticmethod
    async def _discard(conn: AbstractConnection | None) -> None:
        if conn is None:
            return
        # Closing a broken connection must never fail the check.
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)

    async def _command(self, conn: AbstractConnection, *args: str) -> Any:
        await conn.send_command(*args)
        return await conn.read_response()

    async def run(self) -> CheckResult:
        """PING, INFO, optional maintenance key; bounded by ``timeout``; the connection is dropped on error."""
        started = self.clock()
        if self._conn is not None and self.endpoint.credentials_changed():
            await self._discard(self._conn)
            self._conn = None
        conn = self._conn
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = self.endpoint.probe_connection()
                    self._conn = conn
                    await conn.connect()  # type: ignore[no-untyped-call]
                failure = await self._probe(conn)
        except asyncio.CancelledError:
            await self._discard(conn)
            self._conn = None
            raise
        except Exception as exc:
            await self._discard(conn)
            self._conn = None
            reason, detail = classify(exc)
            return CheckResult(False, self.clock() - started, reason, detail)
        if failure is not None:
            return CheckResult(False, self.clock() - started, failure[0], failure[1])
        return CheckResult(True, self.clock() - started)

    async def _probe(self, conn: AbstractConnection) -> tuple[Reason, str] | None:
        reply = await self._command(conn, "PING")
        if reply not in (b"PONG", "PONG"):
            return Reason.PROTOCOL, "PING did not answer PONG"
        try:
            raw = await self._command(conn, "INFO", *self._info_sections)
        except rx.ResponseError:
            if len(self._info_sections) < 2:
                raise
            # Redis < 7 takes one INFO section at a time: fall back to the default sections.
            self._info_sections = ()
            raw = await self._command(conn, "INFO")
        failure = judge_info(parse_info(raw), self.config.require_master)
        key = self.config.maintenance_key
        if failure is None and key and await self._command(conn, "EXISTS", key):
            return Reason.MAINTENANCE, "the maintenance key exists"
        return failure

    async def wait_lost(self) -> None:
        """Hold the monitor connection; return when it is lost (see redis_monitor.py)."""
        await self.monitor.wait_lost()

    async def close(self) -> None:
        """Close both connections."""
        await self._discard(self._conn)
        self._conn = None
        self.monitor.close()
