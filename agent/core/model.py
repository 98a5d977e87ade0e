"""The vocabulary every layer shares: states, failure reasons, check results and the check protocol.

It sits at the bottom of the package and imports nothing from it, so the pure verdict, the check adapters and
every reader speak the same words without importing each other. The reason set is closed (docs/design.md):
each value is safe as a Prometheus label and a stable word in logs and ``/readyz``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class State(enum.StrEnum):
    """Per-check and agent-level states, as named by docs/design.md and the ``state`` metric."""

    STARTING = "starting"
    STABILIZING = "stabilizing"
    READY = "ready"
    DEGRADED = "degraded"
    DRAINING = "draining"


class ReadinessMode(enum.StrEnum):
    """``always``: /readyz follows the verdict. ``startup``: gate only until the first ready."""

    ALWAYS = "always"
    STARTUP = "startup"


class Reason(enum.StrEnum):
    """Why a check failed. Fixed set: safe as a Prometheus label value."""

    REFUSED = "refused"
    MAXCLIENTS = "maxclients"  # -ERR max number of clients reached: Redis is up, and full
    TIMEOUT = "timeout"
    LOADING = "loading"
    AUTH = "auth"
    TLS = "tls"
    MASTER_LINK_DOWN = "master_link_down"
    NO_MASTER = "no_master"
    CLUSTER_DOWN = "cluster_down"
    READONLY = "readonly"
    BUSY = "busy"
    OOM = "oom"
    NOREPLICAS = "noreplicas"
    PROTOCOL = "protocol"
    DNS = "dns"
    MAINTENANCE = "maintenance"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class GaugeFamily:
    """A gauge a check kind adds to ``/metrics`` (``name`` after the agent's prefix), labelled ``check`` first.

    ``up``: one series per check of the kind, 1 when its last run passed; otherwise the series come from the
    results' :class:`Facts`. The core and the metrics know families, never a kind's meaning.
    """

    kind: str
    name: str
    help: str
    labels: tuple[str, ...] = ()
    up: bool = False


class Facts(Protocol):
    """What a check kind adds to one result for readers that do not know the kind (``/status``, metrics)."""

    def status(self) -> Mapping[str, object]:
        """Entries merged into the check's ``/status`` document."""
        ...

    def gauges(self) -> Iterable[tuple[str, tuple[str, ...], float]]:
        """``(family name, label values after check, value)`` for the kind's :class:`GaugeFamily` list."""
        ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One observation. ``detail`` is for humans (logs, /status) and never holds secrets.

    ``conclusive`` marks a failure that leaves no doubt the dependency is gone — a *fresh* connection was
    refused or reset while connecting (nothing listens) — as opposed to a timeout, an error reply or a dropped
    connection, which are weighed with the failure threshold (docs/design.md, "Evidence"). ``facts`` carries
    what the kind adds for readers (a Redis Cluster node's slots).
    """

    ok: bool
    latency: float
    reason: Reason | None = None
    detail: str = ""
    conclusive: bool = False
    facts: Facts | None = None


class Check(Protocol):
    """A dependency check. ``run`` must return within its timeout and never raise.

    ``kind`` (``redis``, ``tcp``, ``http``) and ``target`` (a secret-free address) are what readers show;
    ``required`` says whether the check gates readiness. A check that holds a connection may also watch it
    (:class:`WatchesConnection`).
    """

    name: str
    kind: str
    target: str
    required: bool

    async def run(self) -> CheckResult:
        """Observe the dependency once."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class WatchesConnection(Protocol):
    """Optional: a check that holds a connection between runs and can tell at once when the server ends it."""

    async def wait_lost(self) -> None:
        """Return when the held connection to the dependency is lost.

        Raise :class:`MonitorUnavailable` when it cannot be watched; the agent's loop retries after the next
        successful check.
        """
        ...


class ReasonedError(Exception):
    """An error that knows its reason (an IAM token, a TLS file): the checks report it without knowing its source."""

    reason: Reason = Reason.ERROR

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def described(self) -> str:
        """The secret-free detail a check result shows."""
        return self.detail


class MonitorUnavailable(Exception):
    """The monitor connection could not be opened; ``reason`` says why."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason
