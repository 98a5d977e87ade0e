"""Figure 2, probe endpoints: ``/readyz`` and ``/metrics`` throughput and tail latency under load.

Why: probes come from kubelet, load balancers and Prometheus, sometimes many at once, and a probe that is
slow or times out takes a healthy pod out of rotation. The design says probe handlers only read cached state,
so ``/readyz`` should cost what a constant response costs, whatever Redis is doing. The baseline is exactly
that: a bare aiohttp server answering a constant 200 (``bench.bare_server``), on the same machine, in the same
run, measured alternately with the agent (A/B, several rounds, median of the per-round ratios), because this
machine's throughput drifts by tens of percent from minute to minute.

Load comes from other processes: ``wrk`` (closed loop, keep-alive, one thread) for maximum requests/s, and
``hey`` (open loop, rate-limited, keep-alive, four workers) for latency at a fixed 1,000 requests/s with every
request's latency from its CSV output. The agent's Redis sits behind a fault proxy, so the same agent is
measured healthy, with Redis killed, and with Redis blackholed.
"""

from __future__ import annotations

import contextlib
import time

from bench.common import (
    PYTHON,
    REAPER,
    Load,
    Mode,
    Row,
    Section,
    answered,
    bench_agent,
    fault_proxy,
    free_port,
    hey,
    log,
    median,
    ms,
    redis_url,
    wrk,
)
from harness.redis_server import RedisProcess
from harness.wait import until

HEY_WORKERS = 2  # two probers at 500 req/s each: 1,000 req/s; more workers mostly measure hey's own bursts
HEY_RATE = 1000 / HEY_WORKERS


def handler_cost(calls: int = 2000) -> dict[str, float]:
    """Microseconds of CPU per call of the agent's /readyz, /livez and /metrics handlers, and of a constant one.

    In-process, on aiohttp's mocked requests, against a real ``Agent`` whose one check is ready: the noise-free
    part of the throughput comparison (the load test above also pays for sockets, parsing and scheduling,
    and this machine's neighbours). Uses the agent's own API (settings, Agent, record, make_app): if that
    changes, this returns {} and the table says n/a.
    """
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from prometheus_client import CollectorRegistry

    from agent.commands import build_agent
    from agent.config.loader import load_settings
    from agent.config.settings import Platform
    from agent.core.model import CheckResult
    from agent.server import app as server
    from agent.server.metrics import Metrics

    async def constant(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def measure() -> dict[str, float]:
        settings = load_settings({"redis_url": "redis://127.0.0.1:1/0", "platform": "local"}, {},
                                 lambda _env: (Platform.LOCAL, "bench"))
        now = [0.0]
        registry = CollectorRegistry()
        agent = build_agent(settings, clock=lambda: now[0])
        agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, settings.window))
        app = server.make_app(agent, registry)
        for t in (0.0, settings.timing.window / 2, settings.timing.window):  # through the window: ready
            now[0] = t
            agent.record("redis", CheckResult(True, 0.001))
        if not agent.snapshot.ready:
            return {}
        out: dict[str, list[float]] = {"constant": [], "readyz": [], "livez": [], "metrics": []}
        handlers = {"constant": (constant, "/readyz"), "readyz": (server.readyz, "/readyz"),
                    "livez": (server.livez, "/livez"), "metrics": (server.metrics, "/metrics")}
        for _ in range(3):  # alternate, keep the median
            for name, (handler, path) in handlers.items():
                n = calls if name != "metrics" else max(10, calls // 20)
                template = make_mocked_request("GET", path, app=app)  # slow (mocks): clone it instead
                requests = [template.clone() for _ in range(n)]
                started = time.perf_counter()
                for request in requests:
                    await handler(request)
                out[name].append((time.perf_counter() - started) / n * 1e6)
        return {name: median(values) for name, values in out.items()}

    try:
        return asyncio.run(measure())
    except Exception as exc:  # the agent's internals moved: report n/a rather than fail the run
        log(f"probes: handler microbenchmark skipped ({type(exc).__name__}: {exc})")
        return {}


def _bare_server(stack: contextlib.ExitStack) -> int:
    port = free_port()
    proc = REAPER.spawn([PYTHON, "-m", "bench.bare_server", "--port", str(port)])
    stack.callback(REAPER.kill, proc)
    until(answered(port, "/readyz", 200, proc), 15, period=0.002, what="/readyz 200")
    return port


def _p99_ms(loads: list[Load]) -> str:
    return ", ".join(ms(x.p(0.99)) for x in loads)


def run(mode: Mode) -> Section:
    """Throughput A/B against the bare server, then p99 at 1,000 req/s healthy, down and blackholed."""
    section = Section("2. Probe endpoints")
    rounds = mode.reps(5, 2)
    wrk_seconds = mode.pick(2.0, 1.0)
    hey_rounds = mode.reps(3, 1)
    hey_seconds = mode.pick(3.0, 1.5)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisProcess()).start()
        proxy = stack.enter_context(fault_proxy(server.address))
        agent = stack.enter_context(bench_agent(["--redis-url", redis_url(proxy.port)]).start())
        bare = _bare_server(stack)
        until(answered(agent.port, "/readyz", 200), 10, period=0.002, what="/readyz 200")
        bare_url = f"http://127.0.0.1:{bare}/readyz"
        agent_url = f"http://127.0.0.1:{agent.port}/readyz"
        metrics_url = f"http://127.0.0.1:{agent.port}/metrics"

        log(f"probes: {rounds} A/B rounds of wrk, {wrk_seconds:g} s each")
        ratios: list[float] = []
        agent_rps: list[float] = []
        bare_rps: list[float] = []
        metrics_rps: list[float] = []
        for _ in range(rounds):
            b = wrk(bare_url, wrk_seconds)
            a = wrk(agent_url, wrk_seconds)
            if a.statuses[0]:
                raise RuntimeError(f"/readyz answered non-2xx under load: {a.statuses[0]}")
            bare_rps.append(b.rps)
            agent_rps.append(a.rps)
            ratios.append(a.rps / b.rps)
            metrics_rps.append(wrk(metrics_url, wrk_seconds).rps)

        log(f"probes: p99 at 1,000 req/s, {hey_rounds} rounds of {hey_seconds:g} s per scenario")
        lat: dict[str, list[Load]] = {"bare": [], "healthy": [], "down": [], "blackholed": [], "metrics": []}
        for _ in range(hey_rounds):
            lat["bare"].append(hey(bare_url, hey_seconds, HEY_WORKERS, HEY_RATE))
            lat["healthy"].append(_expect(hey(agent_url, hey_seconds, HEY_WORKERS, HEY_RATE), 200))
            lat["metrics"].append(hey(metrics_url, hey_seconds, 2, 50))
            server.kill()
            until(answered(agent.port, "/readyz", 503), 10, period=0.002, what="/readyz 503")
            lat["down"].append(_expect(hey(agent_url, hey_seconds, HEY_WORKERS, HEY_RATE), 503))
            server.start()
            until(answered(agent.port, "/readyz", 200), 10, period=0.002, what="/readyz 200")
            proxy.set_mode("blackhole")
            until(answered(agent.port, "/readyz", 503), 10, period=0.002, what="/readyz 503")
            lat["blackholed"].append(_expect(hey(agent_url, hey_seconds, HEY_WORKERS, HEY_RATE), 503))
            proxy.set_mode("pass")
            until(answered(agent.port, "/readyz", 200), 10, period=0.002, what="/readyz 200")
            time.sleep(0.2)

    log("probes: handler CPU per call, in-process")
    cost = handler_cost(mode.reps(2000, 500))
    ratio = median(ratios)
    section.rows.append(Row(
        "2", f"/readyz req/s (wrk -c32, {rounds} A/B rounds), median ratio",
        f"{median(agent_rps):,.0f} req/s", f"bare aiohttp {median(bare_rps):,.0f} req/s",
        ">= 0.95 x bare", ratio >= 0.95))
    section.rows[-1].value += f" ({ratio:.2f} x)"
    if cost:
        section.rows.append(Row(
            "2", "handler CPU per call, in-process (/readyz, /livez)",
            f"{cost['readyz']:.1f} us, {cost['livez']:.1f} us", f"constant handler {cost['constant']:.1f} us"))
    bare_p99 = median([x.p(0.99) for x in lat["bare"]])
    for scenario in ("healthy", "down", "blackholed"):
        p99 = median([x.p(0.99) for x in lat[scenario]])
        section.rows.append(Row(
            "2", f"/readyz p99 at 1,000 req/s, Redis {scenario}",
            ms(p99), f"bare aiohttp {ms(bare_p99)}", "< 5 ms", p99 < 0.005))
    metrics_p99 = median([x.p(0.99) for x in lat["metrics"]])
    section.rows.append(Row(
        "2", "/metrics p99 at 100 req/s", ms(metrics_p99), "", "< 20 ms", metrics_p99 < 0.020))
    section.rows.append(Row("2", "/metrics req/s (wrk -c32); handler CPU per call",
                            f"{median(metrics_rps):,.0f} req/s; {cost.get('metrics', float('nan')):.0f} us"))
    section.notes += [
        f"wrk: 1 thread, 32 keep-alive connections, {wrk_seconds:g} s per run; per-round ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}.",
        f"hey: {HEY_WORKERS} workers x {HEY_RATE:g} req/s on one core (-cpus 1), keep-alive, {hey_seconds:g} s "
        "per run; p99 per round: bare "
        f"{_p99_ms(lat['bare'])}; healthy {_p99_ms(lat['healthy'])}; down {_p99_ms(lat['down'])}; blackholed "
        f"{_p99_ms(lat['blackholed'])}; /metrics {_p99_ms(lat['metrics'])} (2 workers x 50 req/s).",
    ]
    return section


def _expect(load: Load, status: int) -> Load:
    """Fail loudly if the probe answered anything but ``status`` during the run (the scenario went wrong)."""
    other = {s: n for s, n in load.statuses.items() if s != status}
    if other:
        raise RuntimeError(f"expected only {status} during the run, got {dict(load.statuses)}")
    return load

