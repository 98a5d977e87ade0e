"""Redis Cluster: tell a cluster node from a standalone server, and judge ``CLUSTER INFO`` into ready or not.

Why its own module: a cluster node answers ``PING`` with ``PONG`` and ``ROLE`` with ``master`` while the
cluster it belongs to has lost a third of its slots; only ``CLUSTER INFO`` says so. ``cluster_state`` is the
server's own verdict (it already honours ``cluster-require-full-coverage``: with ``no``, a cluster missing
slots stays ``ok`` and serves the slots it has), so readiness follows it; the slot counts (ok, possibly
failing, failing) are reported alongside for ``/status`` and the metrics. ``INFO`` never carries
``cluster_state``: it only says whether the server runs in cluster mode (``cluster_enabled:1``).

Pure code: it parses reply text, it opens nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.core.model import GaugeFamily, Reason

TOTAL_SLOTS = 16384
SLOTS_GAUGE = GaugeFamily("redis", "redis_cluster_slots",
                          "Redis Cluster slots by state (ok, pfail, fail) as the checked node last saw them.",
                          ("state",))


@dataclass(frozen=True, slots=True)
class ClusterSlots:
    """A Redis Cluster node's view of the 16384 slots: the facts a Redis check's result carries for readers."""

    state: str
    ok: int
    pfail: int
    fail: int

    def status(self) -> Mapping[str, object]:
        return {"cluster": {"state": self.state, "slots_ok": self.ok, "slots_pfail": self.pfail,
                            "slots_fail": self.fail}}

    def gauges(self) -> Iterable[tuple[str, tuple[str, ...], float]]:
        return [(SLOTS_GAUGE.name, (name, ), count)
                for name, count in (("ok", self.ok), ("pfail", self.pfail), ("fail", self.fail))]


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What ``CLUSTER INFO`` says about the cluster as this node sees it."""

    state: str
    slots_assigned: int
    slots_ok: int
    slots_pfail: int
    slots_fail: int
    known_nodes: int
    size: int

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def slots(self) -> ClusterSlots:
        """The figures ``/status`` and the metrics report."""
        return ClusterSlots(self.state, self.slots_ok, self.slots_pfail, self.slots_fail)

    def describe(self) -> str:
        """``cluster_state:fail (slots ok 10923/16384, pfail 0, fail 5461)``: for logs and /status."""
        return (f"cluster_state:{self.state} (slots ok {self.slots_ok}/{TOTAL_SLOTS}, pfail {self.slots_pfail}, "
                f"fail {self.slots_fail})")


def cluster_enabled(info: dict[str, str]) -> bool:
    """True when ``INFO`` (its ``cluster`` section, or the default sections) says ``cluster_enabled:1``."""
    return info.get("cluster_enabled") == "1"


def _fields(raw: object) -> dict[str, str]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    return fields


def _count(fields: dict[str, str], key: str) -> int:
    value = fields.get(key, "0")
    return int(value) if value.isascii() and value.isdigit() else 0


def parse_cluster_info(raw: object) -> ClusterInfo:
    """``CLUSTER INFO`` text into :class:`ClusterInfo`; ``ValueError`` when it has no ``cluster_state``."""
    fields = _fields(raw)
    state = fields.get("cluster_state")
    if not state:
        raise ValueError("CLUSTER INFO did not answer a cluster_state")
    return ClusterInfo(
        state=state[:16],
        slots_assigned=_count(fields, "cluster_slots_assigned"),
        slots_ok=_count(fields, "cluster_slots_ok"),
        slots_pfail=_count(fields, "cluster_slots_pfail"),
        slots_fail=_count(fields, "cluster_slots_fail"),
        known_nodes=_count(fields, "cluster_known_nodes"),
        size=_count(fields, "cluster_size"),
    )


def judge_cluster(info: ClusterInfo) -> tuple[Reason, str] | None:
    """``cluster_down`` with the slot figures unless ``cluster_state`` is ``ok``; None when usable."""
    if info.ok:
        return None
    return Reason.CLUSTER_DOWN, info.describe()
