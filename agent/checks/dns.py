"""Name lookups that are bounded in time, named ``dns`` when they fail, and never hold up the agent's exit.

Why not ``loop.getaddrinfo``: it runs ``getaddrinfo`` in the loop's default executor. A resolver that never
answers then leaves the check to time out (reason ``timeout``, where the fault is DNS), and the abandoned pool
thread holds the exit for the resolver's whole retry schedule: ``asyncio.run`` waits for the default executor
(without a timeout on 3.11) and interpreter exit joins every pool thread (SIGTERM with a 1 s drain took 10.6 s).

So a lookup runs in a daemon thread of its own, one per name in flight (a check retrying against a dead
resolver joins the lookup already under way instead of starting another thread), and the caller waits for it
at most ``within`` seconds, then raises :class:`LookupTimeout` (a ``socket.gaierror``: reason ``dns``). The
thread is left to finish on its own; exit does not wait for it. An IP literal is never looked up.
:func:`open_stream` connects to the addresses found, keeping the host name for TLS (SNI and verification);
:class:`ThreadResolver` does the same lookup for aiohttp (the HTTP check).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

AddrInfo = tuple[Any, ...]
# A lookup may use the time left to its caller less this share of it (at most LOOKUP_MARGIN seconds), so a
# resolver that never answers is reported as ``dns`` just before the caller's own timeout would say ``timeout``.
LOOKUP_MARGIN = 0.05
LOOKUP_SHARE = 0.2


class LookupTimeout(socket.gaierror):
    """The resolver did not answer in time (a ``gaierror``, not a ``TimeoutError``: the fault is DNS)."""

    def __init__(self, host: str) -> None:
        super().__init__(socket.EAI_AGAIN, f"no answer from the resolver for {host}")


def lookup_budget(remaining: float) -> float:
    """How long a lookup may take when its caller has ``remaining`` seconds left."""
    return max(0.0, remaining - min(LOOKUP_MARGIN, remaining * LOOKUP_SHARE))


def _numeric(host: str, port: int, family: int) -> list[AddrInfo] | None:
    """The address itself when ``host`` is an IP literal (no lookup needed), else None."""
    for candidate in (socket.AF_INET, socket.AF_INET6):
        if family not in (socket.AF_UNSPEC, candidate):
            continue
        try:
            socket.inet_pton(candidate, host)
        except OSError:
            continue
        address = (host, port) if candidate == socket.AF_INET else (host, port, 0, 0)
        return [(candidate, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
    return None


_PENDING: dict[tuple[asyncio.AbstractEventLoop, str, int, int], asyncio.Future[list[AddrInfo]]] = {}


def _settle(key: tuple[asyncio.AbstractEventLoop, str, int, int], future: asyncio.Future[list[AddrInfo]],
            result: list[AddrInfo] | None, error: BaseException | None) -> None:
    """On the loop: hand the thread's answer to every waiter and forget the lookup."""
    if _PENDING.get(key) is future:
        del _PENDING[key]
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
        future.exception()  # retrieved: every waiter may have given up already
    else:
        assert result is not None
        future.set_result(result)


def _start(host: str, port: int, family: int) -> asyncio.Future[list[AddrInfo]]:
    """The lookup of ``host`` under way on this loop, or a new one in a daemon thread."""
    loop = asyncio.get_running_loop()
    key = (loop, host, port, family)
    pending = _PENDING.get(key)
    if pending is not None:
        return pending
    future: asyncio.Future[list[AddrInfo]] = loop.create_future()
    _PENDING[key] = future

    def work() -> None:
        result: list[AddrInfo] | None = None
        error: BaseException | None = None
        try:
            result = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except Exception as exc:  # handed to the waiters as it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, key, future, result, error)

    threading.Thread(target=work, name=f"dns:{host}", daemon=True).start()
    return future


async def resolve(host: str, port: int, within: float, family: int = socket.AF_UNSPEC) -> list[AddrInfo]:
    """``getaddrinfo`` for a stream socket, bounded by ``within`` seconds (:class:`LookupTimeout` past it)."""
    numeric = _numeric(host, port, family)
    if numeric is not None:
        return numeric
    future = _start(host, port, family)
    # asyncio.wait never cancels the shared lookup: another check may be waiting on it too.
    done, _ = await asyncio.wait([future], timeout=within)
    if not done:
        raise LookupTimeout(host)
    return future.result()


async def open_stream(host: str, port: int, within: float, *, tls: ssl.SSLContext | None = None,
                      server_hostname: str | None = None,
                      limit: int = 2 ** 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP (or TLS) stream to ``host``: looked up within ``within`` seconds, then each address in turn.

    With TLS the name verified and sent as SNI is ``server_hostname``, else ``host`` (never the address).
    """
    infos = await resolve(host, port, within)
    hostname = (server_hostname or host) if tls is not None else None
    error: OSError | None = None
    for family, _, _, _, address in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            return await asyncio.open_connection(address[0], address[1], ssl=tls, server_hostname=hostname,
                                                 limit=limit)
        except OSError as exc:  # the next address; the first error is the one reported
            error = error or exc
    raise error or socket.gaierror(socket.EAI_NONAME, f"no address for {host}")


class ThreadResolver(AbstractResolver):
    """aiohttp's resolver, by :func:`resolve`: each lookup bounded by what is left before ``deadline``."""

    def __init__(self) -> None:
        self.deadline: float | None = None  # loop time; set by the check before each request

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        within = lookup_budget(self.deadline - loop.time()) if self.deadline is not None else 30.0
        found: list[ResolveResult] = []
        for info_family, _, proto, _, address in await resolve(host, port, within, family):
            if info_family in (socket.AF_INET, socket.AF_INET6):
                found.append(ResolveResult(hostname=host, host=address[0], port=address[1], family=info_family,
                                           proto=proto, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        return found

    async def close(self) -> None:
        """Nothing to release: lookups still running end on their own."""
