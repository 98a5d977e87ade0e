"""The watch on the held connection: its loss (EOF, RST, a protocol error) is seen at that instant.

There is no second connection any more: the check's own connection stays open between checks and its reader
task always has a read pending, so a killed Redis is seen within a millisecond (connection.py). This module
only tells the agent's loop when the connection the last successful check used was ended *by the server*; a
connection the check closed itself (after a failure, or to re-authenticate) is not a loss, and a replacement
opened by a later check is followed. A loss records nothing: it asks the check again at once, on a fresh
connection, and that answer is the observation (docs/design.md, "Evidence").
"""

from __future__ import annotations

import asyncio

from agent.checks.redis.connection import RespConnection
from agent.core.model import MonitorUnavailable, Reason


class ConnectionWatch:
    """Follows the check's current connection; ``wait_lost`` returns when the server ends it."""

    def __init__(self) -> None:
        self._conn: RespConnection | None = None

    def hold(self, conn: RespConnection | None) -> None:
        """The check's current connection (None once it dropped it)."""
        self._conn = conn

    @property
    def watching(self) -> bool:
        return self._conn is not None and self._conn.is_open

    async def wait_lost(self) -> None:
        """Return when the server ends the held connection; raise :class:`MonitorUnavailable` when none is held.

        The agent's loop (core/agent.py) calls it after a successful check, and again after the next one when
        it raises.
        """
        while True:
            conn = self._conn
            if conn is None:
                raise MonitorUnavailable(Reason.REFUSED)
            error = await asyncio.shield(conn.lost)
            if error is not None:
                return
            if self._conn is conn or self._conn is None:
                raise MonitorUnavailable(Reason.REFUSED)  # we closed it ourselves and hold none now
