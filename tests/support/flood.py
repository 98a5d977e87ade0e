"""``python -m tests.support.flood URL SECONDS [CONNECTIONS]``: GET ``URL`` back to back over ``CONNECTIONS``
keep-alive connections (default 32) for ``SECONDS``, then print ``{"requests": n, "statuses": {...}}``.

Why a process of its own: a flood generated in the test's process would share its GIL with the test's
``/readyz`` sampler and inflate the latencies it measures. A closed loop like wrk's (wrk is a bench tool, not a
test tool), in asyncio with aiohttp's client.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp


async def flood(url: str, seconds: float, connections: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() < deadline:
                try:
                    async with session.get(url) as response:
                        await response.read()
                        statuses[response.status] += 1
                except aiohttp.ClientError:
                    statuses[0] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {"requests": sum(statuses.values()), "statuses": dict(statuses)}


def main(argv: list[str]) -> int:
    url, seconds = argv[0], float(argv[1])
    connections = int(argv[2]) if len(argv) > 2 else 32
    print(json.dumps(asyncio.run(flood(url, seconds, connections))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
