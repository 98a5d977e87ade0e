"""Weighing the evidence (issue 17): kill → 503 at the agent's defaults, and 503s while the server only drops
connections. ``python -m bench.evidence [--kills N] [--rounds N]``; prints one JSON object.

Method: one redis-server and one agent (defaults, ``/readyz`` polled every 5 ms over keep-alive by
``ReadyzSampler``). *Kills*: SIGKILL the server, time until the first 503, restart it, wait for 200; N times.
*Drops*: ``CLIENT KILL TYPE normal`` and ``TYPE pubsub``, five times one second apart, per round; a round
counts as a 503 round if ``/readyz`` answered 503 at any moment during it. Run on two checkouts to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator

from bench.common import bench_agent, log, median, quantile, redis_url
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess


@contextlib.contextmanager
def _rig() -> Iterator[tuple[RedisProcess, ReadyzSampler]]:
    """One redis-server, one agent at its defaults on it, and its /readyz sampled every 5 ms."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess()).start()
        agent = stack.enter_context(bench_agent(["--redis-url", redis_url(server.port)]).start())
        yield server, stack.enter_context(ReadyzSampler(agent.port))


def kills(n: int) -> list[float]:
    """Seconds from SIGKILL to the first 503, ``n`` times."""
    out: list[float] = []
    with _rig() as (server, watcher):
        for _ in range(n):
            if not watcher.wait_steady(200, 10):
                raise RuntimeError("agent not ready")
            time.sleep(1.5)  # a steady state: checks on the held connection at the healthy interval
            killed = time.monotonic()
            server.kill()
            seen = watcher.wait_for(503, killed, 10)
            if seen is None:
                raise RuntimeError("no 503 after a kill")
            out.append(seen - killed)
            server.start()
    return out


def drop_rounds(n: int) -> list[int]:
    """For each round of five CLIENT KILLs one second apart: how many 503 answers /readyz gave (0 or more)."""
    out: list[int] = []
    with _rig() as (server, watcher):
        for _ in range(n):
            if not watcher.wait_steady(200, 15):
                raise RuntimeError("agent not ready")
            started = time.monotonic()
            for _ in range(5):
                server.cli("CLIENT", "KILL", "TYPE", "normal")
                server.cli("CLIENT", "KILL", "TYPE", "pubsub")
                time.sleep(1.0)
            out.append(sum(1 for t, s in watcher.changes if t >= started and s == 503))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    log(f"evidence: {args.kills} kills")
    k = kills(args.kills)
    log(f"evidence: {args.rounds} rounds of connection drops")
    d = drop_rounds(args.rounds)
    print(json.dumps({
        "kill_to_503_ms": {"median": round(median(k) * 1000, 1), "p90": round(quantile(k, 0.9) * 1000, 1),
                           "all": [round(x * 1000, 1) for x in k]},
        "drop_rounds_with_503": sum(1 for x in d if x), "drop_rounds": len(d), "drop_503_changes": d,
    }))


if __name__ == "__main__":
    main()
