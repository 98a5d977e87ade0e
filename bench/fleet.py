"""Figure 4b, the fleet: what many agents cost the one Redis they all watch, against two same-run baselines.

Why: on GKE every pod of a WebSocket backend carries an agent, and they all check the same Redis. What
matters there is the Redis side: connections held and Redis CPU per pod, and what happens when that Redis
restarts and every agent notices at once. So this counts what Redis itself reports, never wall time.

**The method** (one, for every figure): six groups of ``n`` clients run *at the same time*, each against its
own redis-server, beside one idle redis-server:

* **ping/s C** (the reference the defaults are judged against): ``n`` processes of bench/ping_client.c, each a
  kept connection sending one ``PING`` per second on a fixed one-second grid: the bytes and system calls of
  ``redis-cli ping``, from a minimal C process;
* **ping/s** (baseline): ``n`` processes of ``redis-cli -r -1 -i 1 ping``, the same PING, but each sleeps one
  second *after its reply*; clients served in one wake-up of Redis then come back together, so the group clumps
  and Redis serves it in fewer wake-ups: the same bytes on a grid cost Redis 1.4–1.8 × as much
  (bench/reference.py). No probe or agent keeps that lock-step (the agent's jitter exists to avoid it);
* **ping/s asyncio** (baseline): the same PING from ``n`` minimal asyncio Python processes on the agent's
  schedule (bench/ping_client.py): what one PING per second costs from the agent's own runtime;
* **exec probe** (baseline): ``redis-cli ping`` every 10 s per pod, the kubelet exec probe at Kubernetes
  defaults (a new connection per probe; spawned from here, without CRI exec overhead);
* **defaults**: ``n`` agents as shipped;
* **low-cost**: ``n`` agents with the large-fleet profile (``LOW_COST``; docs/design.md).

Over each of ``windows`` steady windows, Redis CPU per client is ``(Δ used_cpu_user+used_cpu_sys of the
group's server − Δ of the idle server) / window / n`` (``INFO cpu`` at both ends, all servers read back to
back), and connections per client are ``(connected_clients − 1) / n``. The redis-servers are pinned to the
first CPU and every client to the others (``taskset``): on this 2-CPU machine a client's own work would
otherwise evict the caches of the Redis it talks to (production runs them apart).
Running the groups side by side puts them under the same machine load (this machine is shared), and each
ratio is taken within one window; the figure is the median over windows. Then, for the defaults, Redis is
killed, held down for a short outage (< ``backoff_after``), restarted on the same port, and ``INFO`` is
sampled every 20 ms to time the reconnections; the same with ``--jitter 0`` shows what jitter buys. Kill →
503 is timed for one agent of each profile. The per-client figures are extrapolated to 1,000 and 10,000 pods.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench.common import (
    PYTHON,
    REAPER,
    ROOT,
    Mode,
    Row,
    Section,
    bench_agent,
    cpu_seconds,
    http_status,
    log,
    median,
    memory_mib,
    ms,
    redis_url,
)
from harness.agent_process import AgentProcess
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import RedisProcess, RespConnection, command_calls, parse_info
from harness.wait import until

FLEETS = (1_000, 10_000)  # the fleet sizes extrapolated to on paper
SAMPLE = 0.02  # INFO sampling period during a reconnect burst
OUTAGE = 2.0  # < backoff_after: agents retry every retry_interval (±jitter) while Redis is down
LOW_COST = ("--interval", "10s")  # the large-fleet profile (docs/design.md, "Large fleets")
EXEC_PERIOD = 10.0  # the kubelet's default periodSeconds
# Below this much Redis CPU above the idle server (summed over the windows) a group's cost is noise, not a figure:
# two groups sending the same PINGs differ by up to ~1 ms a window (ping/s C and ping/s asyncio in
# docs/benchmarks.md), which 10 ms keeps under a tenth. The full run's smallest group (low-cost, 40 agents,
# 3 x 15 s) shows ~18 ms; a quick run (8 clients, one 5 s window) ~3 ms at most, and a negative one now and then.
MIN_SIGNAL = 0.010
TOO_SHORT = "too short to measure"
# Redis servers on the first CPU, every client on the others (as in production, where they run on other
# machines): a client's own work must not evict the caches of the Redis it is measured against.
_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS, CLIENT_CPUS = str(_CPUS[0]), ",".join(map(str, _CPUS[1:] or _CPUS))


def pin(pid: int, cpus: str) -> None:
    """Move a process and all its threads onto ``cpus`` (``taskset -apc``)."""
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset not found")
    subprocess.run([taskset, "-apc", cpus, str(pid)], capture_output=True, check=True)


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
class Window:
    """One steady window of one group, as its Redis reported it."""

    seconds: float
    redis_cpu: float
    idle_redis_cpu: float
    connections: int
    commands: dict[str, int]
    opened: int = 0  # connections the server accepted in the window (INFO total_connections_received)


@dataclass
class Group:
    """One group of ``n`` clients measured by the method above."""

    name: str
    n: int
    windows: list[Window] = field(default_factory=list)
    agent_cpu: list[float] = field(default_factory=list)
    agent_rss: list[float] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    kill_to_503: list[float] = field(default_factory=list)  # one agent of this profile, Redis SIGKILLed

    def cpu(self, w: Window) -> float:
        """Redis CPU seconds per second per client in one window, above what an idle redis-server costs."""
        return (w.redis_cpu - w.idle_redis_cpu) / w.seconds / self.n

    @property
    def cpu_per_client(self) -> float:
        return median([self.cpu(w) for w in self.windows])

    @property
    def connections(self) -> float:
        return median([w.connections / self.n for w in self.windows])

    @property
    def seconds(self) -> float:
        return sum(w.seconds for w in self.windows)

    @property
    def opened_per_minute(self) -> float:
        """Connections opened per client per minute, over every window."""
        return sum(w.opened for w in self.windows) / self.seconds * 60 / self.n

    @property
    def commands(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for w in self.windows:
            for k, v in w.commands.items():
                total[k] = total.get(k, 0) + v
        return total

    @property
    def measurable(self) -> bool:
        """Its Redis spent more than the idle one in every window, and ``MIN_SIGNAL`` more in all."""
        above = [w.redis_cpu - w.idle_redis_cpu for w in self.windows]
        return bool(above) and min(above) > 0 and sum(above) >= MIN_SIGNAL

    def ratio(self, base: Group) -> list[float]:
        """Per window: this group's Redis CPU per client over the baseline's, in the same window; none unless
        both are measurable."""
        if not (self.measurable and base.measurable):
            return []
        return [self.cpu(w) / base.cpu(b) for w, b in zip(self.windows, base.windows, strict=True)]

    def cost(self) -> str:
        """Redis CPU per client (us/s) and connections per client, as the table shows them."""
        cpu = f"{self.cpu_per_client * 1e6:.1f} us/s" if self.measurable else TOO_SHORT
        return f"{cpu} / {self.connections:.2f}"


def _info(conn: RespConnection) -> dict[str, str]:
    reply = conn.command("INFO", "clients", "stats", "commandstats", "cpu")
    if not isinstance(reply, str):
        raise RuntimeError(f"INFO failed: {reply}")
    return parse_info(reply)


def _cpu(info: dict[str, str]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def all_ready(agents: list[AgentProcess], timeout: float) -> float:
    started = time.monotonic()
    pending = list(agents)

    def check() -> bool:
        pending[:] = [a for a in pending if http_status(a.port, "/readyz", timeout=0.5) != 200]
        return not pending

    until(check, timeout, lambda: f"all {len(agents)} agents ready ({len(pending)} still not)", period=0.05)
    return time.monotonic() - started


@contextlib.contextmanager
def clients(server: RedisProcess, n: int, argv: list[str]) -> Iterator[None]:
    """``n`` processes of ``argv`` (``{port}`` replaced by the server's port), each one kept connection, pinned to
    the client CPUs and started ``1/n`` s apart (phases spread over the second).

    Separate processes, as pods are: one client loop serving all ``n`` connections would bunch PINGs into
    shared wake-ups of Redis whenever that loop runs late, which makes the baseline look cheaper than it is.
    """
    procs = []
    try:
        for _ in range(n):
            procs.append(REAPER.spawn([a.replace("{port}", str(server.port)) for a in argv]))
            pin(procs[-1].pid, CLIENT_CPUS)
            time.sleep(1.0 / n)
        yield
    finally:
        for proc in procs:
            REAPER.kill(proc)


def build_c_client(directory: str) -> str:
    """Compile bench/ping_client.c with ``cc -O2`` into ``directory``; the executable's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) on PATH: apt-get install gcc")
    out = os.path.join(directory, "ping_client")
    subprocess.run([cc, "-O2", "-o", out, str(ROOT / "bench" / "ping_client.c")], check=True)
    return out


def redis_cli_pings() -> list[str]:
    """``redis-cli -r -1 -i 1 ping``: one PING per second, sleeping a second after each reply."""
    return [_redis_cli(), "-h", "127.0.0.1", "-p", "{port}", "-r", "-1", "-i", "1", "ping"]


def asyncio_pings(schedule: str = "agent") -> list[str]:
    """bench/ping_client.py: one PING per second from the agent's runtime (and, by default, its schedule)."""
    return [PYTHON, "-m", "bench.ping_client", "{port}", "--schedule", schedule]


def _redis_cli() -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli not found")
    return cli


@contextlib.contextmanager
def _exec_probes(server: RedisProcess, n: int) -> Iterator[None]:
    """``redis-cli ping`` every EXEC_PERIOD s per pod: n/EXEC_PERIOD spawns per second, evenly spaced."""
    cli = _redis_cli()
    taskset = shutil.which("taskset") or "taskset"
    stop = threading.Event()

    def run() -> None:
        gap = EXEC_PERIOD / n
        next_at = time.monotonic()
        while not stop.is_set():
            subprocess.run([taskset, "-c", CLIENT_CPUS, cli, "-h", server.host, "-p", str(server.port), "ping"],
                           capture_output=True, timeout=5, check=False)
            next_at += gap
            stop.wait(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def start_fleet(stack: contextlib.ExitStack, server: RedisProcess, n: int, args: tuple[str, ...],
                url: str | None = None) -> list[AgentProcess]:
    """``n`` agents on ``server`` (``url``: another URL of it, e.g. its TLS port), spawned without waiting."""
    url = url or redis_url(server.port)
    agents = [stack.enter_context(bench_agent(["--redis-url", url, *args])) for _ in range(n)]
    for agent in agents:
        agent.spawn()
    return agents


def measure_windows(groups: dict[str, Group], servers: dict[str, RedisProcess], idle: RedisProcess,
                    steady: float, count: int) -> None:
    """The method: ``count`` windows; every server's INFO read back to back at both ends of each."""
    conns = {name: server.connect(timeout=2.0) for name, server in servers.items()}
    idle_conn = idle.connect(timeout=2.0)
    try:
        for _ in range(count):
            before = {name: _info(c) for name, c in conns.items()}
            idle_before, t0 = _info(idle_conn), time.monotonic()
            time.sleep(steady)
            after = {name: _info(c) for name, c in conns.items()}
            idle_after, seconds = _info(idle_conn), time.monotonic() - t0
            idle_cpu = _cpu(idle_after) - _cpu(idle_before)
            for name, group in groups.items():
                calls0, calls1 = command_calls(before[name]), command_calls(after[name])
                commands = {k: int(v - calls0.get(k, 0)) for k, v in calls1.items()}
                commands["info"] = commands.get("info", 0) - 1  # our own INFO between the snapshots
                accepted = "total_connections_received"
                opened = int(after[name][accepted]) - int(before[name][accepted])
                group.windows.append(Window(
                    seconds, _cpu(after[name]) - _cpu(before[name]), idle_cpu,
                    int(after[name]["connected_clients"]) - 1, {k: v for k, v in commands.items() if v > 0}, opened))
    finally:
        for conn in [*conns.values(), idle_conn]:
            conn.close()


EXEC_PROBE = "exec probe"  # a group of kubelet exec probes (``_exec_probes``), in ``side_by_side``'s groups
GroupSpec = list[str] | tuple[str, ...] | str  # PING client argv | agent arguments | EXEC_PROBE


@dataclass
class Rig:
    """Groups running side by side, each on its own redis-server, beside an idle one."""

    servers: dict[str, RedisProcess]
    idle: RedisProcess
    fleets: dict[str, list[AgentProcess]]  # the agent groups' processes, by group


def side_by_side(stack: contextlib.ExitStack, n: int, specs: dict[str, GroupSpec]) -> Rig:
    """Start ``n`` clients per group on its own pinned redis-server, in order, and return once every agent is
    ready and pinned and every client has been on its steady schedule for 2 s (the method's set-up).

    A ``list`` is a PING client's argv (``clients``), a ``tuple`` the arguments of an agent group, ``EXEC_PROBE``
    the kubelet exec probe.
    """
    servers = {name: stack.enter_context(RedisProcess(["--maxclients", "10000"])).start() for name in specs}
    idle = stack.enter_context(RedisProcess()).start()
    for server in [*servers.values(), idle]:
        pin(server.pid, SERVER_CPUS)
    fleets: dict[str, list[AgentProcess]] = {}
    for name, spec in specs.items():
        if isinstance(spec, list):
            stack.enter_context(clients(servers[name], n, spec))
        elif isinstance(spec, tuple):
            fleets[name] = start_fleet(stack, servers[name], n, spec)
        else:
            stack.enter_context(_exec_probes(servers[name], n))
    settle([a for fleet in fleets.values() for a in fleet])
    return Rig(servers, idle, fleets)


def settle(agents: list[AgentProcess]) -> None:
    """Wait until every agent is live and ready, pin them to the client CPUs, and give every client 2 s to be on
    its steady schedule."""
    for agent in agents:
        agent.wait_live(timeout=120, period=0.05)
    all_ready(agents, timeout=90)
    for agent in agents:
        pin(agent.pid, CLIENT_CPUS)
    time.sleep(2.0)


def _concurrent(n: int, steady: float, windows: int, bursts: int) -> dict[str, Group]:
    """The six groups side by side; then the defaults fleet's restart bursts."""
    with contextlib.ExitStack() as stack:
        c_client = build_c_client(stack.enter_context(tempfile.TemporaryDirectory()))
        rig = side_by_side(stack, n, {
            "ping/s": redis_cli_pings(),
            "ping/s C": [c_client, "{port}", "grid"],
            "ping/s asyncio": asyncio_pings(),
            "exec probe": EXEC_PROBE,
            "defaults": (),
            "low-cost": LOW_COST,
        })
        groups = {name: Group(name, n) for name in rig.servers}
        shipped, fleet = groups["defaults"], rig.fleets["defaults"]
        cpu0 = {a.pid: cpu_seconds(a.pid) for a in fleet}
        t0 = time.monotonic()
        measure_windows(groups, rig.servers, rig.idle, steady, windows)
        elapsed = time.monotonic() - t0
        shipped.agent_cpu = [(cpu_seconds(a.pid) - cpu0[a.pid]) / elapsed * 100 for a in fleet]
        shipped.agent_rss = [memory_mib(a.pid)[0] for a in fleet]
        want = round(shipped.connections * n)
        for _ in range(bursts):
            shipped.bursts.append(_burst(rig.servers["defaults"], fleet, want))
    return groups


def _no_jitter_bursts(n: int, bursts: int, want: int) -> Group:
    group = Group("defaults, no jitter", n)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess(["--maxclients", "10000"])).start()
        agents = start_fleet(stack, server, n, ("--jitter", "0"))
        for agent in agents:
            agent.wait_live(timeout=120, period=0.05)
        all_ready(agents, timeout=90)
        time.sleep(2.0)
        for _ in range(bursts):
            group.bursts.append(_burst(server, agents, want))
    return group


def _burst(server: RedisProcess, agents: list[AgentProcess], want: int) -> Burst:
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
        burst.commands = sum(command_calls(last).values()) - len(burst.samples) - 1  # minus our own INFOs
    all_ready(agents, timeout=30)
    burst.fleet_ready = time.monotonic() - back  # every agent's /readyz 200 again (polled every 50 ms)
    return burst


def _kills(args: tuple[str, ...], reps: int, rng: random.Random) -> list[float]:
    """kill → /readyz 503 for one agent of the profile: SIGKILL Redis at a random phase, time the 503."""
    out = []
    with RedisProcess() as server, bench_agent(["--redis-url", redis_url(server.start().port), *args]) as agent:
        agent.start()
        with ReadyzSampler(agent.port) as watcher:
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


def measure(n: int, steady: float, windows: int, bursts: int, kills: int) -> dict[str, Group]:
    """Every figure by the one method: the groups side by side, bursts, kill -> 503 per profile."""
    log(f"fleet: the six groups side by side, {n} clients each, {windows} x {steady:g} s")
    groups = _concurrent(n, steady, windows, bursts)
    want = round(groups["defaults"].connections * n)
    log(f"fleet: {n} agents without jitter, {bursts} restarts")
    groups["defaults, no jitter"] = _no_jitter_bursts(n, bursts, want)
    rng = random.Random(9)
    for name, args in (("defaults", ()), ("low-cost", LOW_COST)):
        log(f"fleet: {kills} kills of Redis under one agent, {name}")
        groups[name].kill_to_503 = _kills(args, kills, rng)
    return groups


def run(mode: Mode) -> Section:
    """Both baselines, the defaults and the low-cost profile by one method; restart bursts of the defaults."""
    section = Section("4b. Fleet against one Redis")
    groups = measure(mode.reps(40, 8), mode.pick(15.0, 5.0), mode.reps(3, 1), mode.reps(2, 1), mode.reps(7, 2))
    _rows(section, groups)
    from bench import fresh  # imports this module

    costs = fresh.run(mode)  # what proving a new client's view adds, plain and TLS
    section.rows += costs.rows
    section.notes += costs.notes
    return section


def _ratio(group: Group, base: Group, label: str) -> str:
    """Median of the per-window ratios and their range, or ``too short to measure``."""
    ratios = group.ratio(base)
    if not ratios:
        return f"vs {label}: {TOO_SHORT}"
    return f"{median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) x {label}"


def _within(group: Group, base: Group, limit: float) -> bool | None:
    """The median ratio is at most ``limit``; None (no mark) when either side is too short to measure."""
    ratios = group.ratio(base)
    return median(ratios) <= limit if ratios else None


def _rows(section: Section, groups: dict[str, Group]) -> None:
    ping, c_ping, py_ping, exec_, shipped, cheap, flat = (groups[k] for k in (
        "ping/s", "ping/s C", "ping/s asyncio", "exec probe", "defaults", "low-cost", "defaults, no jitter"))
    n = shipped.n
    cpu_ok = _within(shipped, c_ping, 1.3)
    for group, target, ok in (
        (shipped, "<= 1.3 x ping/s C, 1 conn", None if cpu_ok is None else cpu_ok and shipped.connections <= 1.05),
        (cheap, "<= 1.0 x exec probe", _within(cheap, exec_, 1.0)),
    ):
        section.rows.append(Row(
            "4", f"fleet of {n}, {group.name}: Redis CPU / connections per agent", group.cost(),
            f"{_ratio(group, c_ping, 'ping/s C')}, {_ratio(group, ping, 'ping/s (redis-cli)')}, "
            f"{_ratio(group, py_ping, 'ping/s asyncio')}, {_ratio(group, exec_, 'exec probe')}", target, ok))
        if group.kill_to_503:
            kill = median(group.kill_to_503)
            section.rows.append(Row("4", f"{group.name}: kill -> /readyz 503, median of {len(group.kill_to_503)}",
                                    ms(kill), f"max {ms(max(group.kill_to_503))}", "<= 250 ms", kill <= 0.25))
    for base in (c_ping, ping, py_ping, exec_):
        section.rows.append(Row("4", f"fleet of {n}, baseline {base.name}: Redis CPU / connections per client",
                                base.cost()))
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
    section.notes.append(
        f"Method: the six groups of {n} clients side by side, each against its own redis-server, beside an idle "
        f"one; {len(shipped.windows)} windows of {shipped.seconds / max(1, len(shipped.windows)):.0f} s; servers "
        f"pinned to CPU {SERVER_CPUS}, clients to CPU {CLIENT_CPUS} (taskset). Redis CPU "
        "per client = (Δ INFO used_cpu_user+sys of the group's server − Δ of the idle server) / window / clients, "
        "median over windows; ratios are taken within each window (median, and range over windows); connections "
        "per client = (connected_clients − 1) / clients.")
    for group in (c_ping, ping, py_ping, exec_, shipped, cheap):
        commands = ", ".join(f"{k} {v / group.seconds / group.n:.2f}/s" for k, v in sorted(group.commands.items()))
        per_window = ", ".join(f"{group.cpu(w) * 1e6:.1f}" for w in group.windows)
        section.notes.append(
            f"{group.name}: Redis CPU per client {per_window} us/s by window (idle server "
            + ", ".join(f"{w.idle_redis_cpu * 1e3:.0f}" for w in group.windows)
            + f" ms per window), {group.connections:.2f} connections, commands per client: {commands or 'none'}.")
    for size in FLEETS:
        section.notes.append(f"Extrapolation to {size:,} pods: " + "; ".join(
            f"{g.name} {g.connections * size:,.0f} connections and "
            + (f"{g.cpu_per_client * size * 100:.1f} % of a core" if g.measurable else f"CPU {TOO_SHORT}")
            for g in (c_ping, ping, py_ping, exec_, shipped, cheap)) + ".")
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


def standalone(description: str, options: dict[str, float], build: Callable[[argparse.Namespace], Section]) -> None:
    """Run one part alone: ``--<option>`` flags (typed as their defaults), then its table and notes on stdout."""
    from bench.common import install_signal_handlers, table

    install_signal_handlers()
    parser = argparse.ArgumentParser(description=description)
    for name, default in options.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    section = build(parser.parse_args())
    print(table(section.rows))
    for note in section.notes:
        print(f"- {note}")


def main() -> None:
    """``python -m bench.fleet [--agents N] [--steady S] [--windows W] [--bursts B] [--kills K]``: this part alone."""
    def build(args: argparse.Namespace) -> Section:
        section = Section("4b. Fleet against one Redis")
        _rows(section, measure(args.agents, args.steady, args.windows, args.bursts, args.kills))
        return section

    standalone(main.__doc__ or "", {"agents": 40, "steady": 15.0, "windows": 3, "bursts": 2, "kills": 7}, build)


if __name__ == "__main__":
    main()
