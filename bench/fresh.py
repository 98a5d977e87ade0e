"""Figure 4c: what proving a new client's view costs Redis (``--redis-fresh-connection-interval``), plain and TLS.

Every period the Redis check opens a second, new connection (TCP, TLS, ``AUTH``, ``CLIENT SETNAME``,
``PING``) and closes it. What that costs is counted where it lands, by the fleet's method (bench/fleet.py):
groups of ``n`` agents side by side, each against its own redis-server (TLS on, so every server is alike),
beside an idle one, servers and agents pinned apart; per window, Redis CPU per agent above the idle server and
the connections the server accepted (``INFO total_connections_received``). Per transport three groups: the proof
off, every second (so the cost of one connection stands out of the noise: a new connection at almost every
check) and at the default (what a pod costs as shipped). The cost of one new connection is the CPU the
every-second group adds over the group without proofs, divided by the connections it adds.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from bench.common import Mode, Row, Section, log, median
from bench.fleet import (
    MIN_SIGNAL,
    SERVER_CPUS,
    TOO_SHORT,
    Group,
    measure_windows,
    pin,
    settle,
    standalone,
    start_fleet,
)
from harness.agent_process import AgentProcess
from harness.redis_server import RedisProcess
from harness.tls import Authority, TlsRedis

DEFAULT = 30.0  # the setting's default (agent/config/settings.py), stated so the rows say what they measured
FRESH = "--redis-fresh-connection-interval"
PERIODS = {"off": "0", "every 1 s": "1", "default": f"{DEFAULT:g}"}


def measure(n: int, steady: float, windows: int) -> dict[str, Group]:
    """The six groups (plain and TLS, by period) side by side; ``windows`` windows of ``steady`` s."""
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fresh-")))
        ca = Authority(directory)
        issued = ca.issue("server", ips=("127.0.0.1",))
        groups: dict[str, Group] = {}
        servers: dict[str, RedisProcess] = {}
        agents: list[AgentProcess] = []
        for transport in ("plain", "TLS"):
            for label, period in PERIODS.items():
                name = f"{transport}, {label}"
                server = TlsRedis(issued, ca.path)
                stack.enter_context(server).start()
                pin(server.pid, SERVER_CPUS)
                tls = transport == "TLS"
                url = f"rediss://127.0.0.1:{server.tls_port}/0" if tls else None
                args = (FRESH, period, *(("--redis-ca-file", str(ca.path)) if tls else ()))
                agents += start_fleet(stack, server, n, args, url)
                servers[name], groups[name] = server, Group(name, n)
        idle = stack.enter_context(TlsRedis(issued, ca.path)).start()
        pin(idle.pid, SERVER_CPUS)
        settle(agents)
        measure_windows(groups, servers, idle, steady, windows)
    return groups


def per_connection(groups: dict[str, Group], transport: str) -> float | None:
    """Redis CPU seconds per new connection: what the every-second group adds over ``off``, per connection added;
    None when what it adds is too small to tell from noise (under ``MIN_SIGNAL``, or not more in every window)."""
    fast, off = groups[f"{transport}, every 1 s"], groups[f"{transport}, off"]
    added = [w.redis_cpu - b.redis_cpu for w, b in zip(fast.windows, off.windows, strict=True)]
    extra_rate = (fast.opened_per_minute - off.opened_per_minute) / 60
    if not added or min(added) <= 0 or sum(added) < MIN_SIGNAL or extra_rate <= 0:
        return None
    extra_cpu = median([fast.cpu(w) - off.cpu(b) for w, b in zip(fast.windows, off.windows, strict=True)])
    return extra_cpu / extra_rate


def rows(section: Section, groups: dict[str, Group]) -> None:
    """One row per group (connections opened per agent per minute, Redis CPU per agent), one per transport."""
    n = next(iter(groups.values())).n
    for name, group in groups.items():
        cpu = f"{group.cpu_per_client * 1e6:.1f} us/s" if group.measurable else TOO_SHORT
        section.rows.append(Row("4c", f"fresh connections, {n} agents, {name}: opened per agent per minute / "
                                      "Redis CPU per agent", f"{group.opened_per_minute:.1f} / {cpu}"))
    for transport in ("plain", "TLS"):
        metric = f"{transport}: Redis CPU per new connection; at the default ({DEFAULT:g} s) per agent"
        cost = per_connection(groups, transport)
        if cost is None:
            section.rows.append(Row("4c", metric, TOO_SHORT))
            continue
        shipped = cost * 60 / DEFAULT / 60  # CPU seconds per second per agent at the default period
        off = groups[f"{transport}, off"]
        section.rows.append(Row(
            "4c", metric, f"{cost * 1e6:.0f} us; {shipped * 1e6:.2f} us/s",
            f"the held connection's checks: {off.cpu_per_client * 1e6:.1f} us/s per agent "
            f"({shipped / off.cpu_per_client * 100:.1f} % more)" if off.measurable else ""))
    section.notes.append(
        f"Fresh connections: {n} agents per group, six groups side by side on redis-servers with TLS on, "
        f"{len(next(iter(groups.values())).windows)} windows of "
        f"{next(iter(groups.values())).seconds / max(1, len(next(iter(groups.values())).windows)):.0f} s; the cost "
        "per connection is the every-second group's Redis CPU over the group without proofs, per connection it "
        "adds (median over windows); 'at the default' is that cost times two connections a minute.")


def run(mode: Mode) -> Section:
    """Part of the fleet figure (bench/fleet.py runs it)."""
    section = Section("4c. Fresh connections")
    n, steady, windows = mode.reps(5, 3), mode.pick(20.0, 8.0), mode.reps(3, 1)
    log(f"fleet: fresh connections, six groups of {n} agents, {windows} x {steady:g} s")
    rows(section, measure(n, steady, windows))
    return section


def main() -> None:
    """``python -m bench.fresh [--agents N] [--steady S] [--windows W]``: this figure alone."""
    def build(args: argparse.Namespace) -> Section:
        section = Section("4c. Fresh connections")
        rows(section, measure(args.agents, args.steady, args.windows))
        return section

    standalone(main.__doc__ or "", {"agents": 5, "steady": 20.0, "windows": 3}, build)


if __name__ == "__main__":
    main()
