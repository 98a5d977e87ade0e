"""What one PING per second costs Redis, by the client that sends it: the fleet's reference, checked.
``python -m bench.reference [--clients N] [--runs R] [--steady S] [--windows W]``.

Why: the fleet (bench/fleet.py) judges the agent by the Redis CPU one PING per second costs in the same run.
On this 2-CPU VM that figure depends on the process sending the PING, not only on the bytes: Redis pays, in
its own CPU time, for waking a client on the other CPU, and what that costs depends on what the client does
around its request. This part measures the spread, so the choice of reference rests on a figure.

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
import time
from dataclasses import dataclass

from bench import fleet
from bench.common import Row, install_signal_handlers, log, median, table
from harness.redis_server import RedisProcess


def groups(c_client: str) -> dict[str, list[str] | None]:
    """Group name → client argv (``None``: agents at their defaults)."""
    return {
        "redis-cli": fleet.redis_cli_pings(),
        "C, after reply": [c_client, "{port}", "after-reply"],
        "C, grid": [c_client, "{port}", "grid"],
        "asyncio, grid": fleet.asyncio_pings("grid"),
        "asyncio, agent schedule": fleet.asyncio_pings("agent"),
        "agent, defaults": None,
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


def one_run(argvs: dict[str, list[str] | None], n: int, steady: float, windows: int) -> Run:
    """Every group side by side for ``windows`` windows of ``steady`` s.

    Wake-ups per PING: the server's wake-ups over the windows, less the idle server's (Redis's own timer), over
    the PINGs it served; 1.0 means one wake-up per request, less means requests arrive together.
    """
    measured = {name: fleet.Group(name, n) for name in argvs}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(RedisProcess(["--maxclients", "10000"])).start() for name in argvs}
        idle = stack.enter_context(RedisProcess()).start()
        for server in [*servers.values(), idle]:
            fleet.pin(server.pid, fleet.SERVER_CPUS)
        agents = []
        for name, argv in argvs.items():
            if argv is None:
                agents += fleet.start_fleet(stack, servers[name], n, ())
            else:
                stack.enter_context(fleet.clients(servers[name], n, argv))
        for agent in agents:
            agent.wait_live(timeout=120, period=0.05)
        fleet.all_ready(agents, timeout=90)
        for agent in agents:
            fleet.pin(agent.pid, fleet.CLIENT_CPUS)
        time.sleep(2.0)  # every client on its steady schedule
        before = {name: wakeups(server.pid) for name, server in [*servers.items(), ("", idle)]}
        fleet.measure_windows(measured, servers, idle, steady, windows)
        after = {name: wakeups(server.pid) for name, server in [*servers.items(), ("", idle)]}
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
        argvs = groups(fleet.build_c_client(directory))
        runs = []
        for i in range(args.runs):
            log(f"reference: run {i + 1} of {args.runs}, {len(argvs)} groups of {args.clients} side by side")
            runs.append(one_run(argvs, args.clients, args.steady, args.windows))
            base = runs[-1].groups["redis-cli"]
            log("; ".join(f"{g.name} {median(g.ratio(base)):.2f} x, {runs[-1].wakeups_per_ping[g.name]:.2f} wake-ups"
                          for g in runs[-1].groups.values()))
    print(table(rows(runs)))


if __name__ == "__main__":
    main()
