"""The blocking half of the pod readiness gate: every call into the ``kubernetes`` client lives here.

``agent.gate.sync.PodGate`` runs these functions on its one worker thread, never on the event loop. The
``kubernetes`` package (~0.7 s and tens of MiB at import) is imported only inside these functions, so an agent
with the gate off never loads it; it ships as the ``kube`` extra (``pip install 'readiness-agent[kube]'``).

- ``open_session``: credentials from ``--kubeconfig`` or the in-cluster service account. In-cluster it uses the
  client's own ``InClusterConfigLoader``, whose refresh hook re-reads the projected token file every minute;
  on a ``401`` ``PodStatusWriter`` and ``EventRecorder`` call ``Session.reload`` and retry once, so a rotated
  token is picked up at once.
- ``PodStatusWriter.sync``: a strategic-merge patch of ``pods/{name}/status`` with the content type forced
  (the client's default would be json-patch, silently rewritten; a JSON merge patch would replace the whole
  ``conditions`` list). ``lastTransitionTime`` is sent only when the status differs from the server's.
  (The generated ``create_namespaced_event`` ignores ``_content_type`` and sends no Content-Type at all; the
  server would default to JSON, but the header is set explicitly through ``_headers``.)
- ``EventRecorder.record``: core/v1 Events; a repeat of the same (type, reason) within ``AGGREGATE_SECONDS``
  bumps ``count``/``lastTimestamp`` of the existing Event by a PATCH instead of creating a new object.
- ``classify``: any exception → one of ``RESULTS`` plus a short, secret-free message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
INSTALL_HINT = "the kubernetes client is not installed: pip install 'readiness-agent[kube]'"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
AGGREGATE_SECONDS = 600.0  # client-go's event correlator aggregates within 10 minutes too
MAX_MESSAGE = 1024
COMPONENT = "readiness-agent"
RESULTS = ("ok", "unauthorized", "forbidden", "not_found", "conflict", "invalid", "throttled", "server_error",
           "unreachable", "timeout", "error")
_STATUS_RESULTS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid",
                   429: "throttled"}
_SECRETISH = re.compile(r"(?i)(bearer\s+|token[=:]\s*)\S+")


class GateSetupError(ValueError):
    """A one-line, user-facing reason the gate cannot start (the CLI prints it and exits 2)."""


@dataclass
class Session:
    """A configured ``CoreV1Api``; ``reload`` re-reads the credentials (token rotation)."""

    core: Any
    reload: Callable[[], None]
    describe: str

    def close(self) -> None:
        """Close the pooled connections (call from the worker thread, after the last request)."""
        self.core.api_client.close()


@dataclass(frozen=True)
class Outcome:
    """A failed call, classified: ``result`` is one of ``RESULTS``."""

    result: str
    status: int | None
    message: str
    retry_after: float | None = None


def kubernetes_available() -> bool:
    """True when the ``kubernetes`` package can be imported (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("kubernetes") is not None


def open_session(kubeconfig: str | None, environ: Mapping[str, str] | None = None,
                 sa_dir: str = SERVICE_ACCOUNT_DIR) -> Session:
    """``--kubeconfig FILE`` when given, else the in-cluster service account; ``GateSetupError`` on failure."""
    if not kubernetes_available():
        raise GateSetupError(INSTALL_HINT)
    if kubeconfig:
        return kubeconfig_session(kubeconfig)
    return incluster_session(os.path.join(sa_dir, "token"), os.path.join(sa_dir, "ca.crt"),
                             os.environ if environ is None else environ)


def kubeconfig_session(path: str) -> Session:
    """A session from a kubeconfig file (current context); ``reload`` re-reads the file."""
    from kubernetes import client, config

    cfg = client.Configuration()

    def load() -> None:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, client_configuration=cfg, persist_config=False)
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            raise GateSetupError(f"invalid --kubeconfig {path!r}: {one_line(exc)}") from None

    load()
    _harden(cfg)
    return Session(client.CoreV1Api(client.ApiClient(cfg)), load, f"kubeconfig {path}")


def incluster_session(token_file: str, ca_file: str, environ: Mapping[str, str]) -> Session:
    """A session from the pod's service account, through the client's ``InClusterConfigLoader``."""
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    cfg = client.Configuration()
    loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=token_file, cert_filename=ca_file, try_refresh_token=True, environ=environ)

    def load() -> None:
        try:
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call] # re-reads the token file and re-installs the refresh hook
        except (config.ConfigException, OSError) as exc:
            raise GateSetupError(f"--kube-readiness-gate: no in-cluster credentials ({one_line(exc)}); "
                                 "run in a pod with a service account or give --kubeconfig") from None

    load()
    _harden(cfg)
    return Session(client.CoreV1Api(client.ApiClient(cfg)), load, "in-cluster service account")


def _harden(cfg: Any) -> None:
    # No hidden urllib3 retries (the gate's own backoff decides), and no proxy from the environment surprises.
    cfg.retries = False


def classify(exc: BaseException) -> Outcome:
    """Map an exception from the client to a metric result and a short, secret-free message."""
    from kubernetes.client.exceptions import ApiException
    from urllib3 import exceptions as u3

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 0:  # the client wraps TLS failures as status 0
            return Outcome("unreachable", None, scrub(f"TLS: {one_line(exc.reason)}"))
        result = _STATUS_RESULTS.get(status) or ("server_error" if status >= 500 else "error")
        retry_after = _retry_after(exc.headers) if status in (429, 503) else None
        return Outcome(result, status, scrub(f"HTTP {status}: {_api_message(exc)}"), retry_after)
    if isinstance(exc, u3.NewConnectionError | u3.NameResolutionError):  # urllib3 2 makes these "timeouts" too
        return Outcome("unreachable", None, scrub(one_line(exc)))
    if isinstance(exc, u3.TimeoutError):
        return Outcome("timeout", None, "no answer within the request timeout")
    if isinstance(exc, u3.HTTPError | OSError):
        reason = getattr(exc, "reason", None) or exc
        return Outcome("unreachable", None, scrub(one_line(reason)))
    return Outcome("error", None, scrub(f"{type(exc).__name__}: {one_line(exc)}"))


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _api_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def one_line(value: object) -> str:
    """``value`` as one line of at most 300 characters."""
    return " ".join(str(value).split())[:300]


def scrub(text: str) -> str:
    """``text`` with anything that looks like a bearer token or ``token=…`` replaced by ``<redacted>``."""
    return _SECRETISH.sub(lambda m: m.group(1) + "<redacted>", text)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_reauth(session: Session, call: Callable[[], Any]) -> Any:
    """Run ``call``; on 401 re-read the credentials once (a rotated token) and retry."""
    from kubernetes.client.exceptions import ApiException

    try:
        return call()
    except ApiException as exc:
        if exc.status != 401:
            raise
        session.reload()
        return call()


class PodStatusWriter:
    """Writes one condition of one pod, remembering what the server holds (for ``lastTransitionTime``)."""

    def __init__(self, session: Session, namespace: str, pod: str, condition_type: str) -> None:
        self.session = session
        self.namespace = namespace
        self.pod = pod
        self.condition_type = condition_type
        self.uid: str | None = None
        self._server_status: str | None = None  # our condition's status on the server; None = absent/unknown
        self._known = False

    def forget(self) -> None:
        """Re-read the pod before the next patch (after a 404/409: it may have been replaced)."""
        self._known = False

    def sync(self, ready: bool, reason: str, message: str, timeout: float) -> None:
        """Make the server's condition ``ready``/``reason``/``message``; raises the client's exceptions."""
        limit = (min(2.0, timeout), timeout)
        if not self._known:
            pod = _with_reauth(self.session, lambda: self.session.core.read_namespaced_pod_status(
                self.pod, self.namespace, _request_timeout=limit))
            self._learn(pod)
        status = "True" if ready else "False"
        cond: dict[str, Any] = {"type": self.condition_type, "status": status, "reason": reason,
                                "message": message[:MAX_MESSAGE]}
        if status != self._server_status:
            cond["lastTransitionTime"] = _now()
        body = {"status": {"conditions": [cond]}}
        pod = _with_reauth(self.session, lambda: self.session.core.patch_namespaced_pod_status(
            self.pod, self.namespace, body, _content_type=STRATEGIC_MERGE, _request_timeout=limit))
        self._learn(pod)

    def _learn(self, pod: Any) -> None:
        self.uid = pod.metadata.uid if pod.metadata else self.uid
        conditions = (pod.status.conditions if pod.status else None) or []
        self._server_status = next((c.status for c in conditions if c.type == self.condition_type), None)
        self._known = True


class EventRecorder:
    """core/v1 Events about one pod, aggregated per (type, reason) like client-go's correlator."""

    def __init__(self, session: Session, namespace: str, pod: str, clock: Callable[[], float] = time.monotonic):
        self.session = session
        self.namespace = namespace
        self.pod = pod
        self.clock = clock
        self._existing: dict[tuple[str, str], tuple[str, int, float]] = {}  # key → (name, count, last touched)

    def record(self, uid: str | None, etype: str, reason: str, message: str, count: int, timeout: float) -> str:
        """Create the Event, or bump the existing one's count by ``count``; returns ``created``/``bumped``."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        limit = (min(2.0, timeout), timeout)
        key = (etype, reason)
        now = _now()
        existing = self._existing.get(key)
        if existing is not None and self.clock() - existing[2] < AGGREGATE_SECONDS:
            name, total, _ = existing
            patch = {"count": total + count, "lastTimestamp": now, "message": message[:MAX_MESSAGE]}
            try:
                _with_reauth(self.session, lambda: self.session.core.patch_namespaced_event(
                    name, self.namespace, patch, _content_type=STRATEGIC_MERGE, _request_timeout=limit))
                self._existing[key] = (name, total + count, self.clock())
                return "bumped"
            except ApiException as exc:
                if exc.status != 404:  # 404: the event expired (1 h TTL); create a new one
                    raise
        name = f"{self.pod}.{time.time_ns():x}"  # client-go's naming: <object>.<unix nanos in hex>
        event = client.CoreV1Event.from_dict({
            "metadata": {"name": name, "namespace": self.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": self.pod, "namespace": self.namespace,
                               "uid": uid},
            "type": etype, "reason": reason, "message": message[:MAX_MESSAGE], "count": count,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": self.pod,
        })
        _with_reauth(self.session, lambda: self.session.core.create_namespaced_event(
            self.namespace, event, _headers={"Content-Type": "application/json"}, _request_timeout=limit))
        self._existing[key] = (name, count, self.clock())
        return "created"
