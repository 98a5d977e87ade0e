"""The container image, without a Docker engine: the Dockerfile's shape, its .dockerignore, its dependency lock,
and its exact install steps run in a clean directory as the image's non-root user.

No Docker engine runs here (and none in CI), so the build is checked in parts. The shape tests read the
Dockerfile: one Python patch version pinned by digest for both stages, the dependencies installed from
requirements.lock with hashes and without resolution, a runtime stage that copies nothing but the venv (no wheel
layer), a non-root numeric USER. The lock tests hold requirements.lock to pyproject.toml (every runtime and
`kube` requirement pinned within its range, nothing else of ours, every pin hashed). The install tests take the
build stage's RUN command verbatim from the Dockerfile, change only the venv path, and run it as uid 65532 with a
Python that user can execute and pyproject's requires-python admits; the resulting venv then runs
`readiness-agent check` against a real redis-server and imports the Kubernetes client. hadolint runs in
tests/test_deploy.py (TestDockerfile).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from harness.redis_server import RedisProcess
from tests.test_deploy import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE_UID = 65532
VENV = "/opt/venv"
# The venv measured 219 MiB on disk (docs/deploying.md "Container image"); this budget catches a wheel cache, a
# second copy of a dependency or an unintended extra.
VENV_BUDGET_MB = 260
INSTALL_TIMEOUT = 300  # seconds: a cold pip cache downloads every dependency
DIGEST_PINNED = r"python:3\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}"


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
    def test_one_python_patch_version_pinned_by_digest(self, stages: list[Stage]) -> None:
        """Both stages start from the same python:X.Y.Z-slim-<debian>@sha256:<digest> image (a re-pushed tag
        cannot change the build), so the copied venv's links hold."""
        assert len(stages) == 2
        assert stages[0].base == stages[1].base
        assert re.fullmatch(DIGEST_PINNED, stages[0].base), stages[0].base

    def test_build_installs_the_lock_with_hashes_then_the_agent_offline(self, stages: list[Stage]) -> None:
        """The build stage installs requirements.lock into /opt/venv with --require-hashes and nothing resolved
        (--no-deps), then the agent with no index and no dependencies, drops the build backend, and runs
        `pip check`; no pip cache anywhere."""
        [run] = stages[0].args("RUN")
        pip = f"python -m pip --python {VENV}/bin/python"
        steps = [step.strip() for step in run.split("&&")]
        assert steps[0] == f"python -m venv --without-pip {VENV}"
        assert all(step.startswith(pip) for step in steps[1:]), steps
        lock, agent, uninstall, check = steps[1:]
        assert {"install", "--no-cache-dir", "--require-hashes", "--no-deps", "-r", LOCK.name} <= set(lock.split())
        assert {"install", "--no-cache-dir", "--no-deps", "--no-index", "--no-build-isolation"} <= set(agent.split())
        assert agent.split()[-1] == "."
        assert uninstall.split()[-1] == "setuptools" and check.split()[len(pip.split())] == "check"

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
        assert sources == ["pyproject.toml", "README.md", LOCK.name, "agent"]
        for source in [*sources, "agent/cli.py", "agent/checks/__init__.py"]:
            assert dockerignore_admits(source, patterns), source
        for outside in [".venv/bin/python", ".git/config", "tests/test_image.py", "harness/wait.py",
                        "deploy/cloudrun/service.yaml",
                        "agent/__pycache__/cli.cpython-311.pyc", "agent/checks/__pycache__/x.pyc", "Dockerfile"]:
            assert not dockerignore_admits(outside, patterns), outside


# ------------------------------------------------------------------------------------ the dependency lock


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {canonical name: (version, sha256 hashes)}. Every line must be `name==version` with
    only --hash options: an unpinned name, a URL, an extra or an index/find-links line (a machine's own
    mirror) fails here."""
    lines = [line for line in LOCK.read_text().splitlines() if not line.lstrip().startswith("#")]
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in filter(str.strip, re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()):
        spec, *options = line.split()
        name, pinned, version = spec.partition("==")
        assert pinned and re.fullmatch(r"[A-Za-z0-9._-]+", name), line
        assert all(option.startswith("--hash=sha256:") for option in options), line
        pins[canonicalize_name(name)] = (version, [option.removeprefix("--hash=sha256:") for option in options])
    return pins


def image_requirements() -> list[Requirement]:
    """What the image installs: the runtime dependencies, the `kube` extra, and the build backend."""
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["kube"],
                                     *PYPROJECT["build-system"]["requires"]]]
    return [req for req in reqs if req.marker is None or req.marker.evaluate()]


class TestLock:
    def test_every_image_requirement_is_pinned_within_its_range(self) -> None:
        """Each runtime, `kube` and build-backend requirement of pyproject.toml is in the lock at a version its
        range admits: a requirement added or tightened without `make lock` fails here, not in a Docker build."""
        pins = locked()
        for req in image_requirements():
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is not in {LOCK.name}: run make lock"
            assert req.specifier.contains(pins[name][0], prereleases=True), f"{req}, locked {pins[name][0]}: make lock"

    def test_nothing_but_the_image_is_locked(self) -> None:
        """redis-py is a test dependency (the agent speaks RESP itself): not in the image, so not in the lock;
        neither are the agent itself nor the test tools."""
        pins = locked()
        assert not {"redis", "readiness-agent", "pytest", "hypothesis", "mypy", "ruff"} & pins.keys()

    def test_every_pin_is_hashed(self) -> None:
        """`pip install --require-hashes` refuses a pin without a hash; each has at least one sha256."""
        pins = locked()
        assert len(pins) > len(image_requirements())
        for name, (_, hashes) in pins.items():
            assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name

    def test_the_lock_comes_from_make_lock(self) -> None:
        """The header pip-compile writes carries the options of the Makefile's `lock` target."""
        header = " ".join(itertools.takewhile(lambda line: line.startswith("#"), LOCK.read_text().splitlines()))
        for option in ["--extra=kube", "--generate-hashes", "--allow-unsafe", "--build-deps-for=wheel",
                       "--no-emit-index-url", "--no-emit-find-links"]:
            assert option in header, option


# ------------------------------------------------------------------------------- the install, as uid 65532


def as_image_user(cmd: list[str]) -> list[str]:
    """The command run as the image's uid when we are root; as ourselves (already not root) otherwise."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop to the image's uid"
    return [setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--", *cmd]


def user_env(workdir: Path) -> dict[str, str]:
    """A clean environment: our PATH shim first, the pip/proxy settings of this machine, nothing else (and the
    library path of our interpreter's copy, when that is the one used: see copy_own_python)."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.lower().endswith("_proxy")}
    return {**keep, "PATH": f"{workdir / 'bin'}:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir / "tmp"),
            "LANG": "C.UTF-8", "LD_LIBRARY_PATH": str(workdir / "lib")}


def copy_own_python(workdir: Path) -> str | None:
    """Our interpreter's installation (binary, libpython, standard library, pip; no tests, no site-packages)
    copied into the work dir's bin/ and lib/, root-owned and world-readable: a Python installed under /root
    (pyenv) is out of reach of the image's uid, and the system's may be older than requires-python. The copy
    sits where the `python` link does (as /usr/local/bin and /usr/local/lib in the image), so the venv's
    interpreter, whose home is the link's directory, finds its standard library. None where our installation
    is not a relocatable prefix/bin + prefix/lib/pythonX.Y layout."""
    base, version = Path(sys.base_prefix), f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib, binary = base / "lib" / version, base / "bin" / version
    if not ((stdlib / "os.py").is_file() and binary.is_file() and (stdlib / "site-packages" / "pip").is_dir()):
        return None
    shutil.copy2(binary, workdir / "bin" / version)
    shutil.copytree(stdlib, workdir / "lib" / version, symlinks=True, ignore=shutil.ignore_patterns(
        "site-packages", "test", "idlelib", "tkinter", "turtledemo", "config-*"))
    shutil.copytree(stdlib / "site-packages" / "pip", workdir / "lib" / version / "site-packages" / "pip")
    for lib in (base / "lib").glob("libpython*.so*"):
        shutil.copy2(lib, workdir / "lib" / lib.name, follow_symlinks=False)
    return str(workdir / "bin" / version)


def python_candidates(workdir: Path) -> Iterator[str]:
    """Ours, the system's, and last (only if all those fail: it costs a copy) a copy of ours."""
    yield from filter(None, [sys.executable, shutil.which("python3.11"), "/usr/local/bin/python3", "/usr/bin/python3"])
    if copy := copy_own_python(workdir):
        yield copy


def link_image_user_python(workdir: Path) -> None:
    """Put a Python with pip that the image's uid can run and that pyproject's requires-python admits on its
    PATH as `python` (ours when it may, else the system's, else a copy of ours), probing each candidate exactly
    as the RUN command will call it."""
    link = workdir / "bin" / "python"
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    tried = []
    for candidate in python_candidates(workdir):
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.realpath(candidate))
        probe = subprocess.run(
            as_image_user(["bash", "-c", 'python -c "import pip, platform; print(platform.python_version())"']),
            capture_output=True, text=True, env=user_env(workdir), cwd=workdir, check=False)
        tried.append(f"{candidate}: {(probe.stdout.strip() or probe.stderr.strip()[-200:])}")
        if probe.returncode == 0 and requires.contains(probe.stdout.strip()):
            return
    pytest.fail(f"no Python {requires} with pip runnable by uid {IMAGE_UID}: {tried}", pytrace=False)


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
    try:
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
    finally:  # also when no Python qualifies or the install times out
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
class TestDockerfileInstall:
    def test_install_steps_succeed_as_the_image_user(self, installed: Installed) -> None:
        """The build stage's RUN command installs the agent as uid 65532 (`pip check` included), into a venv with
        no pip of its own and no build backend left."""
        assert installed.result.returncode == 0, installed.result.stdout[-3000:] + installed.result.stderr[-3000:]
        assert (installed.venv / "bin" / "readiness-agent").is_file()
        assert not (installed.venv / "bin" / "pip").exists()
        assert not list(installed.venv.glob("lib/python3*/site-packages/setuptools")), "the build backend stayed"
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
