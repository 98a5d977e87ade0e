"""Shared helpers for the benchmarks: processes that always die, pollers, load generators, statistics, rows.

Why one module: every figure must be measured the same way or comparisons between figures (and between runs)
mean nothing, and this machine is small (2 cores), shared and noisy. So:

* every process the bench starts is killed, even on Ctrl-C, SIGTERM or an exception (:class:`Reaper`, the
  agents' own exit hook, and ``ExitStack`` callbacks for the Redis servers and proxies from ``harness``);
* time is ``time.monotonic()`` in this process; a readiness change is timed the way a prober sees it, by
  polling ``/readyz`` from a thread every few milliseconds (``harness.readyz_sampler``), not from the agent's
  log;
* HTTP load comes from another process (``wrk``, ``hey``) so the load generator never shares a GIL with the
  server it measures;
* a figure is a median over repetitions, and each row carries the baseline measured in the same run.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import http.client
import io
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import redis

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

if str(ROOT) not in sys.path:  # ``harness`` is imported from the repository root
    sys.path.insert(0, str(ROOT))

# The harness serves the bench as it serves the tests: one port picker, one agent wrapper, one wait.
from harness.agent_process import AgentProcess  # noqa: E402
from harness.fault_proxy import ProxyThread  # noqa: E402
from harness.redis_server import free_port  # noqa: E402
from harness.wait import until  # noqa: E402

# ------------------------------------------------------------------------------------------------ run modes


@dataclass(frozen=True, slots=True)
class Mode:
    """Full (the documented run, < 10 min) or quick (a developer's smoke run, < 2 min)."""

    quick: bool = False

    def pick(self, full: float, quick: float) -> float:
        """``full`` or ``quick``, by mode."""
        return quick if self.quick else full

    def reps(self, full: int, quick: int) -> int:
        """A repetition count, by mode."""
        return quick if self.quick else full


# ------------------------------------------------------------------------------------------------ results


@dataclass(slots=True)
class Row:
    """One line of the results table: the agent's figure, its same-run baseline, the target and a mark."""

    figure: str
    metric: str
    value: str
    baseline: str = ""
    target: str = ""
    ok: bool | None = None  # None: reported, no target

    @property
    def mark(self) -> str:
        return {True: "pass", False: "MISS", None: "-"}[self.ok]


@dataclass(slots=True)
class Section:
    """What one benchmark module returns: table rows and free-text notes for docs/benchmarks.md."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def table(rows: Sequence[Row]) -> str:
    """A GitHub-flavoured Markdown table (also readable on a terminal)."""
    head = ("#", "metric", "agent", "baseline (same run)", "target", "result")
    body = [(r.figure, r.metric, r.value, r.baseline, r.target, r.mark) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body]
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress on stderr (stdout is kept for the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ statistics


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values (shown as n/a)."""
    return quantile(values, 0.5)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile ``q`` in [0, 1]; NaN for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def ms(seconds: float) -> str:
    """Seconds as a short millisecond figure."""
    if seconds != seconds:  # NaN
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    """Seconds with two decimals."""
    return "n/a" if seconds != seconds else f"{seconds:.2f} s"


# ------------------------------------------------------------------------------------------------ processes


class Reaper:
    """Every child process the bench spawns directly. ``kill_all`` runs at exit, on SIGTERM and on Ctrl-C.

    Children start in their own session, so a Ctrl-C on the terminal does not reach them (an agent would
    start its 5 s drain); the bench kills them itself, by pid, with SIGKILL.
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def spawn(self, argv: Sequence[str], *, stdout: IO[bytes] | int | None = subprocess.DEVNULL,
              stderr: IO[bytes] | int | None = subprocess.STDOUT,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
                                cwd=ROOT, start_new_session=True)
        with self._lock:
            self._procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            self.kill(proc)


REAPER = Reaper()
atexit.register(REAPER.kill_all)


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception, so every ``finally`` and ``ExitStack`` runs."""


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind the stack like Ctrl-C does, so nothing the bench started survives it.

    SIGINT gets Python's own handler back explicitly: a shell starts background jobs with SIGINT ignored,
    and Python then leaves it ignored, so ``kill -INT`` would not stop a backgrounded bench.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def http_status(port: int, path: str, timeout: float = 1.0) -> int:
    """GET ``path`` on 127.0.0.1:port; the status, or 0 when nothing answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``path`` on 127.0.0.1:port: (status, body); raises OSError when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answered(port: int, path: str, want: int = 200,
             proc: subprocess.Popen[bytes] | None = None) -> Callable[[], float | None]:
    """A probe for ``until``: the monotonic time ``path`` answered ``want`` (None before; RuntimeError once
    ``proc``, the server polled, has exited)."""

    def probe() -> float | None:
        if http_status(port, path, timeout=0.5) == want:
            return time.monotonic()
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {path} answered {want}")
        return None

    return probe


def bench_agent(args: Sequence[str], python_flags: Sequence[str] = ()) -> AgentProcess:
    """The one agent wrapper with the bench's options: a port chosen here (so /livez is polled from the spawn
    instant, for the start-up figure), its own session (a Ctrl-C on the terminal must not start its drain), and
    ``with`` does not start it (the fleet spawns dozens at once, then waits).

    ``spawn()`` then ``wait_live()`` (seconds since spawn), or ``start()``; ``close()`` kills it.
    """
    return AgentProcess(*args, listen=f"127.0.0.1:{free_port()}", python_flags=python_flags, own_session=True,
                        start_on_enter=False)


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def fault_proxy(address: tuple[str, int]) -> Iterator[ProxyThread]:
    """A started ``harness.fault_proxy.ProxyThread`` in front of ``address``.

    On exit it first waits (up to 3 s) for the proxied connections to end, which they do once the clients
    (agents, closed before this because they were entered later) are gone: stopping the proxy with links
    still open makes Python 3.11's asyncio log a CancelledError traceback per link (see docs/benchmarks.md).
    """
    proxy = ProxyThread(address).start()
    try:
        yield proxy
    finally:
        with contextlib.suppress(TimeoutError):  # links still open after 3 s: stop anyway
            until(lambda: proxy.open_connections == 0, 3.0, period=0.02, what="proxied connections to end")
        proxy.stop()


# ------------------------------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process has run, summed over its live threads (children excluded).

    From ``/proc/<pid>/task/*/schedstat`` (nanoseconds), because ``/proc/<pid>/stat`` counts in 10 ms ticks and
    an idle agent uses a few ticks per second; falls back to ``stat`` where schedstat is missing.
    """
    try:
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB: resident now, and the peak resident so far."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def machine() -> dict[str, str]:
    """Date, CPU count and model, Python, git commit: the header of docs/benchmarks.md."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    if dirty:
        commit += " (plus uncommitted changes)"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "python": platform.python_version(),
        "commit": commit,
        "redis": _first_line(["redis-server", "--version"]),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _first_line(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


# ------------------------------------------------------------------------------------------------ Redis side


def redis_client(port: int) -> redis.Redis:
    """A plain synchronous client for reading INFO (RESP2, short timeouts)."""
    return redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=2.0, socket_connect_timeout=2.0)


def command_calls(client: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as ``{command: calls}``."""
    stats: dict[str, Any] = client.info("commandstats")
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}


def calls_delta(before: dict[str, int], after: dict[str, int], own: dict[str, int] | None = None) -> dict[str, int]:
    """Per-command calls between two snapshots, minus the bench's own (``own``)."""
    own = own or {}
    delta = {k: after.get(k, 0) - before.get(k, 0) - own.get(k, 0) for k in after}
    return {k: v for k, v in delta.items() if v > 0}


def redis_cpu(client: redis.Redis) -> float:
    """Redis' own CPU seconds (user + sys, main thread and children)."""
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# ------------------------------------------------------------------------------------------------ pollers


class ExecProbe:
    """The common alternative, simulated: a kubelet ``exec`` probe running ``redis-cli ping``.

    Every ``period`` s it runs ``redis-cli -p PORT ping`` with the probe's ``timeout`` (kubelet kills it and
    counts a failure), and with thresholds of 1 (success and failure) the pod's readiness is the last result.
    Only the exec itself is simulated: the real kubelet adds CRI exec overhead (tens of ms or more), so this
    baseline is, if anything, faster than the real thing.
    """

    def __init__(self, port: int, period: float = 1.0, timeout: float = 1.0) -> None:
        self.port = port
        self.period = period
        self.timeout = timeout
        self.ready: bool | None = None
        self.changes: list[tuple[float, bool]] = []
        self.durations: list[tuple[bool, float]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"exec-probe:{port}", daemon=True)

    def __enter__(self) -> ExecProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _probe(self) -> bool:
        try:
            out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "ping"],
                                 capture_output=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and out.stdout.strip() == b"PONG"

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            ok = self._probe()
            done = time.monotonic()
            with self._cond:
                self.durations.append((ok, done - started))
                if ok != self.ready:
                    self.changes.append((done, ok))
                    self.ready = ok
                    self._cond.notify_all()
            next_at += self.period
            while next_at < time.monotonic():  # a probe that overran its period skips ticks, like kubelet's
                next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def first(self, ready: bool, after: float) -> float | None:
        with self._cond:
            return next((t for t, r in self.changes if t >= after and r == ready), None)

    def wait_for(self, ready: bool, after: float, timeout: float) -> float | None:
        with self._cond:
            return self._cond.wait_for(lambda: self.first(ready, after), timeout)

    def wait_steady(self, ready: bool, timeout: float) -> bool:
        """Block until the probe's current verdict is ``ready``."""
        with self._cond:
            return self._cond.wait_for(lambda: self.ready is ready, timeout)

    def exec_seconds(self, ok: bool) -> list[float]:
        with self._cond:
            return [d for o, d in self.durations if o == ok]


# ------------------------------------------------------------------------------------------------ HTTP load


@dataclass(slots=True)
class Load:
    """One load run: achieved requests/s, per-request latencies (s) when known, status counts."""

    rps: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def p(self, q: float) -> float:
        return quantile(self.latencies, q)


def wrk(url: str, seconds: float, connections: int = 32, threads: int = 1) -> Load:
    """Closed-loop maximum throughput with ``wrk`` (keep-alive), in its own process."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not match:
        raise RuntimeError(f"cannot parse wrk output: {out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    load = Load(float(match.group(1)))
    if bad:
        load.statuses[0] = int(bad.group(1))
    return load


def hey(url: str, seconds: float, workers: int, qps_per_worker: float) -> Load:
    """Rate-limited load with ``hey`` (keep-alive); every request's latency from its CSV output."""
    # -cpus 1: hey's Go runtime on one core leaves the other to the server measured (2 cores here).
    argv = ["hey", "-z", f"{seconds:g}s", "-c", str(workers), "-q", f"{qps_per_worker:g}", "-cpus", "1", "-o", "csv",
            url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    load = Load(0.0)
    rows = csv.DictReader(io.StringIO(out))
    last_offset = 0.0
    for row in rows:
        load.latencies.append(float(row["response-time"]))
        load.statuses[int(row["status-code"])] += 1
        last_offset = max(last_offset, float(row["offset"]))
    load.rps = len(load.latencies) / last_offset if last_offset else 0.0
    return load


# ------------------------------------------------------------------------------------------------ misc


@contextlib.contextmanager
def timed(section: Section) -> Iterator[Section]:
    """Record how long a section took (reported in the doc: the whole bench must stay under 10 min)."""
    started = time.monotonic()
    try:
        yield section
    finally:
        section.seconds = time.monotonic() - started


def write_config(checks: Sequence[tuple[str, int]], directory: str) -> str:
    """A YAML config listing Redis checks ``(name, port)``; returns its path."""
    path = Path(directory) / "checks.yaml"
    lines = ["checks:"]
    for name, port in checks:
        lines.append(f"  - {{name: {name}, type: redis, url: '{redis_url(port)}'}}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)
