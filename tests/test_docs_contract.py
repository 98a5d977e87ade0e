"""docs/contract-tests.md cannot rot: every test it names exists (the file, the class, the function, read with
``ast``), every row names a test or says why it is untested, and it covers every section of docs/design.md."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "contract-tests.md"
REF = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)+)(?:\[[^\]`]*\])?`")


def rows() -> list[list[str]]:
    """The table's body rows as cells (the header and the rule left out)."""
    lines = [line for line in TABLE.read_text().splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines[1:]]


@cache
def defined_tests(path: str) -> frozenset[str]:
    """``Class::test`` and ``test`` names defined in a test file."""
    names: set[str] = set()

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                walk(node.body, prefix + node.name + "::")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                names.add(prefix + node.name)

    walk(ast.parse((ROOT / path).read_text()).body, "")
    return frozenset(names)


def test_every_named_test_exists() -> None:
    """Each ``tests/file.py::Class::test`` in the table is a test function in that class of that file."""
    refs = [(m.group(1), m.group(2)[2:]) for row in rows() for m in REF.finditer(row[2])]
    assert len(refs) > 100
    missing = [f"{path}::{name}" for path, name in refs
               if not (ROOT / path).is_file() or name not in defined_tests(path)]
    assert not missing, missing


def test_every_row_names_a_test_or_says_why_not() -> None:
    """A row without a test says **untested** and gives its reason."""
    for section, claim, proof in rows():
        assert section and claim, (section, claim)
        assert REF.search(proof) or re.match(r"\*\*untested\*\*:? \S", proof), (section, claim, proof)


def test_a_misspelled_test_is_caught() -> None:
    """The check sees a test that is not there (a check that finds nothing proves nothing)."""
    assert "TestVerdictLog::test_first_failure_is_logged_at_once_with_reason_and_detail" in \
        defined_tests("tests/test_verdict_log.py")
    assert "TestVerdictLog::test_first_failure_is_logged_at_once" not in defined_tests("tests/test_verdict_log.py")
