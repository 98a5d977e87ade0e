"""The docs' tables say what the code does, in both directions, so a setting, route, metric or reason added
without documentation (or documented but gone) fails here: every flag, environment variable, YAML key and default
of ``agent/config/settings.py`` in docs/settings.md (and the README's short table of the settings people change),
every HTTP route in the README's endpoints table, every metric family in docs/observability.md, and every
failure reason in docs/checks.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import BY_NAME, GCP_STARTUP_TIMEOUT, SPECS, Platform
from agent.core.model import Reason
from agent.server.app import make_app
from agent.server.metrics import PREFIX, Metrics

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def section(page: Path, heading: str) -> str:
    """The text of ``page`` under ``heading`` up to the next heading of the same or a higher level."""
    text = page.read_text()
    start = text.index("\n" + heading + "\n")
    level = heading.split(" ", 1)[0]
    found = re.search(rf"\n#{{1,{len(level)}}} ", text[start + len(heading) + 1:])
    return text[start:] if found is None else text[start:start + len(heading) + 1 + found.start()]


def first_table(text: str) -> list[list[str]]:
    """The cells of the first Markdown table in ``text`` (header and rule rows left out)."""
    lines = text.splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[begin + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def settings_for_app(tmp_path: Path) -> Any:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return load_settings({"platform": "local", "drain_token_file": str(token)}, {},
                         lambda _env: (Platform.LOCAL, "test"))


def default_matches(name: str, cell: str) -> bool:
    """A table's default cell (``—`` for none) parses to the declared default; a cell that also gives the GCP
    default (``60`` on GCP) holds both."""
    spec = BY_NAME[name]
    values = {spec.parse(v) for v in re.findall(r"`([^`]+)`", cell)}
    if "GCP" in cell:
        return values == {spec.default, GCP_STARTUP_TIMEOUT}
    return bool((None if cell == "—" else spec.parse(cell.strip("`"))) == spec.default)


class TestSettingsReference:
    """docs/settings.md's table: generated, but this holds the generator to the code as a reader sees it."""

    ROWS = first_table(section(DOCS / "settings.md", "## Settings"))

    def test_flags_match_the_settings(self) -> None:
        """The table's flags are exactly the settings' flags and aliases."""
        documented = {flag for row in self.ROWS for flag in re.findall(r"`(--[a-z0-9-]+)", row[0])}
        declared = {s.flag for s in SPECS} | {"--" + a.replace("_", "-") for s in SPECS for a in s.aliases}
        assert documented == declared

    def test_environment_variables_and_yaml_keys_match_the_settings(self) -> None:
        """The READINESS_AGENT_* variables and YAML keys are exactly the settings' names and aliases."""
        envs = {env for row in self.ROWS for env in re.findall(r"`(READINESS_AGENT_[A-Z0-9_]+)`", row[1])}
        keys = {key for row in self.ROWS for key in re.findall(r"`([a-z0-9_]+)`", row[2])}
        names = {s.name for s in SPECS} | {a for s in SPECS for a in s.aliases}
        assert envs == {"READINESS_AGENT_" + n.upper() for n in names}
        assert keys == names

    def test_defaults_match_the_settings(self) -> None:
        """Each row's default parses to the declared default."""
        for row in self.ROWS:
            name = re.findall(r"`([a-z0-9_]+)`", row[2])[0]
            assert default_matches(name, row[3]), row


class TestReadmeSettingsTable:
    ROWS = first_table(section(README, "## The settings people change"))

    def test_each_row_is_a_setting_with_its_default(self) -> None:
        """The short table names real settings, their real variables and their real defaults."""
        assert 8 <= len(self.ROWS) <= 14
        for row in self.ROWS:
            name = row[0].strip("`").removeprefix("--").replace("-", "_")
            assert BY_NAME[name].env in row[1], row
            assert default_matches(name, row[2]), row


class TestReadmeEndpointsTable:
    async def test_routes_match_the_app(self, tmp_path: Path) -> None:
        """Every route of the app is documented, and every documented endpoint is a route."""
        app = make_app(build_agent(settings_for_app(tmp_path)), CollectorRegistry())
        routes = {(r.method, re.sub(r"\{\w+\}", "{}", r.resource.canonical))  # type: ignore[union-attr]
                  for r in app.router.routes() if r.method != "HEAD"}
        rows = first_table(section(README, "## Endpoints"))
        heads = {tuple(row[0].strip("`").split(" ", 1)) for row in rows}
        mentioned = {("GET", re.sub(r"<\w+>", "{}", p)) for row in rows for p in re.findall(r"`(/[a-z/<>]+)`", row[1])}
        assert heads <= routes
        assert routes == heads | (mentioned & routes)


class TestMetricsTable:
    METRICS = "## Metrics (prefix `readiness_agent_`)"

    @pytest.fixture
    def families(self, tmp_path: Path) -> dict[str, str]:
        """Metric family names (counters with ``_total``) of the agent's real registry → type."""
        registry = CollectorRegistry()
        agent = build_agent(settings_for_app(tmp_path))
        Metrics(registry, lambda: agent.snapshot, 0.5)
        return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in registry.collect()}

    def test_agent_metrics_match_the_table(self, families: dict[str, str]) -> None:
        """docs/observability.md's table lists exactly the ``readiness_agent_`` families the registry exposes."""
        documented = {row[0].strip("`") for row in first_table(section(DOCS / "observability.md", self.METRICS))}
        assert documented == {n.removeprefix(PREFIX) for n in families if n.startswith(PREFIX)}

    def test_process_and_platform_metrics_are_named(self, families: dict[str, str]) -> None:
        """Every unprefixed family (process collector, platform collector) is named in the Metrics section."""
        text = section(DOCS / "observability.md", self.METRICS)
        others = {n for n in families if not n.startswith(PREFIX)}
        assert others and {n for n in others if f"`{n}`" not in text} == set()


class TestReasonsTable:
    @pytest.mark.parametrize(("page", "heading"), [(DOCS / "checks.md", "## Failure reasons"),
                                                   (DOCS / "design.md", "### Reasons")], ids=["checks", "design"])
    def test_reasons_match_the_model(self, page: Path, heading: str) -> None:
        """One row per failure reason the agent can give, and no other."""
        documented = [row[0].strip("`") for row in first_table(section(page, heading))]
        assert sorted(documented) == sorted(r.value for r in Reason)
