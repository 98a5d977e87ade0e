"""Redis Cluster: CLUSTER INFO parsed and judged, against a real 3-master cluster (node timeout 1 s) too.

The cluster is made by ``redis-cli --cluster create`` over real ``redis-server --cluster-enabled yes`` nodes
on loopback (tests/support/topology.py); killing a master without replicas leaves a third of the slots
uncovered, which the surviving nodes turn into ``cluster_state:fail`` after the node timeout.
"""

from __future__ import annotations

import time

import pytest

from agent.cluster import TOTAL_SLOTS, cluster_enabled, judge_cluster, parse_cluster_info
from agent.model import Reason
from tests.support.redisproc import parse_info
from tests.support.topology import CLUSTER_NODE_TIMEOUT_MS, ClusterSet

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


class TestRealCluster:
    def test_master_loss_is_cluster_down_while_ping_answers_and_recovery_is_ok(self) -> None:
        """Three masters, one killed: a surviving node still answers PONG and says cluster_enabled:1 in INFO,
        and its CLUSTER INFO is judged cluster_down; restarted, the cluster is judged usable again."""
        with ClusterSet(3) as cluster:
            cluster.start()
            survivor, victim = cluster.nodes[0], cluster.nodes[2]
            assert cluster_enabled(survivor.info("cluster"))
            assert "cluster_state" not in survivor.info("everything")  # the old judge_info read it from INFO
            assert judge_cluster(parse_cluster_info(survivor.cli("CLUSTER", "INFO"))) is None
            killed = time.monotonic()
            victim.kill()
            failed_at = cluster.wait_state("fail", [survivor], timeout=CLUSTER_NODE_TIMEOUT_MS / 1000 * 2 + 5)
            assert failed_at - killed >= CLUSTER_NODE_TIMEOUT_MS / 1000  # not before the node timeout
            assert survivor.ping() == "PONG"
            failure = judge_cluster(parse_cluster_info(survivor.cli("CLUSTER", "INFO")))
            assert failure is not None and failure[0] is Reason.CLUSTER_DOWN
            assert "fail 5461" in failure[1] or "pfail" in failure[1]
            victim.start()
            cluster.wait_state("ok", cluster.nodes, timeout=10)
            assert judge_cluster(parse_cluster_info(survivor.cli("CLUSTER", "INFO"))) is None
            assert parse_info(str(victim.cli("INFO", "cluster"))).get("cluster_enabled") == "1"
