"""A stand-in for kube-apiserver: exactly the endpoints the readiness gate uses, on 127.0.0.1.

No kube-apiserver can run on the test machine, so this aiohttp server implements the wire protocol of the
core/v1 endpoints that ``agent.gate.sync`` calls, following the behaviour of kube-apiserver 1.31 (unchanged for
these endpoints since 1.22):

- ``GET /api/v1/namespaces/{ns}/pods/{name}/status`` → the Pod object.
- ``PATCH /api/v1/namespaces/{ns}/pods/{name}/status`` with the patch content types the real server accepts:
  ``application/strategic-merge-patch+json`` (lists merged by their patch merge key: ``status.conditions`` by
  ``type``, ``containerStatuses`` by ``name``; ``null`` deletes a key), ``application/merge-patch+json`` (RFC 7386:
  a list in the patch replaces the whole list), ``application/json-patch+json`` (RFC 6902: add, replace,
  remove, test) and ``application/apply-patch+yaml`` (server-side apply; requires ``fieldManager``, and is
  approximated here by the same merge-by-key as strategic merge). Anything else is ``415
  UnsupportedMediaType``. Only ``status`` changes are kept, as for the real status subresource. Conditions are
  validated (``type`` set, ``status`` True/False/Unknown, ``reason`` CamelCase) → ``422 Invalid``.
- ``POST /api/v1/namespaces/{ns}/events`` (JSON, also when the Content-Type is absent, as the real server
  defaults to its first serializer; ``409 AlreadyExists`` for a taken name, ``422`` when
  ``involvedObject.namespace`` differs) and ``PATCH /api/v1/namespaces/{ns}/events/{name}`` (the same four patch
  types; ``404`` when the event is gone).

Every request needs ``Authorization: Bearer <token>`` with a token in ``tokens`` (else ``401``); every write
bumps the object's ``resourceVersion`` from one global counter; errors are ``Status`` objects like the real
server's. The control surface makes it answer ``403``/``404``/``409``/``429`` (with ``Retry-After``)/``500``
(``inject``), deny one verb on one resource as RBAC would (``deny``), or stall without answering (``stall``).
Every request is recorded in ``hits`` and every pod status write in ``writes`` (with its monotonic time); each
callable in ``watchers`` gets the pod after every status write (a watch, pushed, as controllers receive it).

Validating admission, as kube-apiserver runs a ValidatingAdmissionPolicy: every write (pod status patch, Event
create or patch) is offered, with the object as it would be stored and an admission request whose ``userInfo``
is the token's entry in ``identities`` (default: the ``readiness-agent`` service account, no ``extra``), to each
callable in ``admission``; one that returns a ``Denial`` stops the write with the real server's answer: ``403
Forbidden`` when the denial's reason is ``Forbidden``, else ``422 Invalid`` (a policy without ``reason``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import ipaddress
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

PATCH_TYPES = {
    "application/strategic-merge-patch+json": "strategic",
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/apply-patch+yaml": "apply",
}
MERGE_KEYS = {"conditions": "type", "containerStatuses": "name", "initContainerStatuses": "name"}
REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
STATUS_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 415: "UnsupportedMediaType",
                  422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 400: "BadRequest"}


@dataclass
class Hit:
    """One request as the stand-in saw it."""

    method: str
    path: str
    content_type: str
    token: str | None
    status: int
    at: float


@dataclass
class Write:
    """One applied pod status patch: when, and the pod's conditions afterwards."""

    at: float
    conditions: list[dict[str, Any]]
    content_type: str


@dataclass(frozen=True)
class Denial:
    """A validating admission policy's refusal: its name, its ``reason`` (``Forbidden`` or None) and message."""

    policy: str
    reason: str | None
    message: str


Admission = Callable[[dict[str, Any], dict[str, Any]], Denial | None]  # (request, object) → refusal or None


@dataclass
class _Fault:
    status: int
    remaining: int | None  # None = until cleared
    retry_after: int | None
    resource: str | None  # "pods/status", "events" or None for every request


@dataclass
class KubeAPI:
    """The stand-in server; ``await start()`` in the test's event loop, ``await stop()`` afterwards."""

    tokens: set[str] = field(default_factory=lambda: {"token-1"})
    ssl_context: ssl.SSLContext | None = None
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    # Called with a copy of the pod after every applied status write, in order, on the server's loop: what a
    # watch on pods delivers to the EndpointSlice controller (its own delay is the caller's to model).
    watchers: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)  # token → admission userInfo
    admission: list[Admission] = field(default_factory=list)
    port: int = 0
    _faults: list[_Fault] = field(default_factory=list)
    _denied: set[tuple[str, str]] = field(default_factory=set)
    _stalled: bool = False
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _rv: int = 1000
    _user: dict[str, Any] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> KubeAPI:
        """Listen on 127.0.0.1 (a free port chosen by the kernel)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Release stalled requests and stop serving."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            for _ in range(3):  # let the closed transports' connection_lost callbacks run on this loop
                await asyncio.sleep(0)

    @property
    def url(self) -> str:
        """Base URL, ``http://`` or ``https://`` as configured."""
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    # --- fixtures and control ------------------------------------------------------------------------------

    def add_pod(self, namespace: str, name: str, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Create a running pod (with a readinessGates entry) whose status carries ``conditions``."""
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                         "resourceVersion": self._next_rv(), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}],
                     "readinessGates": [{"conditionType": "readiness-agent.io/dependencies-ready"}]},
            "status": {"phase": "Running", "conditions": list(conditions or [])},
        }
        self.pods[(namespace, name)] = pod
        return pod

    def condition(self, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
        """The pod's condition of type ``ctype`` (None when absent or the pod is gone)."""
        pod = self.pods.get((namespace, name))
        for cond in (pod or {}).get("status", {}).get("conditions", []):
            if cond.get("type") == ctype:
                return dict(cond)
        return None

    def inject(self, status: int, *, times: int | None = None, retry_after: int | None = None,
               resource: str | None = None) -> None:
        """Answer the next ``times`` requests (every request when None) with ``status``."""
        self._faults.append(_Fault(status, times, retry_after, resource))

    def deny(self, verb: str, resource: str) -> None:
        """Forbid ``verb`` on ``resource`` (e.g. ``patch``, ``pods/status``) as a missing RBAC rule would."""
        self._denied.add((verb, resource))

    def stall(self, on: bool = True) -> None:
        """While on, accept requests and never answer them (until ``stall(False)`` or ``stop``)."""
        self._stalled = on
        if on:
            self._release = asyncio.Event()
        else:
            self._release.set()

    def clear(self) -> None:
        """Drop every injected fault, RBAC denial and stall."""
        self._faults.clear()
        self._denied.clear()
        self.stall(False)

    def pod_writes(self) -> list[Write]:
        """The applied pod status patches so far."""
        return list(self.writes)

    # --- protocol -------------------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token_or_none = token.strip() if scheme.lower() == "bearer" else None
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        resp = await self._answer(request, token_or_none, ctype)
        self.hits.append(Hit(request.method, request.path, ctype, token_or_none, resp.status, time.monotonic()))
        return resp

    async def _answer(self, request: web.Request, token: str | None, ctype: str) -> web.Response:
        if token is None or token not in self.tokens:
            return _status(401, "Unauthorized")
        if self._stalled:
            await self._release.wait()
        route = _route(request.method, request.path)
        if route is None:
            return _status(404, f"the server could not find the requested resource ({request.method} {request.path})")
        verb, resource, ns, name = route
        for fault in list(self._faults):
            if fault.resource in (None, resource):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return _status(fault.status, f"injected {fault.status}", headers)
        if (verb, resource) in self._denied:
            return _status(403, f'{resource.split("/")[0]} "{name or ""}" is forbidden: User '
                                f'"system:serviceaccount:{ns}:readiness-agent" cannot {verb} resource "{resource}" '
                                f'in API group "" in the namespace "{ns}"')
        body = await request.read()
        self._user = self.identities.get(token, {"username": f"system:serviceaccount:{ns}:readiness-agent"})
        if resource == "pods/status":
            return self._pod_status(verb, ns, name or "", ctype, body, request)
        return self._events(verb, ns, name, ctype, body)

    def _admit(self, operation: str, resource: str, ns: str, name: str, obj: dict[str, Any]) -> web.Response | None:
        """Run ``admission`` on a write; the real server's error response for the first denial, else None."""
        plural, _, sub = resource.partition("/")
        request = {"operation": operation, "namespace": ns, "name": name, "userInfo": self._user,
                   "resource": {"group": "", "version": "v1", "resource": plural}, "subResource": sub}
        for policy in self.admission:
            denial = policy(request, obj)
            if denial is not None:
                denied = (f"ValidatingAdmissionPolicy '{denial.policy}' with binding '{denial.policy}' denied "
                          f"request: {denial.message}")
                if denial.reason == "Forbidden":
                    return _status(403, f'{plural} "{name}" is forbidden: {denied}')
                return _status(422, f'{plural} "{name}" is invalid: : {denied}')
        return None

    def _pod_status(self, verb: str, ns: str, name: str, ctype: str, body: bytes, request: web.Request) -> web.Response:
        pod = self.pods.get((ns, name))
        if pod is None:
            return _status(404, f'pods "{name}" not found')
        if verb == "get":
            return web.json_response(pod)
        kind = PATCH_TYPES.get(ctype)
        if kind is None:
            return _status(415, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml, application/strategic-merge-patch+json")
        if kind == "apply" and not request.query.get("fieldManager"):
            return _status(400, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                                "is required for apply patch")
        try:
            patch = json.loads(body)  # apply-patch+yaml: JSON is YAML, and the client sends JSON
            patched = _apply(kind, copy.deepcopy(pod), patch)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return _status(400, f"invalid patch: {exc}")
        error = _validate_conditions(patched.get("status", {}).get("conditions", []))
        if error:
            return _status(422, f'Pod "{name}" is invalid: {error}')
        denied = self._admit("UPDATE", "pods/status", ns, name, patched)
        if denied is not None:
            return denied
        pod["status"] = patched.get("status", {})  # the status subresource ignores everything but status
        pod["metadata"]["resourceVersion"] = self._next_rv()
        self.writes.append(Write(time.monotonic(), copy.deepcopy(pod["status"].get("conditions", [])), ctype))
        for watcher in list(self.watchers):
            watcher(copy.deepcopy(pod))
        return web.json_response(pod)

    def _events(self, verb: str, ns: str, name: str | None, ctype: str, body: bytes) -> web.Response:
        if verb == "create":
            if ctype not in ("", "application/json"):  # no Content-Type: the server's first type, JSON
                return _status(415, f'unsupported media type "{ctype}"')
            event = json.loads(body)
            meta = event.setdefault("metadata", {})
            ev_name = meta.get("name") or (meta.get("generateName", "") + uuid.uuid4().hex[:5])
            if not ev_name:
                return _status(422, "Event is invalid: metadata.name: Required value")
            if event.get("involvedObject", {}).get("namespace") != ns:
                return _status(422, "Event is invalid: involvedObject.namespace: Invalid value: does not match")
            if (ns, ev_name) in self.events:
                return _status(409, f'events "{ev_name}" already exists')
            denied = self._admit("CREATE", "events", ns, ev_name, event)
            if denied is not None:
                return denied
            meta.update(name=ev_name, namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self._next_rv())
            self.events[(ns, ev_name)] = event
            return web.json_response(event, status=201)
        event = self.events.get((ns, name or ""))
        if event is None:
            return _status(404, f'events "{name}" not found')
        kind = PATCH_TYPES.get(ctype)
        if kind is None:
            return _status(415, f'unsupported media type "{ctype}"')
        try:
            patched = _apply(kind, copy.deepcopy(event), json.loads(body))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return _status(400, f"invalid patch: {exc}")
        denied = self._admit("UPDATE", "events", ns, name or "", patched)
        if denied is not None:
            return denied
        patched["metadata"]["resourceVersion"] = self._next_rv()
        self.events[(ns, name or "")] = patched
        return web.json_response(patched)


def _route(method: str, path: str) -> tuple[str, str, str, str | None] | None:
    m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/status", path)
    if m and method in ("GET", "PATCH"):
        return ("get" if method == "GET" else "patch"), "pods/status", m.group(1), m.group(2)
    m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/events(?:/([^/]+))?", path)
    if m and ((method == "POST" and not m.group(2)) or (method == "PATCH" and m.group(2))):
        return ("create" if method == "POST" else "patch"), "events", m.group(1), m.group(2)
    return None


def _status(code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": STATUS_REASONS.get(code, "InternalError"), "code": code}
    return web.json_response(body, status=code, headers=headers)


def _apply(kind: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    if kind == "json":
        return _json_patch(target, patch)
    if not isinstance(patch, dict):
        raise ValueError("patch must be an object")
    return _merge(target, patch, by_key=kind in ("strategic", "apply"))


def _merge(target: dict[str, Any], patch: dict[str, Any], *, by_key: bool) -> dict[str, Any]:
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # strategic-merge directives ($setElementOrder, $retainKeys): ordering only here
        if value is None:
            target.pop(key, None)
        elif by_key and key in MERGE_KEYS and isinstance(value, list) and isinstance(target.get(key), list):
            target[key] = _merge_list(target[key], value, MERGE_KEYS[key])
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge(target[key], value, by_key=by_key)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _merge_list(current: list[dict[str, Any]], patch: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    out = [dict(item) for item in current]
    for item in patch:
        if key not in item:
            raise ValueError(f"map: {item} does not contain declared merge key: {key}")
        existing = next((o for o in out if o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            out = [o for o in out if o.get(key) != item[key]]
        elif existing is None:
            out.append({k: v for k, v in item.items() if v is not None})
        else:
            _merge(existing, item, by_key=True)
    return out


def _json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise ValueError("json patch must be a list")
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = target
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent[last]
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(idx, op["value"])
                else:
                    parent[idx] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return target


def _validate_conditions(conditions: list[dict[str, Any]]) -> str | None:
    for i, cond in enumerate(conditions):
        if not cond.get("type"):
            return f"status.conditions[{i}].type: Required value"
        if cond.get("status") not in ("True", "False", "Unknown"):
            return f"status.conditions[{i}].status: Unsupported value: {cond.get('status')!r}"
        reason = cond.get("reason")
        if reason and not REASON_RE.match(reason):
            return f"status.conditions[{i}].reason: Invalid value: {reason!r}"
    return None


# --- test-side helpers: credentials for the real client ------------------------------------------------------


def write_kubeconfig(path: Path, server: str, token: str, namespace: str = "default",
                     ca_file: Path | None = None) -> Path:
    """A kubeconfig with one cluster, one bearer-token user and one current context, as ``kubectl`` writes."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "stand-in", "cluster": cluster}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [{"name": "stand-in",
                      "context": {"cluster": "stand-in", "user": "agent", "namespace": namespace}}],
        "current-context": "stand-in",
    }
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def make_tls(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA generated now and a server certificate for 127.0.0.1 signed by it: (CA file, server SSL context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain)
    return ca_file, ctx
