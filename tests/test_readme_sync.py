"""The README's tables say what the code does: every flag and environment variable of ``agent/config/settings.py``
(with its default), every HTTP route of the app, and every metric family the registry exposes — in both
directions, so a setting, route or metric added without documentation (or documented but gone) fails here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.commands import build_agent
from agent.config.loader import load_settings
from agent.config.settings import BY_NAME, SPECS, Platform
from agent.server.app import make_app
from agent.server.metrics import PREFIX, Metrics

README = Path(__file__).resolve().parents[1] / "README.md"


def section(heading: str) -> str:
    """The README text under ``heading`` up to the next heading of the same or a higher level."""
    text = README.read_text()
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
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def settings_for_app(tmp_path: Path) -> Any:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return load_settings({"platform": "local", "drain_token_file": str(token)}, {},
                         lambda _env: (Platform.LOCAL, "test"))


class TestReadmeConfigurationTable:
    ROWS = first_table(section("## Configuration"))

    def test_flags_match_the_settings(self) -> None:
        """The table's flags are exactly the settings' flags and aliases."""
        documented = {flag for row in self.ROWS for flag in re.findall(r"`(--[a-z0-9-]+)", row[0])}
        declared = {s.flag for s in SPECS} | {"--" + a.replace("_", "-") for s in SPECS for a in s.aliases}
        assert documented == declared

    def test_environment_variables_match_the_settings(self) -> None:
        """The table's READINESS_AGENT_* variables are exactly the settings' variables."""
        documented = {env for row in self.ROWS for env in re.findall(r"`(READINESS_AGENT_[A-Z0-9_]+)`", row[1])}
        assert documented == {s.env for s in SPECS}

    def test_defaults_match_the_settings(self) -> None:
        """Each single-setting row's default parses to the declared default (— for none)."""
        checked = 0
        for row in self.ROWS:
            flags = re.findall(r"`(--[a-z0-9-]+)", row[0])
            spec = BY_NAME[flags[0][2:].replace("-", "_")]
            if len(flags) - len(spec.aliases) != 1 or "on GCP" in row[2]:
                continue  # a row for several settings, or a platform-dependent default
            cell = row[2].strip("`")
            assert (None if cell == "—" else spec.parse(cell)) == spec.default, row
            checked += 1
        assert checked >= len(SPECS) - 6


class TestReadmeEndpointsTable:
    async def test_routes_match_the_app(self, tmp_path: Path) -> None:
        """Every route of the app is documented, and every documented endpoint is a route."""
        app = make_app(build_agent(settings_for_app(tmp_path)), CollectorRegistry())
        routes = {(r.method, re.sub(r"\{\w+\}", "{}", r.resource.canonical))  # type: ignore[union-attr]
                  for r in app.router.routes() if r.method != "HEAD"}
        rows = first_table(section("## Endpoints (default `0.0.0.0:9180`)"))
        heads = {tuple(row[0].strip("`").split(" ", 1)) for row in rows}
        mentioned = {("GET", re.sub(r"<\w+>", "{}", p)) for row in rows for p in re.findall(r"`(/[a-z/<>]+)`", row[1])}
        assert heads <= routes
        assert routes == heads | (mentioned & routes)


class TestReadmeMetricsTable:
    @pytest.fixture
    def families(self, tmp_path: Path) -> dict[str, str]:
        """Metric family names (counters with ``_total``) of the agent's real registry → type."""
        registry = CollectorRegistry()
        agent = build_agent(settings_for_app(tmp_path))
        Metrics(registry, lambda: agent.snapshot, 0.5)
        return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in registry.collect()}

    def test_agent_metrics_match_the_table(self, families: dict[str, str]) -> None:
        """The table lists exactly the ``readiness_agent_`` families the registry exposes."""
        documented = {row[0].strip("`") for row in first_table(section("## Metrics (prefix `readiness_agent_`)"))}
        assert documented == {n.removeprefix(PREFIX) for n in families if n.startswith(PREFIX)}

    def test_process_and_platform_metrics_are_named(self, families: dict[str, str]) -> None:
        """Every unprefixed family (process collector, platform collector) is named in the Metrics section."""
        text = section("## Metrics (prefix `readiness_agent_`)")
        others = {n for n in families if not n.startswith(PREFIX)}
        assert others and {n for n in others if f"`{n}`" not in text} == set()


ROOT = README.parent
PATH_IN_CODE = re.compile(r"`((?:agent|bench|deploy|docs|examples|harness|helm|scripts|tests)/[A-Za-z0-9_./-]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


class TestDocsCiteOnlyWhatExists:
    @pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
    def test_every_cited_path_exists(self, doc: Path) -> None:
        """Every repository path in backticks and every relative link of README.md and docs/*.md exists."""
        text = doc.read_text()
        cited = {ROOT / p for p in PATH_IN_CODE.findall(text)}
        cited |= {(doc.parent / link).resolve() for link in LINK.findall(text) if "://" not in link
                  and not link.startswith("mailto:")}
        assert sorted(str(p.relative_to(ROOT)) for p in cited if not p.exists()) == []
