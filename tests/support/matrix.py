"""Results of the fault matrix, collected during the run and printed as a table at the end of pytest.

The same table (from a full run) is kept in docs/faults.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MatrixRow:
    """One fault row's measured figures (seconds unless named otherwise)."""

    fault: str
    to_not_ready: float
    to_ready: float
    samples: int
    probe_p50_ms: float
    probe_p99_ms: float
    reason: str


RESULTS: list[MatrixRow] = []


def render(rows: list[MatrixRow]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| fault | reason | fault → 503 (s) | usable → 200 (s) | /readyz samples | probe p50 (ms) | probe p99 (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.fault} | {r.reason} | {r.to_not_ready:.3f} | {r.to_ready:.3f} | {r.samples} | "
                     f"{r.probe_p50_ms:.1f} | {r.probe_p99_ms:.1f} |")
    return "\n".join(lines)
