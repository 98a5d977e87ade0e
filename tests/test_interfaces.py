"""Every public interface from before the renovation still holds: flags, settings, /status keys, metrics,
endpoints, exit codes and the docs' tables (``tests/golden/interfaces.json``; additions are allowed). The golden
file's ``readme`` part names what the README's tables held; they now live in README.md, docs/settings.md and
docs/observability.md, which together must still document every entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import build_parser
from tests.support.interfaces import COMMANDS, GOLDEN, collect


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return collect(tmp_path_factory.mktemp("interfaces"))


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(GOLDEN).read_text())
    return data


def accepted_flags(command: str) -> set[str]:
    """Every option string the command's parser accepts, shown in --help or not."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse has no public API for this
    return {s for action in sub.choices[command]._actions for s in action.option_strings}  # type: ignore[union-attr]


class TestInterfacesKept:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_flag_is_still_accepted(self, golden: dict[str, Any], command: str) -> None:
        """A flag that worked before still parses for the same command."""
        assert set(golden["flags"][command]) - accepted_flags(command) == set()

    def test_run_help_lists_every_flag(self, golden: dict[str, Any], current: dict[str, Any]) -> None:
        """``run --help`` still documents every flag it documented."""
        assert set(golden["flags"]["run"]) - set(current["flags"]["run"]) == set()

    @pytest.mark.parametrize("part", ["settings", "status_keys", "metrics"])
    def test_names_are_kept(self, golden: dict[str, Any], current: dict[str, Any], part: str) -> None:
        """Settings in /status, /status key paths and metric families: nothing disappeared."""
        assert set(golden[part]) - set(current[part]) == set()

    @pytest.mark.parametrize("part", ["endpoints", "exit_codes"])
    def test_codes_are_kept(self, golden: dict[str, Any], current: dict[str, Any], part: str) -> None:
        """Each endpoint answers and each documented usage error exits as before."""
        assert {k: current[part].get(k) for k in golden[part]} == golden[part]

    @pytest.mark.parametrize("part", ["flags", "env", "endpoints", "metrics"])
    def test_readme_tables_keep_their_rows(self, golden: dict[str, Any], current: dict[str, Any], part: str) -> None:
        """The docs' tables (README.md, docs/settings.md, docs/observability.md) still document every flag,
        variable, endpoint and metric the README's tables did."""
        assert set(golden["readme"][part]) - set(current["readme"][part]) == set()
