"""What every dependency check returns: ok/fail, a reason from a fixed set, and the observed latency.

The reason set is closed (design.md) so it can be a metric label and a stable word in logs and ``/readyz``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Reason(enum.StrEnum):
    """Why a check failed. Fixed set: safe as a Prometheus label value."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    LOADING = "loading"
    AUTH = "auth"
    TLS = "tls"
    MASTER_LINK_DOWN = "master_link_down"
    CLUSTER_DOWN = "cluster_down"
    READONLY = "readonly"
    BUSY = "busy"
    OOM = "oom"
    PROTOCOL = "protocol"
    DNS = "dns"
    MAINTENANCE = "maintenance"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One observation. ``detail`` is for humans (logs, /status) and never holds secrets."""

    ok: bool
    latency: float
    reason: Reason | None = None
    detail: str = ""


class Check(Protocol):
    """A dependency check. ``run`` must return within ``timeout`` seconds and never raise."""

    name: str
    required: bool

    async def run(self) -> CheckResult:
        """Observe the dependency once."""
        ...

    async def wait_lost(self) -> None:
        """Return when a persistent monitor connection to the dependency is lost (never, if none)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
