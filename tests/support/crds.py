"""Validation of our custom resources against their projects' published CRD schemas (tests/schemas/).

kubernetes-validate knows only built-in kinds, so PodMonitoring, ServiceMonitor, BackendConfig,
HealthCheckPolicy and GCPBackendPolicy are checked here with ``jsonschema`` against the schemas kept in
tests/schemas/ (sources and digests in its README). A CRD's ``openAPIV3Schema`` does not forbid unknown fields:
the API server prunes them silently and ``kubectl --validate=strict`` rejects them. We apply the stricter
reading, as kubeconform's ``-strict`` does: every object schema that lists ``properties`` and neither sets
``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``, so a
misspelled field fails. CEL rules (``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

# (apiVersion, kind) -> schema file in tests/schemas/.
CRD_FILES = {
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "monitoring.googleapis.com_podmonitorings.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("networking.gke.io/v1", "HealthCheckPolicy"): "networking.gke.io_healthcheckpolicies.yaml",
    ("networking.gke.io/v1", "GCPBackendPolicy"): "networking.gke.io_gcpbackendpolicies.yaml",
    ("cloud.google.com/v1", "BackendConfig"): "cloud.google.com_backendconfig_v1.json",
}
OBJECT_META = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
    "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
}}


def recorded_digests() -> dict[str, str]:
    """file name -> sha256 as recorded in tests/schemas/README.md."""
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (SCHEMAS / "README.md").read_text(), re.MULTILINE)
    return dict(rows)


def tighten(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every closed object schema (see the module docstring)."""
    if isinstance(schema, list):
        return [tighten(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: tighten(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The tightened JSON schema of one custom resource version, with metadata checked as ObjectMeta."""
    name = CRD_FILES[(api_version, kind)]
    path = SCHEMAS / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert recorded_digests().get(name) == digest, f"{name}: sha256 {digest} differs from tests/schemas/README.md"
    if path.suffix == ".json":
        schema = json.loads(path.read_text())
    else:
        crd = yaml.safe_load(path.read_text())
        group, version = api_version.split("/")
        assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind, name
        served = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served")]
        assert served, f"{name}: {api_version} is not a served version"
        schema = served[0]["schema"]["openAPIV3Schema"]
    schema = tighten(copy.deepcopy(schema))
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def crd_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of one custom resource (empty when it is valid)."""
    schema = crd_schema(doc["apiVersion"], doc["kind"])
    validator = jsonschema.Draft7Validator(schema)
    return [f"{doc['kind']}/{doc['metadata'].get('name')}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def is_crd(doc: dict[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in CRD_FILES
