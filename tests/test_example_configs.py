"""Every example under examples/configs/ loads with the agent's own loader, and means what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config.loader import load_settings
from agent.config.settings import Platform, Settings
from harness.tls import Authority

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"
FILE_VALUE = re.compile(r"^\s*-?\s*(\w+_file):\s*(\S+)", re.MULTILINE)


def load_example(name: str, tmp_path: Path) -> Settings:
    """Load an example with every file it names (CA bundles, secrets) created under ``tmp_path``.

    The examples name the paths a pod mounts; the files are made here (a CA generated now for each
    ``ca_file``, a secret for the others), since TLS files are validated at start.
    """
    text = (EXAMPLES / name).read_text()
    ca = Authority(tmp_path, "example-ca")
    for key, path in FILE_VALUE.findall(text):
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(ca.pem if key.endswith("ca_file") else b"example-secret\n")
        text = text.replace(path, str(local))
    config = tmp_path / name
    config.write_text(text)
    return load_settings({}, {}, lambda _e: (Platform.LOCAL, "test"), config_file=str(config))


class TestExampleConfigs:
    def test_every_example_is_tested(self) -> None:
        """The examples directory holds exactly the configs this file checks."""
        assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == [
            "cluster.yaml", "memorystore-cluster-iam.yaml", "memorystore-standard.yaml", "redis-and-auth-service.yaml",
            "sentinel.yaml"]  # cluster.yaml and sentinel.yaml: tests/test_cluster.py and tests/test_sentinel.py

    def test_memorystore_standard_with_auth_and_tls(self, tmp_path: Path) -> None:
        """Standard tier: TLS on 6378 with the server CA, the AUTH string from a file, the write canary on."""
        (check,) = load_example("memorystore-standard.yaml", tmp_path).checks
        assert check.redis is not None and check.redis.tls and check.redis.port == 6378
        assert check.auth == "password" and check.password_file and check.ca_file
        assert check.write_canary and not check.pubsub_roundtrip and check.canary_interval == 10.0
        assert not check.tls_skip_hostname_check and check.tls_server_name is None

    def test_memorystore_cluster_with_iam(self, tmp_path: Path) -> None:
        """Cluster: IAM over TLS, no password file, no write canary (keys live on one shard)."""
        (check,) = load_example("memorystore-cluster-iam.yaml", tmp_path).checks
        assert check.redis is not None and check.redis.tls
        assert check.auth == "iam" and check.password_file is None and check.ca_file
        assert not check.write_canary

    def test_redis_and_an_http_auth_service(self, tmp_path: Path) -> None:
        """Redis with both probes, a required HTTP check expecting 2xx, an optional HTTPS one with its CA."""
        redis, auth, admin = load_example("redis-and-auth-service.yaml", tmp_path).checks
        assert redis.kind == "redis" and redis.write_canary and redis.pubsub_roundtrip and redis.required
        assert auth.kind == "http" and auth.required and auth.http is not None and auth.http.status == (200, 299)
        assert admin.kind == "http" and not admin.required and admin.http is not None and admin.http.ca_file

    @pytest.mark.parametrize("name", ["memorystore-standard.yaml", "memorystore-cluster-iam.yaml",
                                      "redis-and-auth-service.yaml", "sentinel.yaml", "cluster.yaml"])
    def test_opens_with_its_purpose_and_how_to_run(self, name: str) -> None:
        """Each example opens with what it is for and how to run it."""
        lines = (EXAMPLES / name).read_text().splitlines()
        assert lines[0].startswith("# ") and any("readiness-agent run --config" in line for line in lines[:4])
