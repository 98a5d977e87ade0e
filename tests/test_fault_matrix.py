"""The fault matrix: every fault, injected for real, with /readyz sampled against a ground-truth timeline.

Setup per row: a real redis-server, a fault proxy in front of it, and the real agent process talking to Redis
through that proxy. While the test runs, two independent observers record timelines:

* a **sampler** GETs ``/readyz`` every 20 ms from its own client (status and latency of every answer);
* a **ground truth** runs PING + INFO every 20 ms over its own connection *through the same proxy*, so it
  sees Redis exactly along the agent's path, and records when Redis was really usable.

Each row asserts: no false ready (the agent never *enters* ready unless Redis was usable for the whole
preceding window); not-ready within the detection bound (+1 s) of the fault; ready again within
``window + interval × 1.2 + 1 s`` of real recovery; probes answer fast throughout (p99 < 100 ms, max < 1 s);
the agent survives (alive, /livez 200, no traceback, no task leak) and names the expected reason.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from harness.agent_process import AgentProcess
from harness.fault_proxy import FaultProxy
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import SLOW_LOAD_ARGS, RedisProcess, encode_command, parse_info
from tests.support.fast import timing_of
from tests.support.matrix import RESULTS, MatrixRow

WINDOW, INTERVAL, RETRY, TIMEOUT, THRESHOLD = 0.5, 0.5, 0.1, 0.3, 3
REPLICA_OK = ("--redis-require-master=false",)
AGENT_ARGS = ["--window", str(WINDOW), "--interval", str(INTERVAL), "--retry-interval", str(RETRY),
              "--timeout", str(TIMEOUT), "--failure-threshold", str(THRESHOLD)]
TIMING = timing_of(*AGENT_ARGS)
DETECTION_BOUND = TIMING.detection_bound
READY_BOUND = WINDOW + INTERVAL * (1 + TIMING.jitter) + 1.0


@dataclass
class Truth:
    """One ground-truth observation: the interval it covered and whether Redis was usable in it."""

    start: float
    end: float
    usable: bool
    what: str


@dataclass
class GroundTruth:
    """PING + INFO every ``period`` through the proxy on one persistent connection (reopened after errors)."""

    host: str
    port: int
    password: str | None = None
    period: float = 0.02
    samples: list[Truth] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _probe(self, state: dict[str, asyncio.StreamReader | asyncio.StreamWriter | None]) -> str:
        if state.get("writer") is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            state["reader"], state["writer"] = reader, writer
            if self.password:
                writer.write(encode_command("AUTH", self.password))
                if not (await reader.readline()).startswith(b"+"):
                    return "auth"
        reader, writer = state["reader"], state["writer"]
        assert isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter)
        writer.write(
            encode_command("PING") + encode_command("INFO", "persistence") + encode_command("INFO", "replication")
        )
        pong = await reader.readline()
        if pong != b"+PONG\r\n":
            await _read_rest(reader, pong)
            await _drain_info(reader)
            await _drain_info(reader)
            return pong.decode(errors="replace").strip()[:40] or "eof"
        info = parse_info((await _drain_info(reader)) + (await _drain_info(reader)))
        if info.get("loading") == "1" or info.get("async_loading") == "1":
            return "loading"
        if info.get("role") == "slave" and info.get("master_link_status") != "up":
            return "master_link_down"
        return "ok"

    async def _run(self) -> None:
        state: dict[str, asyncio.StreamReader | asyncio.StreamWriter | None] = {}
        try:
            await self._loop(state)
        finally:
            writer = state.pop("writer", None)
            if isinstance(writer, asyncio.StreamWriter):
                writer.close()

    async def _loop(self, state: dict[str, asyncio.StreamReader | asyncio.StreamWriter | None]) -> None:
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(TIMEOUT):
                    what = await self._probe(state)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                what = type(exc).__name__
            if what != "ok":
                writer = state.pop("writer", None)
                if isinstance(writer, asyncio.StreamWriter):
                    writer.close()
            self.samples.append(Truth(started, time.monotonic(), what == "ok", what))
            await asyncio.sleep(max(0.0, started + self.period - time.monotonic()))

    def start(self) -> GroundTruth:
        self._task = asyncio.create_task(self._run(), name="ground-truth")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def first_usable_after(self, t: float) -> float | None:
        """When Redis was first seen usable (sample start) after ``t``, staying usable from then on."""
        tail = [s for s in self.samples if s.start >= t]
        for i, s in enumerate(tail):
            if s.usable and all(x.usable for x in tail[i:]):
                return s.start
        return None


async def _read_rest(reader: asyncio.StreamReader, first: bytes) -> None:
    """Consume the remainder of a reply whose first line was already read."""
    if first.startswith(b"$") and first[1:2] != b"-":
        await reader.readexactly(int(first[1:]) + 2)
    elif first == b"":
        raise asyncio.IncompleteReadError(b"", None)


async def _drain_info(reader: asyncio.StreamReader) -> str:
    """Read one INFO reply (a bulk string, or an error line)."""
    head = await reader.readline()
    if head.startswith(b"$"):
        return (await reader.readexactly(int(head[1:]) + 2)).decode(errors="replace")
    if head == b"":
        raise asyncio.IncompleteReadError(b"", None)
    return ""


# ------------------------------------------------------------------------------------------------ the rows


@dataclass
class Rig:
    """What a fault row acts on."""

    redis: RedisProcess
    proxy: FaultProxy
    memo: dict[str, object] = field(default_factory=dict)


Step = Callable[[Rig], Awaitable[None]]


def blocking(fn: Callable[[Rig], object]) -> Step:
    """Run a blocking harness recipe in a thread, so the proxy and samplers in this loop keep running."""

    async def step(rig: Rig) -> None:
        await asyncio.to_thread(fn, rig)

    return step


async def _noop(rig: Rig) -> None:
    return None


def _prepare_loading(rig: Rig) -> None:
    rig.redis.cli("DEBUG", "POPULATE", 40_000)
    rig.redis.cli("SAVE")


def _restart_loading(rig: Rig) -> None:
    rig.redis.restart(list(SLOW_LOAD_ARGS), kill=True)


def _orphan(stale: bool) -> Callable[[Rig], None]:
    def make(rig: Rig) -> None:
        rig.redis.become_orphan_replica(serve_stale_data=stale)

    return make


def _promote(rig: Rig) -> None:
    rig.redis.cli("REPLICAOF", "NO", "ONE")


def _busy(rig: Rig) -> None:
    rig.memo["script"] = rig.redis.start_busy_script(threshold_ms=100)


def _unbusy(rig: Rig) -> None:
    rig.redis.end_busy_script(rig.memo["script"])  # type: ignore[arg-type]


def _sleep(rig: Rig) -> None:
    rig.memo["sleeper"] = rig.redis.debug_sleep(3.5)  # > detection bound (1.86 s) with margin


def _wake(rig: Rig) -> None:
    rig.memo["sleeper"].wait(10)  # type: ignore[attr-defined]


async def _exhaust(rig: Rig) -> None:
    await rig.proxy.set_mode("reset")  # drop the agent's and the ground truth's open links...
    await asyncio.to_thread(rig.redis.exhaust_clients, 4)  # ...and take every slot with direct clients
    await rig.proxy.set_mode("pass")  # new connections through the proxy now meet "max clients"


def _password_mismatch(rig: Rig) -> None:
    rig.redis.set_password("rotated-without-telling-anyone")
    rig.redis.cli("CLIENT", "KILL", "TYPE", "normal")
    rig.redis.cli("CLIENT", "KILL", "TYPE", "pubsub")


def _password_fixed(rig: Rig) -> None:
    rig.redis.set_password(None)


def proxy_mode(mode: str) -> Step:
    async def step(rig: Rig) -> None:
        await rig.proxy.set_mode(mode)  # type: ignore[arg-type]

    return step


async def _latency_on(rig: Rig) -> None:
    rig.proxy.set_latency(upstream=0.0, downstream=TIMEOUT * 2)


async def _latency_off(rig: Rig) -> None:
    rig.proxy.set_latency(0.0, 0.0)


async def _flap(rig: Rig) -> None:
    await rig.proxy.flap(100)


@dataclass(frozen=True)
class Fault:
    """One row: how to prepare, inject and recover, the reason the agent must give, how long to hold."""

    name: str
    inject: Step
    recover: Step
    reasons: tuple[str, ...]
    prepare: Step = _noop
    hold: float = 1.0
    slow: bool = False
    agent_args: tuple[str, ...] = ()


FAULTS = [
    Fault("kill -9, restart", blocking(lambda r: r.redis.kill()), blocking(lambda r: r.redis.restart()),
          ("refused",)),
    Fault("SIGSTOP / SIGCONT", blocking(lambda r: r.redis.pause()), blocking(lambda r: r.redis.resume()),
          ("timeout",)),
    Fault("proxy refuse", proxy_mode("refuse"), proxy_mode("pass"), ("refused",)),
    Fault("proxy blackhole", proxy_mode("blackhole"), proxy_mode("pass"), ("timeout",)),
    Fault("proxy reset (RST)", proxy_mode("reset"), proxy_mode("pass"), ("refused",)),
    Fault("latency 2x timeout", _latency_on, _latency_off, ("timeout",)),
    Fault("flap every 100 ms", _flap, proxy_mode("pass"), ("refused", "timeout"), hold=3.0, slow=True),
    Fault("LOADING restart", blocking(_restart_loading), blocking(lambda r: r.redis.wait_loaded()),
          ("refused", "loading"), prepare=blocking(_prepare_loading), hold=0.0, slow=True),
    # A replica on purpose (the master is not required), so its own faults are what is judged.
    Fault("replica, master gone", blocking(_orphan(True)), blocking(_promote), ("master_link_down", "loading"),
          slow=True, agent_args=REPLICA_OK),
    Fault("MASTERDOWN (stale data off)", blocking(_orphan(False)), blocking(_promote), ("master_link_down",),
          slow=True, agent_args=REPLICA_OK),
    Fault("BUSY script", blocking(_busy), blocking(_unbusy), ("busy",)),
    Fault("DEBUG SLEEP", blocking(_sleep), blocking(_wake), ("timeout",), hold=0.0, slow=True),
    Fault("MISCONF", blocking(lambda r: r.redis.break_persistence()),
          blocking(lambda r: r.redis.repair_persistence()), ("readonly",)),
    # maxclients when the new connection reads Redis's -ERR before the close; refused when the proxy's reset
    # of the old links is what the check sees first, or an RST discards the unread reply.
    Fault("maxclients reached", _exhaust, blocking(lambda r: r.redis.release_clients()), ("maxclients", "refused"),
          slow=True),
    Fault("requirepass mismatch", blocking(_password_mismatch), blocking(_password_fixed), ("auth",)),
]


async def _settled_task_count(agent: AgentProcess, reads: int = 5) -> int:
    """The agent's asyncio task count with nothing in flight: the least of a few ``/status`` reads.

    Each read counts the tasks of whatever request is being served at that instant too (the sampler polls
    every 20 ms, and a request it sent meanwhile is a task of its own), so one read can be one high; a leaked
    task is in every read.
    """
    counts = []
    for _ in range(reads):
        counts.append(json.loads((await asyncio.to_thread(agent.get, "/status"))[1])["runtime"]["asyncio_tasks"])
        await asyncio.sleep(0.02)
    return min(counts)


def _params() -> list[object]:
    return [pytest.param(f, id=f.name.replace(" ", "_"), marks=[pytest.mark.slow] if f.slow else [])
            for f in FAULTS]


@pytest.mark.parametrize("fault", _params())
async def test_fault_row(fault: Fault) -> None:
    """The agent turns not-ready in time, never falsely ready, answers probes fast, and survives."""
    redis = RedisProcess()
    redis.start()
    proxy = FaultProxy(redis.address)
    await proxy.start()
    rig = Rig(redis, proxy)
    agent = AgentProcess("--redis-url", proxy.url(), "--log-format", "json", *AGENT_ARGS, *fault.agent_args)
    truth = GroundTruth("127.0.0.1", proxy.port)
    sampler: ReadyzSampler | None = None
    try:
        await asyncio.to_thread(agent.start)
        truth.start()
        sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
        await sampler.expect(200, after=0, timeout=10)
        await fault.prepare(rig)
        tasks_before = await _settled_task_count(agent)

        fault_at = time.monotonic()
        await fault.inject(rig)
        injected = time.monotonic()
        budget = (injected - fault_at) + DETECTION_BOUND * 2 + 1
        not_ready_at = await sampler.expect(503, after=fault_at, timeout=budget)
        status = json.loads((await asyncio.to_thread(agent.get, "/status"))[1])
        reason = status["checks"]["redis"]["last_failure_reason"]
        await asyncio.sleep(fault.hold)  # keep the fault on: the verdict must stay not-ready meanwhile

        recover_at = time.monotonic()
        await fault.recover(rig)
        ready_at = await sampler.expect(200, after=recover_at, timeout=30)
        await asyncio.sleep(0.3)  # a few more samples of the healthy state for the timelines
    finally:
        # Read the agent's own view while the sampler's keep-alive connection (a server task) is still open,
        # as it was for the "before" count.
        alive = agent.proc is not None and agent.proc.poll() is None
        livez = await asyncio.to_thread(agent.get_status, "/livez") if alive else 0
        tasks_after = await _settled_task_count(agent) if alive else -1
        if sampler is not None:
            sampler.stop()
        await truth.stop()
        output = agent.output()
        records = agent.records()
        agent.close()
        await proxy.stop()
        await asyncio.to_thread(redis.close)

    usable_at = truth.first_usable_after(recover_at)
    assert usable_at is not None, "Redis never became usable again: the recovery recipe is broken"
    samples = sampler.samples
    latencies = sorted(s.latency for s in samples)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    RESULTS.append(MatrixRow(
        fault.name, not_ready_at - fault_at, ready_at - usable_at, len(samples),
        statistics.median(latencies) * 1000, p99 * 1000, reason or "-",
    ))

    # The process survived, with no task leak and nothing unhandled.
    assert alive and livez == 200, output
    # Nothing unhandled: no traceback, no ERROR record, no event-loop error (asserted as records, not wording).
    bad = [r for r in records if r.get("severity") in ("ERROR", "CRITICAL")
           or r.get("logging.googleapis.com/labels", {}).get("event") == "loop_error"]
    assert "Traceback" not in output and not bad, output
    assert tasks_after == tasks_before
    # Probes never hang, whatever Redis does.
    assert all(s.status in (200, 503) for s in samples), [s for s in samples if s.status not in (200, 503)]
    assert p99 < 0.1 and latencies[-1] < 1.0, (p99, latencies[-1])
    # The verdict arrives, with the right reason.
    assert not_ready_at - fault_at <= (injected - fault_at) + DETECTION_BOUND + 1.0
    assert reason in fault.reasons, (reason, output)
    assert ready_at - usable_at <= READY_BOUND, (ready_at - usable_at, output)
    # While the fault was on (after the verdict turned), /readyz never said 200.
    assert not [s for s in samples if not_ready_at <= s.at < recover_at and s.status == 200]
    # No false ready: every 503 -> 200 transition is preceded by a whole window of real usability.
    for prev, cur in itertools.pairwise(samples):
        if prev.status == 503 and cur.status == 200:
            answered = cur.at + cur.latency
            bad = [t for t in truth.samples if not t.usable and t.start >= answered - WINDOW and t.end <= prev.at]
            assert not bad, (f"entered ready at ~{answered:.3f} but Redis was unusable inside the window", bad)
