"""Redis Cluster: CLUSTER INFO parsed and judged, and the real agent on a real 3-master cluster (node timeout 1 s).

The cluster is made by ``redis-cli --cluster create`` over real ``redis-server --cluster-enabled yes`` nodes
(and ``valkey-server`` ones) on loopback (harness/redis_topology.py); killing a master without replicas leaves
a third of the slots uncovered, which the surviving nodes turn into ``cluster_state:fail`` after the node
timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agent.checks.redis.cluster import TOTAL_SLOTS, cluster_enabled, judge_cluster, parse_cluster_info
from agent.config.settings import DEFAULT_TIMING
from agent.core.model import Reason
from harness.agent_process import AgentProcess
from harness.readyz_sampler import ReadyzSampler
from harness.redis_server import REDIS_SERVER
from harness.redis_topology import CLUSTER_NODE_TIMEOUT_MS, ClusterSet, valkey_server
from tests.test_example_configs import load_example

HEALTHY = (b"cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"
           b"cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:3\r\ncluster_size:3\r\n")


class TestClusterInfo:
    def test_healthy_cluster_is_usable(self) -> None:
        """cluster_state:ok with every slot ok is judged usable, and the figures are read."""
        info = parse_cluster_info(HEALTHY)
        assert judge_cluster(info) is None
        assert (info.slots_ok, info.slots_pfail, info.slots_fail, info.known_nodes, info.size) == (
            TOTAL_SLOTS, 0, 0, 3, 3)

    def test_failed_cluster_is_cluster_down_with_the_slot_figures(self) -> None:
        """cluster_state:fail is cluster_down, and the detail carries the slot counts."""
        text = HEALTHY.replace(b"state:ok", b"state:fail").replace(b"slots_ok:16384", b"slots_ok:10923")
        text = text.replace(b"slots_fail:0", b"slots_fail:5461")
        assert judge_cluster(parse_cluster_info(text)) == (
            Reason.CLUSTER_DOWN, "cluster_state:fail (slots ok 10923/16384, pfail 0, fail 5461)")

    def test_state_is_the_servers_verdict_not_the_slot_counts(self) -> None:
        """With cluster-require-full-coverage no, failing slots with cluster_state:ok stay usable."""
        text = HEALTHY.replace(b"slots_fail:0", b"slots_fail:5461")
        assert judge_cluster(parse_cluster_info(text)) is None

    def test_not_cluster_info_is_refused(self) -> None:
        """A reply without cluster_state is not judged usable: it is an error for the caller."""
        with pytest.raises(ValueError, match="cluster_state"):
            parse_cluster_info(b"# Server\r\nredis_version:7.0.15\r\n")

    def test_garbage_counts_are_zero_not_a_crash(self) -> None:
        """Non-numeric slot counts (a proxy's odd answer) read as 0, never as an exception."""
        info = parse_cluster_info(b"cluster_state:ok\r\ncluster_slots_ok:lots\r\ncluster_slots_fail:\xd9\xa3\r\n")
        assert (info.slots_ok, info.slots_fail) == (0, 0)

    def test_cluster_mode_comes_from_info(self) -> None:
        """INFO's cluster_enabled:1 means cluster mode; absent or 0 means standalone."""
        assert cluster_enabled({"cluster_enabled": "1"})
        assert not cluster_enabled({"cluster_enabled": "0"}) and not cluster_enabled({})


class TestClusterExample:
    def test_example_config_loads(self, tmp_path: Path) -> None:
        """examples/configs/cluster.yaml is valid: a required TLS check on a discovery endpoint, an optional one."""
        settings = load_example("cluster.yaml", tmp_path)
        sessions, cache = settings.checks
        assert (sessions.name, sessions.required, cache.name, cache.required) == ("sessions", True, "cache", False)
        assert sessions.redis is not None and sessions.redis.tls and sessions.ca_file and sessions.password_file


class TestClusterAgent:
    @pytest.mark.parametrize("server", ["redis", "valkey"])
    async def test_cluster_failure_is_503_with_cluster_down_and_recovery_is_200(self, server: str) -> None:
        """The real agent on a plain redis:// URL of one node (Redis, and Valkey): a master of the cluster
        killed → /readyz 503 with reason cluster_down (the node itself still answers PONG) within the detection
        bound of the cluster turning fail, slot figures in /status and /metrics; the master back → 200."""
        binary = valkey_server() if server == "valkey" else REDIS_SERVER
        with ClusterSet(3, binary=binary) as cluster:
            await asyncio.to_thread(cluster.start)
            node, victim = cluster.nodes[0], cluster.nodes[2]
            assert cluster_enabled(node.info("cluster"))  # how the agent knows, from a plain URL
            assert "cluster_state" not in node.info("everything")  # the old judge_info looked for it here
            agent = AgentProcess("--redis-url", node.url)  # the defaults: the figures a user gets
            sampler: ReadyzSampler | None = None
            try:
                await asyncio.to_thread(agent.start)
                sampler = ReadyzSampler(agent.port, "/readyz", period=0.02).start()
                await sampler.expect(200, after=0, timeout=10)
                status = json.loads((await asyncio.to_thread(agent.get, "/status"))[1])
                bound = status["detection_bound_seconds"]
                assert status["checks"]["redis"]["cluster"] == {
                    "state": "ok", "slots_ok": TOTAL_SLOTS, "slots_pfail": 0, "slots_fail": 0}
                killed = time.monotonic()
                await asyncio.to_thread(victim.kill)
                failed_at = await asyncio.to_thread(cluster.wait_state, "fail", [node], 10)
                down_at = await sampler.expect(503, after=killed, timeout=bound * 2 + 1)
                assert await asyncio.to_thread(node.ping) == "PONG"
                status = json.loads((await asyncio.to_thread(agent.get, "/status"))[1])
                metrics = (await asyncio.to_thread(agent.get, "/metrics"))[1]
                await asyncio.to_thread(victim.start)
                healed_at = await asyncio.to_thread(cluster.wait_state, "ok", cluster.nodes, 10)
                up_at = await sampler.expect(200, after=healed_at, timeout=10)
            finally:
                if sampler is not None:
                    sampler.stop()
                output = agent.output()
                agent.close()
        check = status["checks"]["redis"]
        assert check["last_failure_reason"] == "cluster_down", output
        assert check["last"]["detail"].startswith("cluster_state:fail")
        assert check["cluster"]["state"] == "fail" and check["cluster"]["slots_ok"] < TOTAL_SLOTS
        assert 'readiness_agent_redis_cluster_slots{check="redis",state="ok"}' in metrics
        assert failed_at - killed >= CLUSTER_NODE_TIMEOUT_MS / 1000  # the servers' verdict, not the agent's
        assert down_at - failed_at <= bound + 0.05  # 0.05: the ground truth polls CLUSTER INFO every 20 ms
        # the default window + interval × (1 + jitter) + 1 s
        assert up_at - healed_at <= DEFAULT_TIMING.window + DEFAULT_TIMING.interval * (1 + DEFAULT_TIMING.jitter) + 1
        print(f"cluster ({server}): kill -> 503 {down_at - killed:.2f}s, cluster_state:fail -> 503 "
              f"{down_at - failed_at:.2f}s (bound {bound:.2f}s), cluster_state:ok -> 200 {up_at - healed_at:.2f}s")
