"""One ``PING`` per second on a kept connection from a minimal asyncio Python client: the fleet's
``ping/s asyncio`` baseline (bench/fleet.py) and two of bench/reference.py's groups.
``python -m bench.ping_client PORT [--schedule agent|grid]``.

Why: it sends what ``redis-cli ping`` sends from the agent's own runtime, so beside redis-cli's C twin
(bench/ping_client.c) it shows how much of what Redis spends on the agent is the runtime rather than the
request (docs/benchmarks.md, "Fleet, third step": next to nothing, once the schedule is the same).

* ``agent`` (default): sleep ``1 s × (1 ± 0.2)`` after each reply, the agent's healthy schedule at its
  defaults (``interval`` 1 s, ``jitter`` 0.2, the next delay drawn once the check has its answer);
* ``grid``: one PING on every tick of a fixed one-second grid.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from agent.config.settings import DEFAULT_TIMING

PING = b"*1\r\n$4\r\nping\r\n"  # the bytes `redis-cli ping` sends (an inline PING is parsed differently)
INTERVAL, JITTER = DEFAULT_TIMING.interval, DEFAULT_TIMING.jitter  # the agent's healthy schedule at defaults


async def main(port: int, schedule: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(random.random())  # phases spread over the second
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        writer.write(PING)
        if await reader.readline() != b"+PONG\r\n":
            return  # EOF or not Redis: the bench ends us anyway
        if schedule == "agent":
            await asyncio.sleep(INTERVAL * (1 + JITTER * (2 * random.random() - 1)))
        else:
            next_at += INTERVAL
            await asyncio.sleep(max(0.0, next_at - loop.time()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--schedule", choices=("agent", "grid"), default="agent")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.schedule))
