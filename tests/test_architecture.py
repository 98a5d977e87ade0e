"""The package's shape, kept by tests: layers, no import cycles, a pure verdict, modules small enough to read."""

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
            # ``from agent.gate import api``: the module imported is agent.gate.api
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (AGENT.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists())
    return found


MODULES = {module_name(p): p for p in sorted(AGENT.rglob("*.py"))}
GRAPH = {name: {m for m in runtime_imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


# The layers, bottom first, each a few named groups of modules (a module, or a package and all below it).
# A module may import its own group and any group of a lower layer; nothing above, nothing beside it. So the
# core never reaches for a check, a check never for the loader, the HTTP surface never for a check, and only
# the entry points wire everything together. docs/design.md, "Code map".
LAYERS: tuple[dict[str, tuple[str, ...]], ...] = (
    {"words": ("agent", "agent.core.model", "agent.logs.labels")},
    {"core": ("agent.core",)},  # verdict, snapshot, store, history
    {"values": ("agent.config.values", "agent.config.urls", "agent.config.sentinel_url", "agent.config.tls",
                "agent.config.secretfile")},
    {"checks": ("agent.checks",)},  # the kinds: config types and checks
    {"settings": ("agent.config",)},  # settings, the loader, platform
    {"loop": ("agent.core.agent",)},  # runs the checks
    {"logs": ("agent.logs",), "server": ("agent.server",), "gate": ("agent.gate",)},  # read the verdict
    {"entry": ("agent.cli", "agent.commands", "agent.__main__")},  # the wiring
)
# Beside each other in one layer, only this: the HTTP surface counts the log writer's drops.
BESIDE = {("server", "logs")}


def group_of(module: str) -> tuple[int, str]:
    """The layer and group of the most specific prefix naming ``module``."""
    best: tuple[int, str, str] | None = None
    for layer, groups in enumerate(LAYERS):
        for group, prefixes in groups.items():
            for prefix in prefixes:
                named = module == prefix or module.startswith(prefix + ".")
                if named and (best is None or len(prefix) > len(best[2])):
                    best = (layer, group, prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0], best[1]


class TestLayers:
    @pytest.mark.parametrize("name", sorted(MODULES))
    def test_module_imports_only_its_group_and_lower_layers(self, name: str) -> None:
        """Each run-time import goes down the layers (or stays in the module's own group)."""
        layer, group = group_of(name)
        wrong = []
        for imported in sorted(GRAPH[name]):
            other_layer, other_group = group_of(imported)
            if other_group == group or other_layer < layer or (group, other_group) in BESIDE:
                continue
            wrong.append(f"{imported} ({other_group}, layer {other_layer})")
        assert not wrong, f"{name} ({group}, layer {layer}) imports " + ", ".join(wrong)

    def test_the_contract_sees_a_wrong_import(self) -> None:
        """A check importing the loader, or the core importing a check, is caught (the contract can fail)."""
        assert group_of("agent.checks.redis.check") == (3, "checks")
        assert group_of("agent.config.loader")[0] > group_of("agent.checks.tcp")[0]
        assert group_of("agent.checks.tcp")[0] > group_of("agent.core.store")[0]


class TestPackageShape:
    def test_no_import_cycles(self) -> None:
        """The import graph of agent/ (run-time imports, packages excepted) has no cycle."""
        graph = {n: {m for m in deps if m not in PACKAGES or m == "agent.checks"} for n, deps in GRAPH.items()}
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
        imports = runtime_imports(MODULES["agent.core.verdict"])
        assert {m for m in imports if m.startswith("agent")} <= {"agent.core.model"}
        assert not {m.split(".")[0] for m in imports} & IO_MODULES
        assert not {m.split(".")[0] for m in runtime_imports(MODULES["agent.core.model"])} & IO_MODULES

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
