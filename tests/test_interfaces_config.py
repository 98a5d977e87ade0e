"""Interfaces beside the command line: each check kind's YAML keys, the failure reasons and the chart's values.

``tests/golden/interfaces.json`` (``check_keys``, ``reasons``, ``chart_values``) holds what a user's config file,
alert rules and Helm values may rely on; additions are allowed, nothing may disappear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from agent.checks import KINDS
from agent.checks.config import COMMON_KEYS, yaml_keys
from agent.core.model import Reason
from tests.support.interfaces import GOLDEN

CHART_VALUES = Path(__file__).resolve().parents[1] / "helm" / "readiness-agent" / "values.yaml"


def check_keys() -> dict[str, list[str]]:
    """The YAML keys a ``checks:`` entry of each kind reads (the common ones included)."""
    return {kind: sorted({*COMMON_KEYS, *yaml_keys(k.config)}) for kind, k in KINDS.items()}


def value_paths(doc: Any, prefix: str = "") -> list[str]:
    """``a.b.c`` paths of every key of the chart's values (lists are leaves)."""
    paths: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.append(path)
            paths.extend(value_paths(value, path))
    return paths


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(GOLDEN).read_text())
    return data


class TestConfigInterfacesKept:
    def test_every_check_kind_keeps_its_yaml_keys(self) -> None:
        """A ``checks:`` entry that parsed before still has every key it used."""
        now = check_keys()
        for kind, keys in golden()["check_keys"].items():
            assert kind in now, f"check kind {kind!r} is gone"
            assert set(keys) - set(now[kind]) == set(), kind

    def test_every_reason_is_kept(self) -> None:
        """Alert rules and dashboards match on reasons: none disappears."""
        assert set(golden()["reasons"]) - {r.value for r in Reason} == set()

    def test_every_chart_value_is_kept(self) -> None:
        """A values file that worked for the chart still names values the chart has."""
        now = set(value_paths(yaml.safe_load(CHART_VALUES.read_text())))
        assert set(golden()["chart_values"]) - now == set()
