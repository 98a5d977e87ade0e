"""Peak RSS (VmHWM) of the agent per shipped configuration, for docs/benchmarks.md "Agent memory per configuration".

Log format text/json x readiness gate off/on (the gate against harness.kube_api, the stand-in API server, in a
thread), each idle 8 s after start, then after a probe flood (32 concurrent ``/readyz?verbose`` loops for 5 s).
Configurations alternate within each round; the figure per configuration is the maximum over rounds.
Usage: ``.venv/bin/python scripts/measure_rss.py [ROUNDS]`` (about 15 s per configuration and round).
The chart's default agent resources are sized from the output (tests/test_helm.py keeps limit >= 1.5 x peak).
"""
from __future__ import annotations
import asyncio, json, statistics, sys, tempfile, threading, time
from pathlib import Path
import aiohttp
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.agent_process import AgentProcess
from harness.redis_server import RedisProcess
from harness.kube_api import KubeAPI, write_kubeconfig

def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

class Api(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True); self.ready = threading.Event()
    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        async def main() -> None:
            self.api = await KubeAPI(tokens={"t"}).start()
            self.api.add_pod("shop", "web-0", [])
            self.ready.set()
            await asyncio.Event().wait()
        self.loop.run_until_complete(main())

async def flood(base: str, seconds: float, n: int = 32) -> int:
    count = 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as s:
        async def one() -> None:
            nonlocal count
            while time.monotonic() < end:
                async with s.get(base + "/readyz?verbose") as r:
                    await r.read(); count += 1
        await asyncio.gather(*(one() for _ in range(n)))
    return count

def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    api = Api(); api.start(); api.ready.wait()
    kcfg = write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig", api.api.url, "t", "shop")
    results: dict[str, dict[str, list[float]]] = {}
    with RedisProcess() as redis:
        redis.start()
        for r in range(rounds):
            for fmt in ("text", "json"):
                for gate in (False, True):
                    args = ["--redis-url", redis.url, "--log-format", fmt]
                    env = {}
                    if gate:
                        args += ["--kube-readiness-gate", "--kubeconfig", str(kcfg)]
                        env = {"POD_NAME": "web-0", "POD_NAMESPACE": "shop"}
                    key = f"{fmt} logs, gate {'on' if gate else 'off'}"
                    with AgentProcess(*args, env=env) as agent:
                        time.sleep(8)
                        idle_rss, idle_hwm = kib(agent.pid, "VmRSS"), kib(agent.pid, "VmHWM")
                        n = asyncio.run(flood(agent.base, 5.0))
                        peak = kib(agent.pid, "VmHWM")
                        alive = agent.alive()
                    d = results.setdefault(key, {"idle_rss": [], "idle_hwm": [], "flood_hwm": [], "requests": []})
                    d["idle_rss"].append(idle_rss / 1024); d["idle_hwm"].append(idle_hwm / 1024)
                    d["flood_hwm"].append(peak / 1024); d["requests"].append(n)
                    print(r, key, f"idle {idle_rss/1024:.1f} hwm {idle_hwm/1024:.1f} flood-hwm {peak/1024:.1f} MiB ({n} req) alive={alive}", flush=True)
    summary = {k: {m: (round(max(v), 1) if m != "requests" else int(statistics.median(v))) for m, v in d.items()} for k, d in results.items()}
    print(json.dumps(summary, indent=1))

main()
