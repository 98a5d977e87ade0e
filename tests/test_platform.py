"""Platform detection: every branch, with injected inputs, and the metadata probe against a local server."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.config.loader import load_settings
from agent.config.platform import detect_platform, probe_metadata_server
from agent.config.settings import Platform, Source


def never(_env: Mapping[str, str]) -> bool:
    raise AssertionError("the metadata server must not be probed outside Kubernetes")


class TestDetectPlatform:
    @pytest.mark.parametrize("var", ["K_SERVICE", "K_REVISION", "CLOUD_RUN_JOB"])
    def test_cloud_run_variables_mean_gcp(self, var: str) -> None:
        """Any Cloud Run variable means GCP, without probing the metadata server."""
        platform, why = detect_platform({var: "x"}, probe=never)
        assert platform is Platform.GCP and var in why

    def test_gke_when_kubernetes_and_metadata_answers(self) -> None:
        """Kubernetes plus a metadata server that answers means GCP (GKE)."""
        platform, why = detect_platform({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, probe=lambda _e: True)
        assert platform is Platform.GCP and "GKE" in why

    def test_kubernetes_without_metadata_is_local(self) -> None:
        """Kubernetes elsewhere (no metadata server) is local."""
        platform, _ = detect_platform({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, probe=lambda _e: False)
        assert platform is Platform.LOCAL

    def test_plain_machine_is_local(self) -> None:
        """No Cloud Run variables and no Kubernetes: local, and no probe."""
        platform, why = detect_platform({}, probe=never)
        assert platform is Platform.LOCAL and "not in Kubernetes" in why

    def test_empty_cloud_run_variable_is_ignored(self) -> None:
        """An empty K_SERVICE does not count."""
        assert detect_platform({"K_SERVICE": ""}, probe=never)[0] is Platform.LOCAL


class _Metadata(BaseHTTPRequestHandler):
    """A local stand-in for the GCE metadata server, speaking its real HTTP protocol for the probe's path:
    it demands the ``Metadata-Flavor: Google`` request header and answers with the same response header."""

    flavor = "Google"

    def do_GET(self) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send_response(403)
            self.end_headers()
            return
        body = b"1234567890"
        self.send_response(200)
        self.send_header("Metadata-Flavor", self.flavor)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _NotMetadata(_Metadata):
    flavor = "Something-else"


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def metadata_host() -> Iterator[str]:
    yield from _serve(_Metadata)


@pytest.fixture
def impostor_host() -> Iterator[str]:
    yield from _serve(_NotMetadata)


class TestMetadataProbe:
    def test_answers_true_for_a_metadata_server(self, metadata_host: str) -> None:
        """A server that answers with Metadata-Flavor: Google is recognised."""
        assert probe_metadata_server({"GCE_METADATA_HOST": metadata_host}) is True

    def test_false_without_the_flavor_header(self, impostor_host: str) -> None:
        """Any other HTTP server is not a metadata server."""
        assert probe_metadata_server({"GCE_METADATA_HOST": impostor_host}) is False

    def test_false_when_nothing_listens(self, metadata_host: str) -> None:
        """A refused connection answers False quickly."""
        host = metadata_host.rsplit(":", 1)[0] + ":1"
        assert probe_metadata_server({"GCE_METADATA_HOST": host}, timeout=0.3) is False

    def test_gke_end_to_end_sets_the_60s_deadline(self, metadata_host: str) -> None:
        """Kubernetes plus a real metadata answer resolves auto to GCP and the 60 s deadline, source platform."""
        env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "GCE_METADATA_HOST": metadata_host}
        s = load_settings({}, env, detect_platform)
        assert s.resolved_platform is Platform.GCP
        assert (s.startup_timeout, s.sources["startup_timeout"]) == (60.0, Source.PLATFORM)
        assert s.effective()["platform"] == {"value": "auto", "source": "default", "resolved": "gcp"}
