"""Suite-wide fixtures (the fault harness) and the fault-matrix table at the end of the run."""

from __future__ import annotations

import pytest

from tests.support.matrix import RESULTS, render

pytest_plugins = ["tests.support.fixtures"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix's measured figures (also recorded in docs/faults.md)."""
    if RESULTS:
        terminalreporter.section("fault matrix")
        terminalreporter.write_line(render(RESULTS))
