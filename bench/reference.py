"""What one PING per second costs Redis, by the client that sends it: the fleet's reference, checked.
``python -m bench.reference [--clients N] [--runs R] [--steady S] [--windows W]``.

Why: the fleet (bench/fleet.py) judges the agent by the Redis CPU one PING per second costs in the same run.
The same bytes cost Redis different amounts by the client that sends them: a client that sleeps exactly one
second after its reply (``redis-cli -i 1``) falls into step with the others through Redis's shared wake-ups,
so Redis serves several of them per wake-up. This part measures that spread (and the wake-ups behind it), so
the choice of the fleet's reference, a C client on a fixed grid, rests on a figure (docs/benchmarks.md).

By the fleet's method (groups side by side, each on its own redis-server, servers on the first CPU and clients
on the other, INFO cpu with an idle server subtracted, ratios within each window), ``runs`` times:

* **redis-cli**: ``redis-cli -r -1 -i 1 ping`` (sleeps a second after each reply);
* **C, after reply** and **C, grid**: bench/ping_client.c, redis-cli's twin (same bytes, same system calls),
  sleeping after each reply or ticking on a fixed grid;
* **asyncio, grid** and **asyncio, agent schedule**: bench/ping_client.py;
* **agent, defaults**: the agent as shipped, for scale.

Every PING group sends ``*1\\r\\n$4\\r\\nping\\r\\n`` once a second on a kept connection, so any difference
between them is the client process, not the request.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from dataclasses import dataclass

from bench import fleet
from bench.common import Row, install_signal_handlers, log, median, table


def groups(c_client: str) -> dict[str, fleet.GroupSpec]:
    """The groups, as ``fleet.side_by_side`` takes them (a list: a PING client's argv; a tuple: agents)."""
    return {
        "redis-cli": fleet.redis_cli_pings(),
        "C, after reply": [c_client, "{port}", "after-reply"],
        "C, grid": [c_client, "{port}", "grid"],
        "asyncio, grid": fleet.asyncio_pings("grid"),
        "asyncio, agent schedule": fleet.asyncio_pings("agent"),
        "agent, defaults": (),
    }


def wakeups(pid: int) -> int:
    """How often the process has gone to sleep and been woken (its main thread's voluntary switches)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))


@dataclass
class Run:
    """One run: the groups as the fleet's method measured them, and Redis wake-ups per PING by group."""

    groups: dict[str, fleet.Group]
    wakeups_per_ping: dict[str, float]


def one_run(specs: dict[str, fleet.GroupSpec], n: int, steady: float, windows: int) -> Run:
    """Every group side by side for ``windows`` windows of ``steady`` s.

    Wake-ups per PING: the server's wake-ups over the windows, less the idle server's (Redis's own timer), over
    the PINGs it served; 1.0 means one wake-up per request, less means requests arrive together.
    """
    measured = {name: fleet.Group(name, n) for name in specs}
    with contextlib.ExitStack() as stack:
        rig = fleet.side_by_side(stack, n, specs)
        watched = {**rig.servers, "": rig.idle}
        before = {name: wakeups(server.pid) for name, server in watched.items()}
        fleet.measure_windows(measured, rig.servers, rig.idle, steady, windows)
        after = {name: wakeups(server.pid) for name, server in watched.items()}
    idle_wakeups = after[""] - before[""]
    per_ping = {name: (after[name] - before[name] - idle_wakeups) / max(1, group.commands.get("ping", 0))
                for name, group in measured.items()}
    return Run(measured, per_ping)


def rows(runs: list[Run]) -> list[Row]:
    """Per group: Redis CPU per client, its ratio to redis-cli's (median over windows, per run), wake-ups."""
    out = []
    for name in runs[0].groups:
        ratios = [median(run.groups[name].ratio(run.groups["redis-cli"])) for run in runs]
        cpu = [run.groups[name].cpu_per_client * 1e6 for run in runs]
        woken = [run.wakeups_per_ping[name] for run in runs]
        out.append(Row("4", f"one PING/s, {name}: Redis CPU per client",
                       f"{median(cpu):.1f} us/s ({min(cpu):.1f}-{max(cpu):.1f})",
                       f"{median(ratios):.2f} x redis-cli ({min(ratios):.2f}-{max(ratios):.2f}) over {len(runs)} "
                       f"runs; {median(woken):.2f} Redis wake-ups per PING ({min(woken):.2f}-{max(woken):.2f})"))
    return out


def main() -> None:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steady", type=float, default=10.0)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        specs = groups(fleet.build_c_client(directory))
        runs = []
        for i in range(args.runs):
            log(f"reference: run {i + 1} of {args.runs}, {len(specs)} groups of {args.clients} side by side")
            runs.append(one_run(specs, args.clients, args.steady, args.windows))
            base = runs[-1].groups["redis-cli"]
            log("; ".join(f"{g.name} {median(g.ratio(base)):.2f} x, {runs[-1].wakeups_per_ping[g.name]:.2f} wake-ups"
                          for g in runs[-1].groups.values()))
    print(table(rows(runs)))


if __name__ == "__main__":
    main()
