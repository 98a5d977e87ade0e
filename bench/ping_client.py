"""A third baseline for the fleet (bench/fleet.py): one ``PING`` per second on a kept connection, from a minimal
asyncio Python client. ``python -m bench.ping_client PORT``.

Why: ``redis-cli -i 1 ping`` is a small C process that blocks in ``read``; the agent is a Python asyncio process.
On one machine the client's own runtime shows in what Redis spends on it (shared caches, wake-ups), so the same
PING from the agent's runtime separates what the agent *sends* from what it *is*. Nothing but the PING.
"""

from __future__ import annotations

import asyncio
import random
import sys


async def main(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(random.random())  # phases spread over the second, as the redis-cli group's
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        writer.write(b"PING\r\n")
        if await reader.readline() != b"+PONG\r\n":
            return  # EOF or not Redis: the bench ends us anyway
        next_at += 1.0
        await asyncio.sleep(max(0.0, next_at - loop.time()))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
