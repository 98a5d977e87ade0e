"""A newcomer's first hour: `make run` against a Redis that answers but refuses the agent says so, and the test
install is not mistaken for the run install."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.fixtures import RedisFactory

ROOT = Path(__file__).resolve().parents[1]


class TestRunLocal:
    def test_a_wrong_password_is_reported_not_replaced_by_a_throwaway_redis(self, redis_factory: RedisFactory) -> None:
        """A Redis that refuses the password: exit 1 naming the check's failure; no throwaway server started."""
        redis = redis_factory(requirepass="the-right-one")
        url = f"redis://:wrong-password@127.0.0.1:{redis.port}/0"
        result = subprocess.run([str(ROOT / "scripts" / "run-local.sh"), url], capture_output=True, text=True,
                                cwd=ROOT, timeout=60, check=False)
        assert result.returncode == 1, result.stderr
        assert "a Redis answers at that address but the check fails" in result.stderr
        assert "failed: auth" in result.stderr
        assert "throwaway" not in result.stderr
        assert "wrong-password" not in result.stdout + result.stderr  # the URL's secret is never echoed


class TestMakefile:
    def test_the_test_install_has_its_own_stamp(self) -> None:
        """`make run` creates .venv/bin/readiness-agent; the test install must not take that file as its stamp
        (it did, so `make run` then `make test` found no ruff)."""
        makefile = (ROOT / "Makefile").read_text()
        venv_rule = re.search(r"^venv: (.+)$", makefile, re.M)
        assert venv_rule is not None and venv_rule.group(1).strip() == "$(VENV)/.installed-test"
        assert re.search(r"^\$\(VENV\)/\.installed-test: ", makefile, re.M)
