"""Suite-wide fixtures (the fault harness) and the fault-matrix table at the end of the run."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.support.matrix import RESULTS, render

pytest_plugins = ["tests.support.fixtures"]

# Mutation testing re-runs the same test functions many times in one process: tell Hypothesis that is fine,
# and make every run draw the same examples so a mutant's verdict does not depend on luck.
settings.register_profile(
    "mutation", suppress_health_check=[HealthCheck.differing_executors], derandomize=True, database=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix's measured figures (also recorded in docs/faults.md)."""
    if RESULTS:
        terminalreporter.section("fault matrix")
        terminalreporter.write_line(render(RESULTS))
