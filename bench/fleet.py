"""Figure 4b, the fleet: what many agents cost the one Redis they all watch, against two same-run baselines.

Why: on GKE every pod of a WebSocket backend carries an agent, and they all check the same Redis. What
matters there is the Redis side: connections held and Redis CPU per pod, and what happens when that Redis
restarts and every agent notices at once. So this counts what Redis itself reports, never wall time.

**The method** (one, for every row): each group of ``n`` clients runs alone against its own fresh
redis-server for a steady window of ``steady`` seconds; an idle redis-server runs over the same window.
Redis CPU per client is ``(Δ used_cpu_user+used_cpu_sys of the target − Δ of the idle server) / window / n``
(``INFO cpu``, read at both ends of the window on one extra connection); connections per client are
``(connected_clients − 1) / n`` at the end of the window. The groups, in one run:

* **ping/s** (baseline): ``n`` kept connections, each sending one ``PING`` per second (phases spread);
* **exec probe** (baseline): ``redis-cli ping`` every 10 s per pod, the kubelet exec probe at Kubernetes
  defaults (a new connection per probe; spawned from here, without CRI exec overhead);
* **defaults**: ``n`` agents as shipped;
* **low-cost**: ``n`` agents with the large-fleet profile (``LOW_COST``; docs/design.md).

Then, for the defaults, Redis is killed, held down for a short outage (< ``backoff_after``), restarted on
the same port, and ``INFO`` is sampled every 20 ms to time the reconnections; the same with ``--jitter 0``
shows what jitter buys. The per-client figures are extrapolated to 1,000 and 10,000 pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench.common import (
    AgentProc,
    Mode,
    ReadyWatcher,
    Row,
    Section,
    cpu_seconds,
    http_status,
    log,
    median,
    memory_mib,
    ms,
    redis_url,
    until,
)
from tests.support.redisproc import RedisProcess, RespConnection, encode_command, parse_info

FLEETS = (1_000, 10_000)  # the fleet sizes extrapolated to on paper
SAMPLE = 0.02  # INFO sampling period during a reconnect burst
OUTAGE = 2.0  # < backoff_after: agents retry every retry_interval (±jitter) while Redis is down
LOW_COST = ("--interval", "10s")  # the large-fleet profile (docs/design.md, "Large fleets")
EXEC_PERIOD = 10.0  # the kubelet's default periodSeconds


@dataclass
class Burst:
    """One restart as Redis saw it: ``(seconds after restart, agent connections open)`` samples."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    redis_cpu: float = 0.0
    commands: int = 0
    fleet_ready: float = float("nan")

    def time_to(self, connections: int) -> float:
        """Seconds after the restart until Redis held ``connections`` agent connections."""
        return next((t for t, c in self.samples if c >= connections), float("nan"))

    def peak(self, window: float) -> int:
        """Most new agent connections between two samples at most ``window`` s apart (or since the restart)."""
        points = [(0.0, 0), *self.samples]
        return max((c1 - c0 for i, (t0, c0) in enumerate(points) for t1, c1 in points[i + 1:]
                    if t1 - t0 <= window + SAMPLE / 2), default=0)


@dataclass
class Group:
    """One group of ``n`` clients measured by the method above."""

    name: str
    n: int
    seconds: float = 0.0
    connections: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)
    redis_cpu: float = 0.0
    idle_redis_cpu: float = 0.0
    agent_cpu: list[float] = field(default_factory=list)
    agent_rss: list[float] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    kill_to_503: list[float] = field(default_factory=list)  # one agent of this profile, Redis SIGKILLed

    @property
    def cpu_per_client(self) -> float:
        """Redis CPU seconds per second per client, above what an idle redis-server costs."""
        return (self.redis_cpu - self.idle_redis_cpu) / self.seconds / self.n

    @property
    def commands_per_client(self) -> float:
        return sum(self.commands.values()) / self.seconds / self.n


def _info(conn: RespConnection) -> dict[str, str]:
    reply = conn.command("INFO", "clients", "stats", "commandstats", "cpu")
    if not isinstance(reply, str):
        raise RuntimeError(f"INFO failed: {reply}")
    return parse_info(reply)


def _cmdstat(info: dict[str, str]) -> dict[str, float]:
    """``{command: calls}`` from ``INFO commandstats``."""
    out = {}
    for key, value in info.items():
        if key.startswith("cmdstat_"):
            stats = dict(part.split("=", 1) for part in value.split(","))
            out[key.removeprefix("cmdstat_")] = float(stats["calls"])
    return out


def _cpu(info: dict[str, str]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _all_ready(agents: list[AgentProc], timeout: float) -> float:
    started = time.monotonic()
    pending = list(agents)

    def check() -> bool:
        pending[:] = [a for a in pending if http_status(a.port, "/readyz", timeout=0.5) != 200]
        return not pending

    if not until(check, timeout, period=0.05):
        raise RuntimeError(f"{len(pending)} of {len(agents)} agents not ready after {timeout}s")
    return time.monotonic() - started


def _measure(group: Group, server: RedisProcess, idle: RedisProcess, steady: float,
             agents: list[AgentProc] | None = None) -> None:
    """The method: Redis CPU, commands and connections over one steady window, idle server subtracted."""
    with server.connect(timeout=2.0) as conn, idle.connect(timeout=2.0) as idle_conn:
        before, idle_before = _info(conn), _info(idle_conn)
        cpu0 = {a.pid: cpu_seconds(a.pid) for a in agents or []}
        t0 = time.monotonic()
        time.sleep(steady)
        after, idle_after = _info(conn), _info(idle_conn)
        group.seconds = time.monotonic() - t0
    group.redis_cpu = _cpu(after) - _cpu(before)
    group.idle_redis_cpu = _cpu(idle_after) - _cpu(idle_before)
    group.connections = (int(after["connected_clients"]) - 1) / group.n
    calls0, calls1 = _cmdstat(before), _cmdstat(after)
    group.commands = {k: int(v - calls0.get(k, 0)) for k, v in calls1.items() if v > calls0.get(k, 0)}
    group.commands["info"] = group.commands.get("info", 0) - 1  # our own INFO between the snapshots
    group.commands = {k: v for k, v in group.commands.items() if v > 0}
    for agent in agents or []:
        group.agent_cpu.append((cpu_seconds(agent.pid) - cpu0[agent.pid]) / group.seconds * 100)
        group.agent_rss.append(memory_mib(agent.pid)[0])


@contextlib.contextmanager
def _servers() -> Iterator[tuple[RedisProcess, RedisProcess]]:
    with RedisProcess(["--maxclients", "10000"]) as server, RedisProcess() as idle:
        yield server.start(), idle.start()


def _ping_baseline(n: int, steady: float) -> Group:
    """``n`` kept connections, one PING per second each, from one asyncio loop in a thread."""
    group = Group("ping/s", n)
    with _servers() as (server, idle):
        stop = threading.Event()
        opened = threading.Event()

        async def client(i: int) -> None:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            opened.set()
            await asyncio.sleep(i / n)
            try:
                while not stop.is_set():
                    writer.write(encode_command("PING"))
                    await reader.readline()
                    await asyncio.sleep(1.0)
            finally:
                writer.close()

        async def main() -> None:
            await asyncio.gather(*(client(i) for i in range(n)))

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        opened.wait(5)
        time.sleep(2.0)
        _measure(group, server, idle, steady)
        stop.set()
        thread.join(5)
    return group


def _exec_baseline(n: int, steady: float) -> Group:
    """``redis-cli ping`` every EXEC_PERIOD s per pod: n/EXEC_PERIOD spawns per second, evenly spaced."""
    group = Group("exec probe", n)
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli not found")
    with _servers() as (server, idle):
        stop = threading.Event()

        def run() -> None:
            gap = EXEC_PERIOD / n
            next_at = time.monotonic()
            while not stop.is_set():
                subprocess.run([cli, "-h", server.host, "-p", str(server.port), "ping"], capture_output=True,
                               timeout=5, check=False)
                next_at += gap
                time.sleep(max(0.0, next_at - time.monotonic()))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(2.0)
        _measure(group, server, idle, steady)
        stop.set()
        thread.join(10)
    return group


def _agents(name: str, n: int, steady: float, args: tuple[str, ...], bursts: int) -> Group:
    group = Group(name, n)
    with _servers() as (server, idle), contextlib.ExitStack() as stack:
        agents = [stack.enter_context(AgentProc(["--redis-url", redis_url(server.port), *args]))
                  for _ in range(n)]
        for agent in agents:
            agent.spawn()
        for agent in agents:
            agent.wait_live(timeout=90, period=0.05)
        _all_ready(agents, timeout=60)
        time.sleep(2.0)  # every agent on its steady schedule
        _measure(group, server, idle, steady, agents)
        want = round(group.connections * n)
        for _ in range(bursts):
            group.bursts.append(_burst(server, agents, want))
    return group


def _burst(server: RedisProcess, agents: list[AgentProc], want: int) -> Burst:
    """Kill Redis, hold it down for OUTAGE, restart it, and sample INFO every SAMPLE s while the fleet returns."""
    burst = Burst()
    server.kill()
    time.sleep(OUTAGE)
    server.start()
    back = time.monotonic()
    with server.connect(timeout=2.0) as conn:
        last = _info(conn)
        deadline = back + 5.0
        while time.monotonic() < deadline:
            last = _info(conn)
            burst.samples.append((time.monotonic() - back, int(last["connected_clients"]) - 1))
            if burst.samples[-1][1] >= want and time.monotonic() - back > 1.5:
                break
            time.sleep(max(0.0, SAMPLE - 0.002))
        burst.redis_cpu = _cpu(last)
        burst.commands = int(sum(_cmdstat(last).values())) - len(burst.samples) - 1  # minus our own INFOs
    _all_ready(agents, timeout=30)
    burst.fleet_ready = time.monotonic() - back  # every agent's /readyz 200 again (polled every 50 ms)
    return burst


def _kills(args: tuple[str, ...], reps: int, rng: random.Random) -> list[float]:
    """kill → /readyz 503 for one agent of the profile: SIGKILL Redis at a random phase, time the 503."""
    out = []
    with RedisProcess() as server, AgentProc(["--redis-url", redis_url(server.start().port), *args]) as agent:
        agent.start()
        with ReadyWatcher(agent.port) as watcher:
            for _ in range(reps):
                if not watcher.wait_steady(200, 15):
                    raise RuntimeError("agent did not become ready")
                time.sleep(rng.uniform(0.2, 1.2))
                start = time.monotonic()
                server.kill()
                down = watcher.wait_for(503, start, timeout=20)
                out.append(float("inf") if down is None else down - start)
                time.sleep(0.5)
                server.start()
    return out


def measure(n: int, steady: float, bursts: int, kills: int = 5, agents_only: bool = False) -> dict[str, Group]:
    """Every group, one after another, by the one method (the baselines first)."""
    runs: list[tuple[str, Callable[[], Group]]] = []
    if not agents_only:
        runs += [("ping/s", lambda: _ping_baseline(n, steady)), ("exec probe", lambda: _exec_baseline(n, steady))]
    runs += [
        ("defaults", lambda: _agents("defaults", n, steady, (), bursts)),
        ("low-cost", lambda: _agents("low-cost", n, steady, LOW_COST, 0)),
        ("defaults, no jitter", lambda: _agents("defaults, no jitter", n, min(steady, 5.0), ("--jitter", "0"),
                                                bursts)),
    ]
    groups = {}
    for name, job in runs:
        log(f"fleet: {name}, {n} clients, {steady:g} s steady")
        groups[name] = job()
    rng = random.Random(9)
    for name, args in (("defaults", ()), ("low-cost", LOW_COST)):
        log(f"fleet: {kills} kills of Redis under one agent, {name}")
        groups[name].kill_to_503 = _kills(args, kills, rng)
    return groups


def run(mode: Mode) -> Section:
    """Both baselines, the defaults and the low-cost profile by one method; restart bursts of the defaults."""
    section = Section("4b. Fleet against one Redis")
    n = mode.reps(40, 8)
    groups = measure(n, mode.pick(20.0, 5.0), mode.reps(2, 1), mode.reps(7, 2))
    _rows(section, groups)
    return section


def _ratio(group: Group, base: Group) -> str:
    return f"{group.cpu_per_client / base.cpu_per_client:.2f}" if base.cpu_per_client > 0 else "n/a"


def _rows(section: Section, groups: dict[str, Group]) -> None:
    ping, exec_, shipped, cheap, flat = (groups[k] for k in ("ping/s", "exec probe", "defaults", "low-cost",
                                                              "defaults, no jitter"))
    n = shipped.n
    for group, target, ok in (
        (shipped, "<= 1.3 x ping/s, 1 conn", shipped.cpu_per_client <= 1.3 * ping.cpu_per_client
         and shipped.connections <= 1.05),
        (cheap, "<= 1.0 x exec probe", cheap.cpu_per_client <= exec_.cpu_per_client),
    ):
        if group.kill_to_503:
            kill = median(group.kill_to_503)
            section.rows.append(Row("4", f"{group.name}: kill -> /readyz 503, median of {len(group.kill_to_503)}",
                                    ms(kill), f"max {ms(max(group.kill_to_503))}", "<= 250 ms", kill <= 0.25))
        section.rows.append(Row(
            "4", f"fleet of {n}, {group.name}: Redis CPU / connections per agent",
            f"{group.cpu_per_client * 1e6:.1f} us/s / {group.connections:.2f}",
            f"{_ratio(group, ping)} x ping/s ({ping.cpu_per_client * 1e6:.1f} us/s), {_ratio(group, exec_)} x "
            f"exec probe ({exec_.cpu_per_client * 1e6:.1f} us/s)", target, ok))
    section.rows.append(Row("4", f"fleet of {n}: agent CPU / RSS, median",
                            f"{median(shipped.agent_cpu):.2f} % / {median(shipped.agent_rss):.1f} MiB"))
    want = round(shipped.connections * n)
    if shipped.bursts and flat.bursts:
        done_j, p20_j = _burst_figures(shipped, want)
        done_f, p20_f = _burst_figures(flat, want)
        section.rows += [
            Row("4", f"restart: all {want} connections back after", ms(done_j), f"no jitter: {ms(done_f)}"),
            Row("4", "restart: densest 20 ms of reconnections", f"{p20_j:.0f} of {want}",
                f"no jitter: {p20_f:.0f} of {want}"),
        ]
    method = (f"Method: each group of {n} clients alone against a fresh redis-server for {shipped.seconds:.0f} s; "
              "Redis CPU per client = (Δ INFO used_cpu_user+sys of the target − Δ of an idle redis-server over the "
              "same window) / window / clients; connections per client = (connected_clients − 1) / clients.")
    section.notes.append(method)
    for group in (ping, exec_, shipped, cheap):
        commands = ", ".join(f"{k} {v / group.seconds / group.n:.2f}/s" for k, v in sorted(group.commands.items()))
        section.notes.append(
            f"{group.name}: Redis CPU {group.cpu_per_client * 1e6:.1f} us/s per client (target "
            f"{group.redis_cpu * 1e3:.0f} ms, idle {group.idle_redis_cpu * 1e3:.0f} ms over the window), "
            f"{group.connections:.2f} connections, commands per client: {commands or 'none'}.")
    for size in FLEETS:
        section.notes.append(f"Extrapolation to {size:,} pods: " + "; ".join(
            f"{g.name} {g.connections * size:,.0f} connections and {g.cpu_per_client * size * 100:.1f} % of a core"
            for g in (ping, exec_, shipped, cheap)) + ".")
    if shipped.bursts:
        section.notes.append(f"Restart bursts (Redis killed, {OUTAGE:g} s outage, restarted on the same port; "
                             f"INFO every {SAMPLE * 1000:.0f} ms): with jitter "
                             + "; ".join(_describe(b, want) for b in shipped.bursts)
                             + ". Without jitter " + "; ".join(_describe(b, want) for b in flat.bursts) + ".")


def _burst_figures(group: Group, want: int) -> tuple[float, float]:
    """Median over bursts: time until all connections are back, and the densest 20 ms."""
    return median([b.time_to(want) for b in group.bursts]), median([float(b.peak(SAMPLE)) for b in group.bursts])


def _describe(burst: Burst, want: int) -> str:
    return (f"all {want} back in {ms(burst.time_to(want))}, densest 20 ms {burst.peak(SAMPLE)}, "
            f"{burst.commands} commands and {burst.redis_cpu * 1000:.0f} ms Redis CPU from start to the end of "
            f"sampling, every agent ready {burst.fleet_ready:.2f} s after the restart")


def main() -> None:
    """``python -m bench.fleet [--agents N] [--steady S] [--bursts B]``: this part alone, table and notes."""
    import argparse

    from bench.common import table

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--steady", type=float, default=20.0)
    parser.add_argument("--bursts", type=int, default=2)
    parser.add_argument("--kills", type=int, default=7)
    args = parser.parse_args()
    section = Section("4b. Fleet against one Redis")
    _rows(section, measure(args.agents, args.steady, args.bursts, args.kills))
    print(table(section.rows))
    for note in section.notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
