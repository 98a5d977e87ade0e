"""A TCP connect check for an app's non-Redis dependencies: the port accepts a connection in time.

Weaker than the Redis check by nature (a TCP accept proves little, which is why the Redis check exists);
offered for dependencies that have no richer protocol check here. The name is looked up as every check does
(checks/dns.py: bounded, reason ``dns``, never holding up the exit).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.checks.config import CheckConfig, Entry, key
from agent.checks.dns import LookupTimeout, lookup_budget, open_stream
from agent.config.values import host_port, parse_tcp_address
from agent.core.model import CheckResult, Reason


@dataclass(frozen=True, slots=True)
class TcpCheckConfig(CheckConfig):
    """A ``type: tcp`` entry: the ``address`` (``HOST:PORT``) that must accept a connection."""

    kind: ClassVar[str] = "tcp"
    address: tuple[str, int] = key(("", 0), parse_tcp_address)

    @classmethod
    def from_entry(cls, name: str, required: bool, entry: Entry, shared: Mapping[str, Any]) -> TcpCheckConfig:
        address = entry.require(entry.get("address", parse_tcp_address), "a tcp check needs an address HOST:PORT")
        return cls(name=name, required=required, address=address)

    def describe(self) -> str:
        return host_port(*self.address)


class TcpCheck:
    """Connect, then close. ``run`` never raises and returns within ``timeout``."""

    kind = "tcp"

    def __init__(self, config: TcpCheckConfig, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = config.name
        self.required = config.required
        self.host, self.port = config.address
        self.target = config.describe()
        self.timeout = timeout
        self.clock = clock

    async def run(self) -> CheckResult:
        """Open and close one connection."""
        started = self.clock()
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await open_stream(self.host, self.port, lookup_budget(self.timeout))
            writer.close()
        except TimeoutError:
            return CheckResult(False, self.clock() - started, Reason.TIMEOUT, "no TCP answer in time")
        except LookupTimeout:
            return CheckResult(False, self.clock() - started, Reason.DNS, "no answer from the resolver in time")
        except socket.gaierror:
            return CheckResult(False, self.clock() - started, Reason.DNS, "host name does not resolve")
        except OSError as exc:  # refused, reset, unreachable: say which, and where
            return CheckResult(False, self.clock() - started, Reason.REFUSED, f"{_why(exc)} ({self.target})")
        return CheckResult(True, self.clock() - started)

    async def close(self) -> None:
        """Nothing to release."""


def _why(exc: OSError) -> str:
    """``connection refused``, ``no route to host``: the error's own words (asyncio's text is only
    "Connect call failed" and the address tried)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return os.strerror(exc.errno).lower() if exc.errno else "connection failed"
