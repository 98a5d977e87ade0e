"""The container image, without a Docker engine: the Dockerfile's shape, its .dockerignore, and its exact
install steps run in a clean directory as the image's non-root user.

No Docker engine runs here (and none in CI), so the build is checked in two halves. The shape tests read the
Dockerfile: one pinned Python patch version for both stages, the `kube` extra installed, a runtime stage that
copies nothing but the venv (no wheel layer), a non-root numeric USER. The install tests take the build
stage's RUN command verbatim from the Dockerfile, change only the venv path, and run it as uid 65532 with a
Python >= 3.11 that user can execute; the resulting venv then runs `readiness-agent check` against a real
redis-server and imports the Kubernetes client. hadolint runs in tests/test_deploy.py (TestDockerfile).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.redis_server import RedisProcess
from tests.test_deploy import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE_UID = 65532
VENV = "/opt/venv"
# The venv measured 225 MB on disk (README "Container image"); this budget catches a wheel cache, a second
# copy of a dependency or an unintended extra.
VENV_BUDGET_MB = 260
INSTALL_TIMEOUT = 300  # seconds: a cold pip cache downloads every dependency


@dataclass
class Stage:
    """One FROM ... stage of a Dockerfile: its base image, name and (instruction, arguments) pairs."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, continuation lines joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        args = re.sub(r"\s+", " ", args.strip())
        if instruction.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            stages[-1].instructions.append((instruction.upper(), args))
    return stages


def dockerignore_admits(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) decides; `!`
    re-admits. Good enough for the patterns used here (`*`, `!name`, `!dir/`, `**/name`)."""
    admitted = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes) or (
                pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, bare) for part in parts)):
            admitted = negate
    return admitted


def ignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


class TestDockerfileShape:
    def test_one_pinned_python_patch_version(self, stages: list[Stage]) -> None:
        """Both stages start from the same python:X.Y.Z-slim-<debian> image, so the copied venv's links hold."""
        assert len(stages) == 2
        assert stages[0].base == stages[1].base
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", stages[0].base), stages[0].base

    def test_build_installs_the_agent_with_the_kube_extra_into_a_venv(self, stages: list[Stage]) -> None:
        """The build stage installs `.[kube]` (the readiness gate's client) into /opt/venv, with no pip cache."""
        [run] = stages[0].args("RUN")
        assert f"python -m venv --without-pip {VENV}" in run
        assert '".[kube]"' in run and "--no-cache-dir" in run and f"--python {VENV}/bin/python" in run

    def test_runtime_stage_copies_only_the_venv(self, stages: list[Stage]) -> None:
        """The runtime stage takes the venv from the build stage and nothing else: no wheels, no pip step."""
        runtime = stages[1]
        assert runtime.args("COPY") == [f"--from={stages[0].name} {VENV} {VENV}"]
        assert all("pip" not in run for run in runtime.args("RUN"))
        assert not any("wheel" in args for stage in stages for _, args in stage.instructions)
        assert any(f"PATH={VENV}/bin:$PATH" in env for env in runtime.args("ENV"))
        assert runtime.args("USER") == [str(IMAGE_UID)]

    def test_dockerignore_admits_exactly_the_build_inputs(self, stages: list[Stage]) -> None:
        """Every COPY source reaches the build context; the venv, git, tests, harness and bytecode do not."""
        patterns = ignore_patterns()
        sources = [src for args in stages[0].args("COPY") for src in args.split()[:-1]]
        assert sources == ["pyproject.toml", "README.md", "agent"]
        for source in [*sources, "agent/cli.py", "agent/checks/__init__.py"]:
            assert dockerignore_admits(source, patterns), source
        for outside in [".venv/bin/python", ".git/config", "tests/test_image.py", "harness/wait.py",
                        "deploy/cloudrun/service.yaml",
                        "agent/__pycache__/cli.cpython-311.pyc", "agent/checks/__pycache__/x.pyc", "Dockerfile"]:
            assert not dockerignore_admits(outside, patterns), outside


# ------------------------------------------------------------------------------- the install, as uid 65532


def as_image_user(cmd: list[str]) -> list[str]:
    """The command run as the image's uid when we are root; as ourselves (already not root) otherwise."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop to the image's uid"
    return [setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--", *cmd]


def user_env(workdir: Path) -> dict[str, str]:
    """A clean environment: our PATH shim first, the pip/proxy settings of this machine, nothing else."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.lower().endswith("_proxy")}
    return {**keep, "PATH": f"{workdir / 'bin'}:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir / "tmp"),
            "LANG": "C.UTF-8"}


def link_image_user_python(workdir: Path) -> None:
    """Put a Python >= 3.11 with pip that the image's uid can run on its PATH as `python` (ours when it may,
    else the system's), probing each candidate exactly as the RUN command will call it."""
    link = workdir / "bin" / "python"
    candidates = [sys.executable, shutil.which("python3.11"), "/usr/local/bin/python3", "/usr/bin/python3"]
    for candidate in filter(None, candidates):
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.realpath(candidate))
        probe = subprocess.run(
            as_image_user(["bash", "-c", 'python -c "import sys, pip; assert sys.version_info >= (3, 11)"']),
            capture_output=True, env=user_env(workdir), cwd=workdir, check=False)
        if probe.returncode == 0:
            return
    pytest.fail(f"no Python >= 3.11 with pip runnable by uid {IMAGE_UID} among {candidates}", pytrace=False)


def chown_tree(path: Path) -> None:
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, IMAGE_UID, IMAGE_UID)


@dataclass
class Installed:
    venv: Path
    workdir: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def installed(stages: list[Stage]) -> Iterator[Installed]:
    """The build stage replayed: its COPY sources into WORKDIR, then its RUN command verbatim (only the venv
    path moved into the temp dir), as uid 65532. The temp dir sits directly in the system temp dir, which the
    image's uid can traverse (pytest's own tmp_path parents are private to us)."""
    workdir = Path(tempfile.mkdtemp(prefix="readiness-agent-image-"))
    workdir.chmod(0o755)
    (workdir / "bin").mkdir()
    (workdir / "tmp").mkdir()
    src = workdir / stages[0].args("WORKDIR")[0].lstrip("/")
    src.mkdir(parents=True)
    for args in stages[0].args("COPY"):
        *sources, dest = args.split()
        for source in sources:
            target = src / dest / (Path(source).name if dest.endswith("/") else "")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
            else:
                shutil.copy(ROOT / source, target)
    chown_tree(workdir)
    link_image_user_python(workdir)
    venv = workdir / "opt" / "venv"
    [run] = stages[0].args("RUN")
    command = run.replace(VENV, str(venv))
    result = subprocess.run(as_image_user(["bash", "-ec", command]), capture_output=True, text=True,
                            env=user_env(workdir), cwd=src, timeout=INSTALL_TIMEOUT, check=False)
    yield Installed(venv, workdir, result)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
class TestDockerfileInstall:
    def test_install_steps_succeed_as_the_image_user(self, installed: Installed) -> None:
        """The build stage's RUN command installs the agent as uid 65532, into a venv with no pip of its own."""
        assert installed.result.returncode == 0, installed.result.stdout[-3000:] + installed.result.stderr[-3000:]
        assert (installed.venv / "bin" / "readiness-agent").is_file()
        assert not (installed.venv / "bin" / "pip").exists()
        assert not list(installed.venv.rglob("*.whl"))
        owners = {p.stat().st_uid for p in [installed.venv, *installed.venv.iterdir()]}
        assert owners == {os.geteuid() if os.geteuid() != 0 else IMAGE_UID}

    def test_installed_agent_checks_a_real_redis(self, installed: Installed) -> None:
        """The venv's entrypoint runs `readiness-agent check` as uid 65532 against redis-server: exit 0."""
        with RedisProcess() as redis:
            redis.start()
            result = subprocess.run(
                as_image_user([str(installed.venv / "bin" / "readiness-agent"), "check", "--redis-url", redis.url,
                               "--platform", "local"]),
                capture_output=True, text=True, env=user_env(installed.workdir), cwd=installed.workdir,
                timeout=30, check=False)
        assert result.returncode == 0 and "[+]redis ok" in result.stdout, result.stdout + result.stderr

    def test_kube_extra_is_in_the_venv(self, installed: Installed) -> None:
        """The Kubernetes client (the readiness gate's dependency) imports from the venv."""
        result = subprocess.run(
            as_image_user([str(installed.venv / "bin" / "python"), "-c", "import kubernetes.client"]),
            capture_output=True, text=True, env=user_env(installed.workdir), cwd=installed.workdir, timeout=60,
            check=False)
        assert result.returncode == 0, result.stderr

    def test_venv_stays_within_its_size_budget(self, installed: Installed) -> None:
        """The venv (the image's only layer on top of the base) stays under its budget."""
        size = sum(p.lstat().st_size for p in installed.venv.rglob("*") if not p.is_symlink() and p.is_file())
        assert size < VENV_BUDGET_MB * 1024 * 1024, f"{size / 1024 / 1024:.0f} MB"
