"""What the pod readiness gate says for a verdict: condition reasons, and the verdict-store listener.

Kept apart from ``agent.gate.sync`` (the worker) because it speaks the agent's vocabulary (snapshots, check reasons)
while the worker only knows ``publish(ready, reason, message)``. Re-exported by ``agent.gate.sync``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.core.model import CheckResult
    from agent.core.snapshot import AgentSnapshot
    from agent.core.store import Change


class Publisher(Protocol):
    """What the listener needs of ``PodGate``."""

    def publish(self, ready: bool, reason: str | None, message: str) -> None: ...


CONDITION_REASONS = {
    None: "DependenciesReady", "refused": "RedisRefused", "timeout": "RedisTimeout", "loading": "RedisLoading",
    "auth": "RedisAuthFailed", "tls": "RedisTLSFailed", "master_link_down": "RedisMasterLinkDown",
    "cluster_down": "RedisClusterDown", "readonly": "RedisReadOnly", "busy": "RedisBusy",
    "oom": "RedisOutOfMemory", "protocol": "RedisProtocolError", "dns": "RedisDNSFailed",
    "maintenance": "Maintenance", "error": "CheckError", "draining": "Draining", "starting": "Starting",
    "stabilizing": "Stabilizing", "degraded": "Degraded", "noreplicas": "RedisNoReplicas",
    "no_master": "RedisNoMaster", "maxclients": "RedisMaxClients",
}


def disabled_status() -> dict[str, object]:
    """``/status`` for an agent without the gate."""
    return {"enabled": False}


def condition_reason(ready: bool, reason: str | None) -> str:
    """The condition's CamelCase reason for the agent's check reason word (``NotReady`` for unknown words)."""
    if ready:
        return CONDITION_REASONS[None]
    return CONDITION_REASONS.get(reason, "NotReady") if reason is not None else "NotReady"


def verdict_of(snapshot: AgentSnapshot) -> tuple[bool, str | None, str]:
    """``(ready, reason word, message)`` for ``PodGate.publish`` from the agent's snapshot.

    The reason is the first not-ready required check's ``why()`` (its failure reason, or its state while it
    stabilizes), ``draining`` while draining; the message is ``why_not_ready()`` (``redis: refused``).
    """
    if snapshot.ready:
        return True, None, "all required checks ready"
    if snapshot.draining:
        return False, "draining", "draining: the agent is shutting down"
    why = next((c.why() for c in snapshot.checks.values() if c.required and not c.ready), str(snapshot.state))
    return False, why, snapshot.why_not_ready()


class GateListener:
    """A verdict-store listener that publishes to a ``PodGate`` on every agent-level change or ``/readyz`` flip."""

    def __init__(self, gate: Publisher) -> None:
        self.gate = gate

    def publish_snapshot(self, snapshot: AgentSnapshot) -> None:
        """Publish the current verdict (call once right after ``gate.start()``)."""
        self.gate.publish(*verdict_of(snapshot))

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        """Single observations do not move the condition."""

    def changed(self, change: Change) -> None:
        if change.check is None or change.ready_flipped is not None:
            self.publish_snapshot(change.snapshot)

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        """The deadline does not change readiness (the verdict does)."""
