"""Platform detection: are we on Google Cloud (Cloud Run or GKE) or somewhere else?

The answer changes defaults (startup deadline 60 s on GCP, 10 s elsewhere; JSON logs on GCP), so it must be
visible and testable: inputs (the environment mapping and the metadata-server probe) are injected, and the
result carries a human reason that is logged once and shown in ``/status``.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Mapping

from agent.config.settings import Platform

CLOUD_RUN_VARS = ("K_SERVICE", "K_REVISION", "CLOUD_RUN_JOB")
METADATA_HOST = "metadata.google.internal"
MetadataProbe = Callable[[Mapping[str, str]], bool]


def probe_metadata_server(environ: Mapping[str, str], timeout: float = 0.5) -> bool:
    """True when the GCE metadata server answers with ``Metadata-Flavor: Google`` within ``timeout``.

    ``GCE_METADATA_HOST`` (the variable google-auth honours) overrides the host, which is how tests point this
    at a local server speaking the same protocol. Runs in a daemon thread so a slow DNS lookup cannot hold
    start-up longer than ``timeout``.
    """
    host = environ.get("GCE_METADATA_HOST") or METADATA_HOST
    url = f"http://{host}/computeMetadata/v1/instance/id"
    result: list[bool] = []

    def ask() -> None:
        request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append(response.headers.get("Metadata-Flavor") == "Google")
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=ask, name="metadata-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.1)
    return bool(result and result[0])


def detect_platform(
    environ: Mapping[str, str], probe: MetadataProbe = probe_metadata_server
) -> tuple[Platform, str]:
    """Resolve ``platform=auto``: Cloud Run variables, or Kubernetes plus a GCE metadata server, mean GCP."""
    for var in CLOUD_RUN_VARS:
        if environ.get(var):
            return Platform.GCP, f"Cloud Run ({var} is set)"
    if environ.get("KUBERNETES_SERVICE_HOST"):
        if probe(environ):
            return Platform.GCP, "GKE (Kubernetes, and the GCE metadata server answered)"
        return Platform.LOCAL, "Kubernetes, but no GCE metadata server answered"
    return Platform.LOCAL, "no Cloud Run variables and not in Kubernetes"
