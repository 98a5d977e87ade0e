"""A stalled or vanished log collector never decides the verdict: the real agent, its stdout a real pipe, a
real redis-server, and (for the pod condition) the API-server stand-in of harness/kube_api.py.

With stdout full, a killed Redis still turns ``/readyz`` to 503 at once, every probe is answered, the
readiness-gate condition goes False and SIGTERM ends the agent within the drain (agent/logs/writer.py). With
stdout's reader gone (EPIPE), stderr gets one line, not a traceback per record. Figures before → after are in
docs/benchmarks.md ("Logging to a stalled collector").
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from harness.kube_api import KubeAPI, write_kubeconfig
from harness.readyz_sampler import ReadyzSampler, Sample
from harness.redis_server import RedisProcess
from harness.wait import until_async
from tests.support.fast import FAST_WINDOW as FAST
from tests.support.piped_agent import PipedAgent

NS, POD, CTYPE = "shop", "web-0", "readiness-agent.io/dependencies-ready"
DRAIN = 0.5
PROBE_LIMIT = 1.0  # seconds: a probe not answered within this counts as unanswered


def unanswered(samples: list[Sample], after: float) -> list[Sample]:
    return [s for s in samples if s.at >= after and (s.status == 0 or s.latency > PROBE_LIMIT)]


async def exit_time(agent: PipedAgent, sig: signal.Signals, timeout: float) -> float:
    """Send ``sig`` and wait for the exit; the seconds it took."""
    assert agent.proc is not None
    sent = time.monotonic()
    agent.signal(sig)
    await asyncio.to_thread(agent.proc.wait, timeout)
    return time.monotonic() - sent


class TestStalledStdout:
    async def test_a_full_stdout_pipe_freezes_nothing(self, redis_proc: RedisProcess, tmp_path: Path) -> None:
        """Ready, stdout filled, Redis killed: /readyz 503 within 1 s, every probe answered within 1 s, the pod
        condition False, SIGTERM → exit within drain + 1 s."""
        api = await KubeAPI(tokens={"t0k"}).start()
        try:
            api.add_pod(NS, POD, [])
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, "t0k", NS)

            def condition() -> object:
                return (api.condition(NS, POD, CTYPE) or {}).get("status")

            with PipedAgent("--redis-url", redis_proc.url, "--kube-readiness-gate", "--kubeconfig", str(kubeconfig),
                            "--drain-seconds", str(DRAIN), *FAST, env={"POD_NAME": POD, "POD_NAMESPACE": NS}) as agent:
                await until_async(lambda: condition() == "True", 10, "condition True")
                agent.drain()
                assert agent.fill() > 0
                with ReadyzSampler(agent.port, period=0.01, request_timeout=PROBE_LIMIT) as readyz, \
                        ReadyzSampler(agent.port, "/livez", period=0.05, request_timeout=PROBE_LIMIT) as livez:
                    killed = time.monotonic()
                    redis_proc.kill()
                    went_503 = await readyz.expect(503, after=killed, timeout=5)
                    await until_async(lambda: condition() == "False", 5, "condition False")
                    # a second of probing with the pipe still full: the loop keeps answering
                    await until_async(lambda: time.monotonic() - killed >= 1.0, 5)
                assert went_503 - killed <= 1.0
                assert unanswered(readyz.samples, killed) == []
                assert unanswered(livez.samples, killed) == []
                assert DRAIN <= await exit_time(agent, signal.SIGTERM, 10) <= DRAIN + 1.0
                assert agent.proc is not None and agent.proc.returncode == 0
                assert agent.stderr() == ""
        finally:
            await api.stop()


class TestGoneReader:
    async def test_epipe_is_one_line_on_stderr(self, redis_proc: RedisProcess) -> None:
        """The collector closed its end: the agent keeps answering and exits 0, and stderr gets at most one line
        (not a traceback per record)."""
        with PipedAgent("--redis-url", redis_proc.url, "--drain-seconds", str(DRAIN), "--log-format", "json",
                        *FAST) as agent:
            with ReadyzSampler(agent.port, period=0.01, request_timeout=PROBE_LIMIT) as readyz:
                await readyz.expect(200, after=0.0, timeout=10)
                agent.close_reader()
                killed = time.monotonic()
                redis_proc.kill()  # a transition and failure lines, each written to the closed pipe
                await readyz.expect(503, after=killed, timeout=5)
            assert unanswered(readyz.samples, killed) == []
            assert DRAIN <= await exit_time(agent, signal.SIGTERM, 10) <= DRAIN + 1.0
            assert agent.proc is not None and agent.proc.returncode == 0
            err = agent.stderr()
            assert len(err.splitlines()) <= 1 and len(err) < 400, err
            assert "Traceback" not in err
