"""What the Redis check adds for Sentinel and Cluster: where to connect, what else to ask, how to judge it.

Kept out of the check itself so the standalone path stays as it was, and the topology rules are read in one
place:

* **Sentinel** (a ``redis+sentinel://`` URL): the address to connect to comes from the sentinels
  (sentinel.py). After any failed check the connection is dropped and the master looked up
  again; while healthy a held ``+switch-master`` subscription reports a failover at once (``wait_moved``),
  and the check then moves to the new master. The node found must answer ``ROLE`` ``master``.
* **Cluster**: detected from ``INFO`` (``cluster_enabled:1``, asked with the first check on each connection),
  so a plain ``redis://`` URL of any node, or of a Memorystore Cluster discovery endpoint, works. From then on
  every check also sends ``CLUSTER INFO``, and ``cluster_state`` decides (agent/checks/redis/cluster.py). The node's own
  role does not: the app's cluster client sends each write to its slot's master, wherever the agent looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import agent.checks.redis.errors as rx
from agent.checks.redis.cluster import ClusterInfo, ClusterSlots, cluster_enabled, judge_cluster, parse_cluster_info
from agent.checks.redis.config import RedisCheckConfig
from agent.checks.redis.replies import unavailable
from agent.checks.redis.sentinel import Address, SentinelResolver
from agent.config.secretfile import SecretFile
from agent.core.model import Reason

Failure = tuple[Reason, str]
CLUSTER_INFO = ("CLUSTER", "INFO")


class Topology:
    """Per check: the address to connect to (fixed, or the sentinels' master) and the cluster rules."""

    def __init__(self, config: RedisCheckConfig, timeout: float) -> None:
        self.config = config
        self.resolver: SentinelResolver | None = None
        if config.sentinel is not None:
            self.resolver = SentinelResolver(config.sentinel, self._sentinel_password(config), timeout)
        self.cluster = False  # INFO said cluster_enabled:1 on the current connection's server
        self.cluster_allowed = True  # CLUSTER INFO may be run (not renamed away, not refused by the ACL)
        self.cluster_info: ClusterInfo | None = None  # the last CLUSTER INFO read

    @staticmethod
    def _sentinel_password(config: RedisCheckConfig) -> Callable[[], str | None]:
        if config.sentinel_password_file:
            secret = SecretFile(config.sentinel_password_file)
            return secret.read
        value = config.sentinel_password
        return lambda: value

    # ------------------------------------------------------------------------------------------- where

    @property
    def sentinel(self) -> bool:
        return self.resolver is not None

    async def address(self, fixed: Address) -> Address:
        """Where to open the next connection: ``fixed`` without Sentinel, else the master the sentinels name.

        Raises :class:`~agent.checks.redis.sentinel.SentinelFailure` (reason and detail) when there is none.
        """
        if self.resolver is None:
            return fixed
        return await self.resolver.master()

    def moved(self, connected: Address | None) -> bool:
        """True when the sentinels named another master than the one the held connection reaches."""
        return (self.resolver is not None and connected is not None and self.resolver.address is not None
                and self.resolver.address != connected)

    def failed(self) -> None:
        """After a failed check: look the master up again before the next connection."""
        if self.resolver is not None:
            self.resolver.forget()

    def connection_dropped(self) -> None:
        """A new connection may reach another server: learn cluster mode again from its INFO."""
        self.cluster = False

    async def wait_moved(self) -> Address:
        """Return the new master's address when a failover moves it (never, without Sentinel)."""
        if self.resolver is None:
            await asyncio.Event().wait()  # no topology to follow: wait until cancelled
        assert self.resolver is not None
        return await self.resolver.wait_switch()

    # ------------------------------------------------------------------------------------------- what

    def info_sections(self, sections: tuple[str, ...]) -> tuple[str, ...]:
        """The INFO sections to ask on a new connection: the check's, plus ``cluster`` to learn the mode."""
        return (*sections, "cluster") if sections and "cluster" not in sections else sections

    def commands(self) -> list[tuple[str, ...]]:
        """What to add to each check's pipeline: ``CLUSTER INFO`` in cluster mode."""
        return [CLUSTER_INFO] if self.cluster and self.cluster_allowed else []

    def learn(self, info: dict[str, str]) -> bool:
        """Read cluster mode from an INFO reply; True when it was just learned (CLUSTER INFO not yet asked)."""
        was, self.cluster = self.cluster, cluster_enabled(info)
        return self.cluster and not was and self.cluster_allowed

    def require_master(self) -> bool:
        """Whether a replica fails the check: as configured, except in cluster mode (``cluster_state`` decides)."""
        return self.config.require_master and not self.cluster

    def judge(self, reply: Any) -> Failure | None:
        """The failure a ``CLUSTER INFO`` reply shows (None when usable, or when it may not be run)."""
        if unavailable(reply):
            self.cluster_allowed = False  # renamed away or outside the ACL: judged without it (check warns)
            return None
        if isinstance(reply, rx.ResponseError):
            raise reply
        try:
            self.cluster_info = parse_cluster_info(reply)
        except ValueError as exc:
            raise rx.InvalidResponse(str(exc)) from None
        return judge_cluster(self.cluster_info)

    def slots(self) -> ClusterSlots | None:
        """The slot figures of the ``CLUSTER INFO`` read by the current check, if it read one."""
        return None if self.cluster_info is None else self.cluster_info.slots

    async def close(self) -> None:
        """Stop the sentinel subscription, if any."""
        if self.resolver is not None:
            await self.resolver.close()

