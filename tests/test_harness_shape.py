"""The harness package's shape, kept by tests: one wait helper, one agent wrapper, one /readyz sampler, shared by
the tests, the bench and the examples, none of which import the test suite as a library.

Also the behaviour the callers rely on: ``until``/``until_async`` return the probe's value, try once more at
the deadline and name what they awaited on timeout; the sampler records what a prober would see.
"""

from __future__ import annotations

import ast
import asyncio
import http.server
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.readyz_sampler import ReadyzSampler
from harness.wait import until, until_async

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"
USERS = ("bench", "examples", "scripts", "tests")  # everything that may use the harness
WAIT_NAMES = {"until", "wait_until", "_until", "until_async", "wait_ready", "wait_http", "until_token"}


def sources(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def functions(path: Path) -> list[str]:
    return [n.name for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def classes(path: Path) -> list[str]:
    return [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]


class TestOneHarness:
    @pytest.mark.parametrize("path", sources("bench", "examples", "harness"), ids=lambda p: str(p.relative_to(ROOT)))
    def test_no_import_of_the_test_suite(self, path: Path) -> None:
        """bench/, examples/ and harness/ import nothing from ``tests``: the harness is the shared library."""
        assert {m for m in imported_modules(path) if m == "tests" or m.startswith("tests.")} == set()

    def test_one_wait_helper(self) -> None:
        """The only wait helpers are harness/wait.py's ``until`` and ``until_async``."""
        defined = {(str(p.relative_to(ROOT)), name) for p in sources("harness", *USERS) for name in functions(p)
                   if name in WAIT_NAMES or name.startswith("_until")}
        assert defined == {("harness/wait.py", "until"), ("harness/wait.py", "until_async")}

    def test_one_agent_wrapper_and_one_sampler(self) -> None:
        """Only harness/agent_process.py builds the ``agent run`` command (``agent_command``: AgentProcess, and
        the tests that need a pipe or a namespace around it, use it); the only /readyz sampler is harness's."""
        marker = '"-m", "agent", ' + '"run"'  # how a wrapper spawns it (built here, so this file does not match)
        spawners = {str(p.relative_to(ROOT)) for p in sources("harness", *USERS) if marker in p.read_text()}
        assert spawners == {"harness/agent_process.py"}
        samplers = {(str(p.relative_to(ROOT)), c) for p in sources("harness", *USERS) for c in classes(p)
                    if not c.startswith("Test") and ("Sampler" in c or "Watcher" in c or c.startswith("AgentProc"))}
        assert samplers == {("harness/readyz_sampler.py", "ReadyzSampler"),
                            ("harness/agent_process.py", "AgentProcess")}

    def test_not_shipped_in_the_wheel(self) -> None:
        """The wheel (and so the image) packages ``agent*`` only: the harness is for this repository's runs."""
        include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
        assert include == {"include": ["agent*"]}

    @pytest.mark.parametrize("path", sources("harness"), ids=lambda p: p.name)
    def test_module_says_its_job_and_needs_no_pytest(self, path: Path) -> None:
        """Every harness module opens with a docstring and runs without pytest (the bench and examples use it)."""
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree)
        runtime = {m for m in imported_modules(path) if m.split(".")[0] in {"pytest", "pytest_asyncio", "_pytest"}}
        type_only = {a.name for n in ast.walk(tree) if isinstance(n, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(n.test) for s in n.body if isinstance(s, ast.Import)
                     for a in s.names}
        assert runtime <= type_only


class TestUntil:
    def test_returns_the_probes_value(self) -> None:
        values = iter([None, 0, "", "found"])
        assert until(lambda: next(values), 2, period=0.001) == "found"

    def test_timeout_names_what_was_awaited(self) -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"after 0\.1 s waiting for the moon"):
            until(lambda: False, 0.1, "the moon", period=0.02)
        assert 0.1 <= time.monotonic() - started < 0.1 * 2 + 1

    def test_tries_once_more_at_the_deadline(self) -> None:
        """A probe that turns true during the last sleep is seen, not reported as a timeout."""
        start = time.monotonic()
        assert until(lambda: time.monotonic() - start >= 0.05, 0.05, period=1.0)

    def test_ignored_exceptions_mean_not_yet(self) -> None:
        calls = iter([OSError("refused"), OSError("refused"), 7])

        def probe() -> int:
            item = next(calls)
            if isinstance(item, Exception):
                raise item
            return item

        assert until(probe, 2, period=0.001, ignore=(OSError,)) == 7
        with pytest.raises(ValueError):
            until(lambda: int("x"), 2, ignore=(OSError,))

    async def test_async_awaits_coroutine_probes(self) -> None:
        rounds: list[int] = []

        async def probe() -> int | None:
            rounds.append(1)
            await asyncio.sleep(0)
            return len(rounds) if len(rounds) >= 3 else None

        assert await until_async(probe, 2, period=0.001) == 3
        with pytest.raises(TimeoutError, match="waiting for a lazy text"):
            await until_async(lambda: None, 0.05, lambda: "a lazy text")


class _Status(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[http.server.ThreadingHTTPServer, type[_Status]]]:
    handler = type("Handler", (_Status,), {"status": 503})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


class TestReadyzSampler:
    async def test_records_changes_as_a_prober_sees_them(
            self, server: tuple[http.server.ThreadingHTTPServer, type[_Status]]) -> None:
        httpd, handler = server
        with ReadyzSampler(httpd.server_address[1], period=0.005) as sampler:
            assert await sampler.expect(503, after=0, timeout=5) > 0
            flipped = time.monotonic()
            handler.status = 200
            up = await sampler.expect(200, after=flipped, timeout=2)
            assert up >= flipped and sampler.wait_steady(200, 2)
            assert sampler.wait_for(404, after=0, timeout=0.05) is None
            with pytest.raises(TimeoutError, match="/readyz 404"):
                await sampler.expect(404, after=0, timeout=0.05)
        assert [s for _, s in sampler.changes] == [503, 200]
        assert sampler.first(200, after=flipped) == up and all(s.status in (200, 503) for s in sampler.samples)
