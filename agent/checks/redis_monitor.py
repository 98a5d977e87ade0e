"""The monitor connection: a held ``SUBSCRIBE`` whose loss (EOF, RST) says at once that Redis went away.

Pub/sub clients are exempt from Redis' idle ``timeout``, so the connection stays up while Redis does. Plain
asyncio streams and RESP, not redis-py: it only has to authenticate, subscribe, and notice EOF.
"""

from __future__ import annotations

import asyncio

from redis import exceptions as rx

from agent.checks.redis_conn import RedisEndpoint, resp
from agent.checks.redis_replies import classify
from agent.model import MonitorUnavailable

MONITOR_CHANNEL = "readiness-agent:monitor"


class Monitor:
    """One held monitor connection to ``endpoint``; ``wait_lost`` returns when it is lost."""

    def __init__(self, endpoint: RedisEndpoint) -> None:
        self.endpoint = endpoint
        self._writer: asyncio.StreamWriter | None = None

    async def wait_lost(self) -> None:
        """Open and subscribe (raising :class:`MonitorUnavailable` if that fails), then wait for EOF."""
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(self.endpoint.timeout):
                    reader, writer = await self.endpoint.open_stream()
                    writer.write(resp("SUBSCRIBE", MONITOR_CHANNEL))
                    await writer.drain()
                    first = await reader.read(1024)
                    if not first.startswith(b"*"):
                        raise rx.ResponseError(first.decode("utf-8", "replace").strip()[1:] or "EOF")
            except Exception as exc:
                raise MonitorUnavailable(classify(exc)[0]) from None
            self._writer = writer
            try:
                while await reader.read(4096):
                    pass  # nothing is ever published; any bytes are ignored, EOF ends the wait
            except (OSError, asyncio.IncompleteReadError):
                pass
        finally:
            if writer is not None:
                writer.close()
            self._writer = None

    def close(self) -> None:
        """Drop the connection (the waiting ``wait_lost`` returns)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
