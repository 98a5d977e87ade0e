"""The test tiers: the slow list names real files, and the fast tier never starts the agent as a process."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SLOW_FILES

TESTS = Path(__file__).resolve().parent
META = {"test_tiers.py", "test_harness_shape.py"}  # they read other files' sources for these words
SPAWNERS = ("AgentProcess(", "PipedAgent(", "agent_command(", "run_cli(", '"-m", "agent"')


class TestTiers:
    def test_every_slow_file_exists(self) -> None:
        """A renamed or removed file leaves no stale entry in the slow list."""
        assert sorted(name for name in SLOW_FILES if not (TESTS / name).is_file()) == []

    def test_the_fast_tier_starts_no_agent_process(self) -> None:
        """``make test-fast`` stays an inner loop: a file that starts the agent as a process is in the slow tier."""
        fast = [p for p in sorted(TESTS.glob("test_*.py")) if p.name not in SLOW_FILES | META]
        spawning = [p.name for p in fast if any(word in p.read_text() for word in SPAWNERS)]
        assert spawning == [], "add these to SLOW_FILES in tests/conftest.py: " + ", ".join(spawning)
