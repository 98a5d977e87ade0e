"""The package's shape, kept by tests: no import cycles, a pure verdict, and modules small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1] / "agent"
MAX_LINES = 350
IO_MODULES = {"asyncio", "socket", "ssl", "os", "io", "subprocess", "urllib", "http", "aiohttp", "redis",
              "time", "random", "threading", "logging", "pathlib"}


def module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Modules imported at run time (imports under ``if TYPE_CHECKING:`` are left out)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(AGENT.rglob("*.py"))}
GRAPH = {name: {m for m in runtime_imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


class TestPackageShape:
    def test_no_import_cycles(self) -> None:
        """The import graph of agent/ (run-time imports, packages excepted) has no cycle."""
        graph = {n: {m for m in deps if m != "agent"} for n, deps in GRAPH.items()}
        state: dict[str, int] = {}

        def visit(node: str, path: list[str]) -> None:
            state[node] = 1
            for nxt in graph[node]:
                if state.get(nxt) == 1:
                    pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
                if nxt not in state:
                    visit(nxt, [*path, node])
            state[node] = 2

        for name in graph:
            if name not in state:
                visit(name, [])

    def test_verdict_depends_only_on_the_model_and_no_io(self) -> None:
        """The pure verdict imports only the model from the package, and no module that does I/O or reads a clock."""
        imports = runtime_imports(MODULES["agent.verdict"])
        assert {m for m in imports if m.startswith("agent")} <= {"agent.model"}
        assert not {m.split(".")[0] for m in imports} & IO_MODULES
        assert not {m.split(".")[0] for m in runtime_imports(MODULES["agent.model"])} & IO_MODULES

    @pytest.mark.parametrize("name", sorted(MODULES))
    def test_module_is_small(self, name: str) -> None:
        """No module in agent/ exceeds 350 lines."""
        assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES

    @pytest.mark.parametrize("name", sorted(MODULES))
    def test_module_says_why_it_exists(self, name: str) -> None:
        """Every module opens with a docstring."""
        assert ast.get_docstring(ast.parse(MODULES[name].read_text()))


ASYNC_CODE = sorted(p for root in ("agent", "harness", "bench", "examples")
                    for p in (AGENT.parent / root).rglob("*.py"))


def cancellation_hazards(path: Path) -> list[str]:
    """``asyncio.wait_for`` calls and ``suppress(CancelledError)`` blocks: each can swallow a cancellation.

    On Python 3.11 ``wait_for`` loses a cancellation that lands while its inner await finishes (CPython
    gh-86296, fixed by 3.12's rewrite); ``asyncio.timeout`` (sound from 3.11.3, gh-102780) or ``asyncio.wait``
    do not. Suppressing ``CancelledError`` around ``await task`` also swallows the caller's own cancellation.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if called in ("asyncio.wait_for", "wait_for"):
                found.append(f"{path.name}:{node.lineno} {called}")
            if called.endswith("suppress") and any("CancelledError" in ast.unparse(a) for a in node.args):
                found.append(f"{path.name}:{node.lineno} suppress(CancelledError)")
    return found


class TestCancellation:
    def test_no_construct_that_can_swallow_a_cancellation(self) -> None:
        """No ``asyncio.wait_for`` and no ``suppress(CancelledError)`` in the agent, the harness, bench or examples."""
        found = [hazard for path in ASYNC_CODE for hazard in cancellation_hazards(path)]
        assert not found, "use asyncio.timeout or asyncio.wait instead: " + ", ".join(found)

    def test_the_ban_sees_both_constructs(self, tmp_path: Path) -> None:
        """The check finds each construct it bans (a ban that finds nothing proves nothing)."""
        sample = tmp_path / "sample.py"
        sample.write_text("import asyncio, contextlib\nasync def f(t):\n"
                          "    await asyncio.wait_for(t, 1)\n"
                          "    with contextlib.suppress(asyncio.CancelledError):\n        await t\n")
        assert cancellation_hazards(sample) == ["sample.py:3 asyncio.wait_for", "sample.py:4 suppress(CancelledError)"]
