"""Figure 4b, the fleet: what many agents cost the one Redis they all watch, and the burst when it restarts.

Why: on GKE every pod of a WebSocket backend carries an agent, and they all check the same Redis. What
matters there is not the agent's own cost but the Redis side: connections held, commands/s and Redis CPU per
agent, and what happens when that Redis restarts and every agent notices at the same instant. So this counts
what Redis itself sees (``INFO clients``, ``stats``, ``commandstats``, ``cpu``), not wall time in the agents.

As many agents as this 2-core machine runs without starving (each must still check about once per second,
which is verified from Redis' own PING count) run at their defaults against one real redis-server. Then
Redis is killed, held down for a short outage (< ``backoff_after``), restarted on the same port, and
``INFO`` is sampled every 20 ms on one connection to time the reconnections. The same fleet is run twice:
as shipped (±20 % jitter on every delay) and with ``--jitter 0``, which is
the baseline that shows what jitter buys. ``docs/benchmarks.md`` extrapolates the per-agent figures to
10,000 pods.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from bench.common import (
    AgentProc,
    Mode,
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
from tests.support.redisproc import RedisProcess, RespConnection, parse_info

PODS = 10_000  # the fleet size extrapolated to on paper
SAMPLE = 0.02  # INFO sampling period during a reconnect burst
OUTAGE = 2.0  # < backoff_after: agents retry every retry_interval (±jitter) while Redis is down


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
class Fleet:
    """Steady-state cost per agent and the restart bursts of one fleet."""

    n: int
    jitter: bool
    seconds: float = 0.0
    connections: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)
    redis_cpu: float = 0.0
    idle_redis_cpu: float = 0.0  # an idle redis-server over the same window: Redis' own background cost
    command_usec: int = 0  # Redis-side execution time of the agents' commands (commandstats usec)
    usec_per_call: dict[str, float] = field(default_factory=dict)  # by command, over the steady window
    agent_cpu: list[float] = field(default_factory=list)
    agent_rss: list[float] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)

    @property
    def commands_per_agent(self) -> float:
        return sum(self.commands.values()) / self.seconds / self.n

    @property
    def pings_per_agent(self) -> float:
        return self.commands.get("ping", 0) / self.seconds / self.n

    @property
    def redis_cpu_per_agent(self) -> float:
        """Redis CPU seconds per second per agent, above what an idle redis-server costs."""
        return (self.redis_cpu - self.idle_redis_cpu) / self.seconds / self.n

    @property
    def command_usec_per_agent(self) -> float:
        """Microseconds per second per agent that Redis spends executing the agent's commands."""
        return self.command_usec / self.seconds / self.n


def _info(conn: RespConnection) -> dict[str, str]:
    reply = conn.command("INFO", "clients", "stats", "commandstats", "cpu")
    if not isinstance(reply, str):
        raise RuntimeError(f"INFO failed: {reply}")
    return parse_info(reply)


def _cmdstat(info: dict[str, str], field: str = "calls") -> dict[str, float]:
    """``{command: calls}`` (or ``usec``, ``usec_per_call``) from ``INFO commandstats``."""
    out = {}
    for key, value in info.items():
        if key.startswith("cmdstat_"):
            stats = dict(part.split("=", 1) for part in value.split(","))
            out[key.removeprefix("cmdstat_")] = float(stats[field])
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


def _run_fleet(n: int, jitter: bool, steady: float, bursts: int) -> Fleet:
    fleet = Fleet(n, jitter)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess(["--maxclients", "10000"])).start()
        idle = stack.enter_context(RedisProcess()).start()  # Redis' own background CPU, same window
        jitter_args = [] if jitter else ["--jitter", "0"]
        agents = [stack.enter_context(AgentProc(["--redis-url", redis_url(server.port), *jitter_args]))
                  for _ in range(n)]
        for agent in agents:
            agent.spawn()
        for agent in agents:
            agent.wait_live(timeout=90, period=0.05)
        _all_ready(agents, timeout=30)
        time.sleep(2.0)  # every agent on its steady one-second schedule

        conn = stack.enter_context(server.connect(timeout=2.0))
        idle_conn = stack.enter_context(idle.connect(timeout=2.0))
        before, idle_before = _info(conn), _info(idle_conn)
        cpu0 = {a.pid: cpu_seconds(a.pid) for a in agents}
        t0 = time.monotonic()
        time.sleep(steady)
        after, idle_after = _info(conn), _info(idle_conn)
        fleet.seconds = time.monotonic() - t0
        fleet.idle_redis_cpu = _cpu(idle_after) - _cpu(idle_before)
        fleet.agent_cpu = [(cpu_seconds(a.pid) - cpu0[a.pid]) / fleet.seconds * 100 for a in agents]
        fleet.agent_rss = [memory_mib(a.pid)[0] for a in agents]
        fleet.connections = (int(after["connected_clients"]) - 1) / n
        calls0, calls1 = _cmdstat(before), _cmdstat(after)
        fleet.commands = {k: int(v - calls0.get(k, 0)) for k, v in calls1.items() if v > calls0.get(k, 0)}
        fleet.commands["info"] = fleet.commands.get("info", 0) - 1  # our own INFO between the snapshots
        fleet.redis_cpu = _cpu(after) - _cpu(before)
        usec0, usec1 = _cmdstat(before, "usec"), _cmdstat(after, "usec")
        own_info = _cmdstat(after, "usec_per_call").get("info", 0.0)
        fleet.command_usec = int(sum(v - usec0.get(k, 0) for k, v in usec1.items()) - own_info)
        fleet.usec_per_call = {k: (usec1[k] - usec0.get(k, 0)) / calls for k, calls in fleet.commands.items()
                               if calls > 0 and k in usec1}
        conn.close()

        for _ in range(bursts):
            fleet.bursts.append(_burst(server, agents))
    return fleet


def _burst(server: RedisProcess, agents: list[AgentProc]) -> Burst:
    """Kill Redis, hold it down for OUTAGE, restart it, and sample INFO every SAMPLE s while the fleet returns."""
    burst = Burst()
    want = 2 * len(agents)  # a check connection and a monitor connection each
    server.kill()
    time.sleep(OUTAGE)
    server.start()
    back = time.monotonic()
    with server.connect(timeout=2.0) as conn:
        first = _info(conn)
        last = first
        deadline = back + 5.0
        while time.monotonic() < deadline:
            info = _info(conn)
            last = info
            burst.samples.append((time.monotonic() - back, int(info["connected_clients"]) - 1))
            if burst.samples[-1][1] >= want and time.monotonic() - back > 1.5:
                break
            time.sleep(max(0.0, SAMPLE - 0.002))
        burst.redis_cpu = _cpu(last)
        burst.commands = int(sum(_cmdstat(last).values())) - len(burst.samples) - 1  # minus our own INFOs
    _all_ready(agents, timeout=30)
    burst.fleet_ready = time.monotonic() - back  # every agent's /readyz 200 again (polled every 50 ms)
    return burst


def run(mode: Mode) -> Section:
    """The fleet as shipped, then without jitter; steady cost per agent and the restart bursts of both."""
    section = Section("4b. Fleet against one Redis")
    n = mode.reps(40, 8)
    steady = mode.pick(15.0, 3.0)
    bursts = mode.reps(3, 1)
    fleets: dict[bool, Fleet] = {}
    for jitter in (True, False):
        log(f"fleet: {n} agents {'with' if jitter else 'WITHOUT'} jitter, {steady:g} s steady, {bursts} restarts")
        fleets[jitter] = _run_fleet(n, jitter, steady, bursts)
    _rows(section, fleets[True], fleets[False])
    return section


def _burst_figures(fleet: Fleet) -> tuple[float, float, float]:
    """Median over bursts: time until all connections are back, and the densest 20 ms and 100 ms."""
    done = median([b.time_to(2 * fleet.n) for b in fleet.bursts])
    peak_20 = median([float(b.peak(SAMPLE)) for b in fleet.bursts])
    peak_100 = median([float(b.peak(0.1)) for b in fleet.bursts])
    return done, peak_20, peak_100


def _rows(section: Section, shipped: Fleet, flat: Fleet) -> None:
    n = shipped.n
    want = 2 * n
    done_j, p20_j, p100_j = _burst_figures(shipped)
    done_f, p20_f, p100_f = _burst_figures(flat)
    per_agent_cpu = shipped.redis_cpu_per_agent
    section.rows += [
        Row("4", f"fleet of {n}: Redis connections / commands per agent",
            f"{shipped.connections:.2f} / {shipped.commands_per_agent:.2f} per s",
            f"PING/s per agent {shipped.pings_per_agent:.2f} (not starved: ~1)", "<= 3 /s",
            shipped.commands_per_agent <= 3.0),
        Row("4", f"fleet of {n}: Redis CPU per agent (above idle Redis)", f"{per_agent_cpu * 1000:.3f} ms/s",
            f"x {PODS:,} pods = {per_agent_cpu * PODS * 100:.0f} % of a core"),
        Row("4", f"fleet of {n}: agent CPU / RSS, median",
            f"{median(shipped.agent_cpu):.2f} % / {median(shipped.agent_rss):.1f} MiB"),
        Row("4", f"restart: all {want} connections back after", ms(done_j), f"no jitter: {ms(done_f)}"),
        Row("4", "restart: densest 20 ms / 100 ms of reconnections",
            f"{p20_j:.0f} / {p100_j:.0f} of {want}", f"no jitter: {p20_f:.0f} / {p100_f:.0f} of {want}"),
    ]
    commands = ", ".join(f"{k} {v / shipped.seconds / n:.2f}/s" for k, v in sorted(shipped.commands.items()))
    section.notes += [
        f"Fleet of {n} agents at defaults against one redis-server, steady for {shipped.seconds:.0f} s: per agent "
        f"{commands}; {shipped.connections:.2f} connections; Redis CPU {per_agent_cpu * 1000:.3f} ms per second "
        f"per agent above an idle redis-server measured in the same window ({shipped.idle_redis_cpu * 1000:.0f} ms "
        f"over the window), of which executing the commands themselves (commandstats usec) "
        f"{shipped.command_usec_per_agent / 1000:.3f} ms; Redis time per call: "
        + ", ".join(f"{k} {v:.1f} us" for k, v in sorted(shipped.usec_per_call.items()))
        + f". Agent CPU median {median(shipped.agent_cpu):.2f} % "
        f"(max {max(shipped.agent_cpu):.2f} %).",
        f"Restart bursts (Redis killed, {OUTAGE:g} s outage, restarted on the same port; INFO sampled every "
        f"{SAMPLE * 1000:.0f} ms): with jitter " + "; ".join(_describe(b, want) for b in shipped.bursts)
        + ". Without jitter " + "; ".join(_describe(b, want) for b in flat.bursts) + ".",
        _extrapolation(shipped, p20_j, p20_f),
    ]


def _extrapolation(shipped: Fleet, p20_jitter: float, p20_flat: float) -> str:
    """The per-agent figures times PODS: what a fleet of that size would cost its one Redis."""
    scale = PODS / shipped.n
    cpu = shipped.redis_cpu_per_agent * PODS * 100
    exec_cpu = shipped.command_usec_per_agent * PODS / 1e4
    return (
        f"Extrapolation to {PODS:,} pods: {shipped.connections * PODS:,.0f} connections held (redis-server's "
        f"default maxclients is 10,000), {shipped.commands_per_agent * PODS:,.0f} commands/s, and about {cpu:.0f} % "
        f"of a core of Redis CPU at rest, {exec_cpu:.0f} % of a core executing the commands and the rest in "
        "connection I/O. Redis executes commands on one thread, so that is the budget to compare with. After a "
        f"restart, the densest 20 ms held {p20_jitter * scale:,.0f} reconnections with jitter and "
        f"{p20_flat * scale:,.0f} without (scaled from the {2 * shipped.n} here; the default tcp-backlog is 511)."
    )


def _describe(burst: Burst, want: int) -> str:
    return (f"all {want} back in {ms(burst.time_to(want))}, densest 20 ms {burst.peak(SAMPLE)}, "
            f"{burst.commands} commands and {burst.redis_cpu * 1000:.0f} ms Redis CPU from start to the end of "
            f"sampling, every agent ready {burst.fleet_ready:.2f} s after the restart")
