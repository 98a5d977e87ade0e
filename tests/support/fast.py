"""The fast timing the end-to-end tests run the agent with: the flags, and what they parse to, from one source.

The detection bound comes from the agent's own :class:`Timing` (parsed from these very flags), so no test
re-types the formula or the jitter.
"""

from __future__ import annotations

from agent.config.loader import load_settings
from agent.config.settings import Platform, Timing

FAST = ("--interval", "0.5", "--retry-interval", "0.1", "--timeout", "0.3")
FAST_WINDOW = (*FAST, "--window", "0.2")


def timing_of(*flags: str) -> Timing:
    """The :class:`Timing` the agent builds from ``--name value`` flags (defaults for the rest)."""
    values = {flags[i].removeprefix("--").replace("-", "_"): flags[i + 1] for i in range(0, len(flags), 2)}
    return load_settings(values, {}, lambda _e: (Platform.LOCAL, "t")).timing


FAST_TIMING = timing_of(*FAST)
