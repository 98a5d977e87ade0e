"""Suite-wide fixtures (the fault harness) and the fault-matrix table at the end of the run."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.support.matrix import RESULTS, render

pytest_plugins = ["tests.support.fixtures"]

# Mutation testing re-runs the same test functions many times in one process: tell Hypothesis that is fine,
# and make every run draw the same examples so a mutant's verdict does not depend on luck.
settings.register_profile(
    "mutation", suppress_health_check=[HealthCheck.differing_executors], derandomize=True, database=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# The slow tier: files whose tests run the agent, servers or tools as processes against real time (seconds
# each). `make test-fast` (-m "not slow") leaves them out for an inner loop of about a minute; CI runs all.
SLOW_FILES = {
    "test_race_1011.py", "test_fault_matrix.py", "test_valkey.py", "test_e2e_agent.py", "test_kube.py",
    "test_cluster.py", "test_sentinel.py", "test_adversarial.py", "test_e2e_endpoints.py", "test_helm.py",
    "test_memorystore.py", "test_iam.py", "test_harness.py", "test_client.py", "test_operator.py",
    "test_deploy.py", "test_fresh_connection.py", "test_secrets.py", "test_logging_stall.py", "test_image.py",
    "test_evidence_redis.py", "test_connection_model.py", "test_cloudrun.py", "test_failover.py",
    "test_lifecycle.py", "test_kube_wiring.py", "test_canary.py", "test_alerts.py", "test_logging_labels.py",
    "test_dns.py", "test_bench_reference.py", "test_watch.py", "test_kube_policy.py", "test_platform.py",
    "test_interfaces.py", "test_bounded_reads.py", "test_config.py", "test_first_hour.py", "test_contract_process.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of a slow-tier file ``slow`` (tests/test_tiers.py keeps the list honest)."""
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix's measured figures (also recorded in docs/faults.md)."""
    if RESULTS:
        terminalreporter.section("fault matrix")
        terminalreporter.write_line(render(RESULTS))
