"""Mutation testing of the pure verdict and of config's value parsing, against the fast unit tests only.

Runs mutmut in a throw-away copy of the working tree (so no ``mutants/`` folder appears in the repo), then
prints, per module, how many mutants the unit tests killed, with string-literal mutants left out (changing a
message's wording is not a behaviour the unit tests should pin), and every survivor as a one-line diff.
Not part of CI's pass/fail: ``make mutation``. docs/testing.md lists the survivors judged equivalent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
TARGETS = {  # module → the fast unit tests that must kill its mutants
    "agent/core/verdict.py": ["tests/test_verdict.py", "tests/test_verdict_agent.py", "tests/test_evidence.py"],
    "agent/config/values.py": ["tests/test_config.py", "tests/test_values.py"],
    "agent/config/urls.py": ["tests/test_config.py", "tests/test_urls.py"],
}
# The one test of test_config.py that spawns ``python -m agent`` is left out: a child process does not run
# mutmut's trampolines, so it would fail the clean run (the in-process tests cover the same parsing).
CONFIG = """
[tool.mutmut]
source_paths = [{paths}]
also_copy = ["harness"]
pytest_add_cli_args_test_selection = [{tests}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-k", "not test_cli_exit_2_one_line"]
"""
STRING = re.compile(r"""(["'])XX|XX(["'])|\.(lower|upper)\(\)""")


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _diff(work: Path, mutant: str) -> str:
    shown = subprocess.run([MUTMUT, "show", mutant], cwd=work, capture_output=True, text=True).stdout
    changed = [line for line in shown.splitlines()
               if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
    return " => ".join(line[1:].strip() for line in changed)


def _message_only(diff: str) -> bool:
    """A mutant that only changes the message of an exception being raised (its wording, or no message)."""
    before, _, after = diff.partition(" => ")
    return before.startswith("raise ") and after.startswith("raise ") and before.split("(")[0] == after.split("(")[0]


def main() -> int:
    only = sys.argv[1:] or list(TARGETS)
    rows: list[tuple[str, int, int, int]] = []
    survivors: dict[str, list[str]] = defaultdict(list)
    for module in only:
        tests = [t for t in TARGETS[module] if (ROOT / t).exists()]
        with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
            work = Path(tmp)
            _copy_tree(work)
            with open(work / "pyproject.toml", "a") as handle:
                handle.write(CONFIG.format(paths=f'"{module}"', tests=", ".join(f'"{t}"' for t in tests)))
            env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation"}
            run = subprocess.run([MUTMUT, "run"], cwd=work, env=env, capture_output=True, text=True)
            if run.returncode != 0:  # e.g. the clean run failed: every mutant would count as survived
                print(f"mutmut run failed for {module} (exit {run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}")
                return 1
            results = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True,
                                     text=True).stdout
            killed = strings = total = 0
            for line in results.splitlines():
                name, _, status = line.strip().rpartition(": ")
                if not name:
                    continue
                diff = _diff(work, name) if status != "killed" else ""
                if status != "killed" and (STRING.search(diff) or _message_only(diff)):
                    strings += 1
                    continue
                total += 1
                if status in ("killed", "timeout"):
                    killed += 1
                else:
                    survivors[module].append(f"{name.rsplit('.', 1)[-1]}: {diff}")
            rows.append((module, killed, total, strings))
    print(f"{'module':<20} {'killed':>7} {'of':>5} {'score':>7} {'strings left out':>17}")
    for module, killed, total, strings in rows:
        score = 100 * killed / total if total else 100.0
        print(f"{module:<20} {killed:>7} {total:>5} {score:>6.1f}% {strings:>17}")
    for module, lines in survivors.items():
        print(f"\nsurvivors in {module}:")
        for line in lines:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
