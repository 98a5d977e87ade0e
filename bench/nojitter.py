"""The agent with its ±20 % jitter switched off: the fleet benchmark's baseline for the reconnect burst.

Why: jitter exists so that thousands of pods whose monitor connections all drop at the same instant (a Redis
restart or failover) do not all come back at the same instant too. To show what it buys, the fleet benchmark
runs the same agents once as shipped and once through this module, which pins the random source the agent
draws its jitter from to the midpoint (0.5, i.e. factor 1.0), then runs the ordinary CLI. Nothing else in
the agent changes. It must patch before ``agent.runner`` is imported, because ``Agent`` binds
``random.random`` as a default argument at import time.

Run as ``python -m bench.nojitter run --redis-url ... --listen ...`` (the arguments of ``readiness-agent``).
"""

from __future__ import annotations

import random
import sys


def _midpoint() -> float:
    return 0.5


random.random = _midpoint  # module-level function: what Agent's ``rng`` default binds
random._inst.random = _midpoint  # type: ignore[method-assign]  # uniform()/choice() use this

from agent.cli import main  # noqa: E402 (must come after the patch above: see the module docstring)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
