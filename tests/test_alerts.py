"""deploy/prometheus/alerts.yaml, its promtool unit tests, docs/runbook.md and the Grafana dashboard.

The alert behaviour itself (each alert fires on its scenario and stays silent on a healthy fleet, one
start-up failure raises one alert, the first transition counts) is written as `promtool test rules` cases in
deploy/prometheus/tests/; this module runs them with the real promtool (scripts/install-tools.sh), checks
that they cover every alert, and shows that they catch the mistakes they exist for by running them against
deliberately broken copies of the rules. Metric names are checked against the agent's exposition by
tests/test_deploy.py (DESIGN_METRICS is asserted against the real agent's /metrics there).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import DEPLOY, DESIGN_METRICS, GATE_METRICS, METRIC_NAME, ROOT, run, tool

RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "tests"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/readiness-agent/readiness-agent/blob/main/docs/runbook.md#"
DASHBOARD = DEPLOY / "grafana" / "readiness-agent.json"
SEVERITIES = {"info", "warning", "critical"}
HEALTHY_GROUP = "healthy fleet raises nothing"
# Input series that are not the agent's own: Prometheus' scrape health.
PROMETHEUS_SERIES = {"up"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules()}


def rule_test_files() -> list[Path]:
    files = sorted(RULE_TESTS.glob("*.yaml"))
    assert files, f"no promtool test files in {RULE_TESTS}"
    return files


def rule_test_groups() -> list[dict[str, Any]]:
    return [group for path in rule_test_files() for group in yaml.safe_load(path.read_text())["tests"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub derives from a Markdown file's headings (lower case, punctuation dropped)."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def promtool_test(rules_text: str | None, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on the unit tests, against the real rules or against `rules_text` instead."""
    if rules_text is None:
        return run([tool("promtool"), "test", "rules", *rule_test_files()])
    (workdir / "tests").mkdir()
    for path in rule_test_files():
        shutil.copy(path, workdir / "tests" / path.name)
    (workdir / "alerts.yaml").write_text(rules_text)
    return run([tool("promtool"), "test", "rules", *sorted((workdir / "tests").glob("*.yaml"))])


@pytest.fixture(scope="module")
def promtool_result() -> subprocess.CompletedProcess[str]:
    return promtool_test(None, Path())


class TestAlertRules:
    def test_unit_tests_pass(self, promtool_result: subprocess.CompletedProcess[str]) -> None:
        """`promtool test rules` passes every case in deploy/prometheus/tests/."""
        assert promtool_result.returncode == 0, promtool_result.stdout + promtool_result.stderr
        assert "SUCCESS" in promtool_result.stdout

    def test_every_alert_fires_in_a_test_and_is_checked_silent_on_the_healthy_fleet(self) -> None:
        """Each alert has a case where it fires and is evaluated (expecting nothing) on the healthy fleet."""
        groups = rule_test_groups()
        fired = {case["alertname"] for group in groups for case in group["alert_rule_test"] if case.get("exp_alerts")}
        healthy = next(group for group in groups if group["name"] == HEALTHY_GROUP)
        silent = {case["alertname"] for case in healthy["alert_rule_test"] if not case.get("exp_alerts")}
        assert fired == alert_names()
        assert silent == alert_names()
        assert len({case["eval_time"] for case in healthy["alert_rule_test"]}) >= 2

    def test_unit_tests_use_only_the_agents_metrics(self) -> None:
        """Every input series of the unit tests is a metric the agent exposes (or Prometheus' `up`)."""
        names = {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", series["series"]).group(0)  # type: ignore[union-attr]
                 for group in rule_test_groups() for series in group["input_series"]}
        agent = DESIGN_METRICS | GATE_METRICS
        assert names - PROMETHEUS_SERIES <= agent, names - PROMETHEUS_SERIES - agent

    def test_every_alert_links_its_runbook_section(self) -> None:
        """Each alert has a severity, a summary, a description and a runbook_url whose anchor is a runbook
        heading named after the alert."""
        anchors = github_anchors(RUNBOOK.read_text())
        for rule in rules():
            annotations = rule["annotations"]
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert annotations["summary"] and annotations["description"], rule["alert"]
            assert annotations["runbook_url"] == RUNBOOK_URL + rule["alert"].lower(), rule["alert"]
            assert rule["alert"].lower() in anchors, rule["alert"]

    def test_runbook_links_resolve(self) -> None:
        """Every in-page link of the runbook points at one of its headings."""
        text = RUNBOOK.read_text()
        links = set(re.findall(r"\]\(#([^)]+)\)", text))
        assert links and links <= github_anchors(text), links - github_anchors(text)

    @pytest.mark.parametrize(("mistake", "find", "replace"), [
        ("StartupDeadlineExceeded re-fires for a pod that was once slow to start",
         "unless on (namespace, job, instance) readiness_agent_startup_seconds\n",
         "unless on (namespace, job, instance) readiness_agent_ready == 1\n"),
        ("NotReady also fires for a pod that never started",
         "and on (namespace, job, instance) readiness_agent_startup_seconds\n", ""),
        ("Flapping reads increase()'s extrapolation as exits (3 exits become 3.2)",
         "          round(sum by (namespace, job, instance) (\n", "          (sum by (namespace, job, instance) (\n"),
        ("CheckDownWhileServing sees only Redis checks",
         "readiness_agent_check_up == 0", "readiness_agent_redis_up == 0"),
        ("KubeGateWriteFailing pages for a one-off conflict that was retried at once",
         "        for: 3m\n", "        for: 0m\n"),
        ("CheckDownWhileServing also fires for pods that left rotation (NotReady's case)",
         "            and on (namespace, job, instance) readiness_agent_ready == 1\n", ""),
        ("MostPodsNotReady counts a rollout's draining pods",
         "            unless on (namespace, job, instance) readiness_agent_state{state=\"draining\"} == 1\n"
         "          ) < 0.5",
         "          ) < 0.5"),
    ])
    def test_unit_tests_catch_the_mistake(self, mistake: str, find: str, replace: str, tmp_path: Path) -> None:
        """The unit tests fail against a copy of the rules that has this mistake."""
        text = RULES.read_text()
        assert text.count(find) == 1, mistake
        result = promtool_test(text.replace(find, replace), tmp_path)
        assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr, mistake

    def test_metric_names_come_from_the_agent(self) -> None:
        """Every readiness_agent_* name in the rules is one the agent exposes; the up gauge is check_up, which
        every check kind has (redis_up: Redis checks only), and the gate's write failures are watched."""
        used = set(METRIC_NAME.findall(RULES.read_text()))
        assert {"readiness_agent_check_up", "readiness_agent_kube_patch_total"} <= used
        assert "readiness_agent_redis_up" not in used
        assert used <= DESIGN_METRICS | GATE_METRICS, used - DESIGN_METRICS - GATE_METRICS


class TestGrafanaVersionsTable:
    def test_versions_table_is_an_instant_query(self) -> None:
        """The Versions table asks for the current versions only (instant, table format), not a time series."""
        panels = json.loads(DASHBOARD.read_text())["panels"]
        table = next(p for p in panels if p["title"] == "Versions")
        assert table["type"] == "table"
        [target] = table["targets"]
        assert target["instant"] is True and target["range"] is False and target["format"] == "table"
        assert "readiness_agent_build_info" in target["expr"]
