"""The fleet figures' judgement on synthetic windows: a run too short to tell a cost from noise says so, and never
prints a negative cost, a ratio or a pass/MISS that rests on one (bench/fleet.py, bench/fresh.py)."""

from __future__ import annotations

import re

from bench import fresh
from bench.common import Section
from bench.fleet import TOO_SHORT, Group, Window, _rows

IDLE = 0.017  # an idle redis-server's CPU over a 15 s window (docs/benchmarks.md)
GROUPS = ("ping/s", "ping/s C", "ping/s asyncio", "exec probe", "defaults", "low-cost")


def group(name: str, n: int, seconds: float, per_client: list[float], idle: float = IDLE,
          opened: int = 0) -> Group:
    """A group whose Redis spent ``per_client`` (CPU s/s per client, one per window) above the idle server."""
    windows = [Window(seconds, idle + cpu * seconds * n, idle, n, {"ping": int(seconds * n)}, opened)
               for cpu in per_client]
    return Group(name, n, windows, agent_cpu=[0.5], agent_rss=[40.0])


def fleet_rows(n: int, seconds: float, idle: float, us: dict[str, list[float]]) -> Section:
    groups = {name: group(name, n, seconds, [u * 1e-6 for u in us[name]], idle) for name in GROUPS}
    groups["defaults, no jitter"] = Group("defaults, no jitter", n)
    section = Section("4b")
    _rows(section, groups)
    return section


FULL = {"ping/s": [55.6, 54.1, 50.1], "ping/s C": [82.0, 71.4, 74.0], "ping/s asyncio": [81.4, 70.2, 73.7],
        "exec probe": [22.6, 16.9, 18.3], "defaults": [87.1, 77.7, 79.6], "low-cost": [10.5, 7.2, 11.7]}
# One 5 s window of 8 clients: ~3 ms above the idle server at most, and a group below it (a negative cost).
QUICK = {"ping/s": [40.0], "ping/s C": [75.0], "ping/s asyncio": [70.0], "exec probe": [-12.6],
         "defaults": [-38.0], "low-cost": [9.0]}


class TestFleetJudgement:
    def test_a_full_run_is_measured_and_judged(self) -> None:
        """40 clients, 3 x 15 s (the figures of docs/benchmarks.md): ratios, and both targets met."""
        rows = fleet_rows(40, 15.0, IDLE, FULL).rows
        defaults, low_cost = rows[0], rows[1]
        assert defaults.value == "79.6 us/s / 1.00" and defaults.ok is True
        assert defaults.baseline.startswith("1.08 (1.06-1.09) x ping/s C, ")
        assert low_cost.ok is True and low_cost.baseline.endswith("0.46 (0.43-0.64) x exec probe")
        assert TOO_SHORT not in " ".join(r.value + r.baseline for r in rows)

    def test_a_cost_over_the_target_is_still_a_miss(self) -> None:
        """The noise rule hides nothing measurable: 1.5 x the C client fails its target."""
        us = FULL | {"defaults": [c * 1.5 for c in FULL["ping/s C"]]}
        assert fleet_rows(40, 15.0, IDLE, us).rows[0].ok is False

    def test_a_quick_run_says_too_short_to_measure(self) -> None:
        """8 clients, one 5 s window: no negative figure, no ratio and no pass or MISS resting on one."""
        section = fleet_rows(8, 5.0, 0.006, QUICK)
        text = " ".join(r.value + " " + r.baseline for r in section.rows) + " ".join(section.notes[-2:])
        assert not re.search(r"(^|[ (])-[0-9]", text) and "nan" not in text, text  # no negative figure
        defaults, low_cost = section.rows[0], section.rows[1]
        assert (defaults.value, defaults.ok, low_cost.ok) == (f"{TOO_SHORT} / 1.00", None, None)
        assert defaults.baseline.startswith(f"vs ping/s C: {TOO_SHORT}, ")
        assert all(r.mark != "MISS" for r in section.rows)
        assert f"defaults 1,000 connections and CPU {TOO_SHORT}" in section.notes[-2]

    def test_one_negative_window_is_too_short_however_long_the_rest(self) -> None:
        """A window where the group cost less than an idle server is noise: no figure rests on it."""
        assert fleet_rows(40, 15.0, IDLE, FULL | {"exec probe": [22.6, -1.0, 18.3]}).rows[1].ok is None


class TestFreshConnectionCost:
    def groups(self, plain_added: float, tls_added: float) -> dict[str, Group]:
        """3 agents, one 8 s window (a quick run); ``*_added``: CPU s/s per agent the every-second proof adds."""
        made = {}
        for transport, off, added in (("plain", 95e-6, plain_added), ("TLS", 153e-6, tls_added)):
            for label, extra, opened in (("off", 0.0, 0), ("every 1 s", added, 24), ("default", 0.0, 1)):
                made[f"{transport}, {label}"] = group(f"{transport}, {label}", 3, 8.0, [off + extra], 0.006, opened)
        return made

    def test_too_small_to_tell_from_noise(self) -> None:
        """Plain TCP's ~3.7 ms, or a proof group that cost less than the one without: too short to measure;
        TLS's ~14 ms is a figure."""
        for plain in (155e-6, -40e-6):
            section = Section("4c")
            fresh.rows(section, self.groups(plain, 600e-6))
            plain_row, tls_row = section.rows[-2:]
            assert plain_row.value == TOO_SHORT and plain_row.ok is None
            assert tls_row.value == "600 us; 20.00 us/s", tls_row
