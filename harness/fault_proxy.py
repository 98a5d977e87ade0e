"""A TCP proxy that injects network faults between a client and a server, for tests and benchmarks.

Why: the faults a readiness probe must survive are often not in the server but on the wire: a refused
port, a peer that vanished without a RST (half-open connection), a reset, added latency, a link that flaps.
No toxiproxy server is packaged for this machine, so this is a small asyncio proxy of our own.

``FaultProxy`` runs in the caller's event loop (``await proxy.start()``); ``ProxyThread`` runs one in a
background thread with its own loop, for sync code or when the client is another process. Modes:

- ``pass``: forward both ways (plus the configured per-direction latency).
- ``refuse``: the listening socket is closed (new connections get ECONNREFUSED) and open ones are closed.
- ``blackhole``: connections are accepted but never answered; open connections stop forwarding for good,
  like a peer that vanished (a real half-open connection does not come back either).
- ``reset``: open and new connections get a RST (``SO_LINGER`` 0, then close).
- ``flap(period_ms)``: alternate ``pass``/``refuse`` every ``period_ms``, closing open connections on refuse.

Run standalone (``python -m harness.fault_proxy TARGET_PORT``) it prints its port and reads commands such as
``refuse``, ``latency 0.1 0``, ``flap 100`` from stdin, so a benchmark in another process can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar, cast, get_args

from harness.redis_server import free_port

Mode = Literal["pass", "refuse", "blackhole", "reset"]
MODES: tuple[Mode, ...] = get_args(Mode)

T = TypeVar("T")


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a RST instead of a FIN: SO_LINGER on, timeout 0, then close without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: the client side, the upstream side, and the two pumps between them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.frozen = False  # blackholed: swallow everything from now on
        self.tasks: list[asyncio.Task[None]] = []

    def close(self, *, rst: bool = False) -> None:
        for task in self.tasks:
            task.cancel()
        if rst:
            _rst(self.client)
        else:
            self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class FaultProxy:
    """A controllable TCP proxy from ``127.0.0.1:<port>`` to ``target``; see the module docstring for modes."""

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.target = target
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.mode: Mode = "pass"
        self.latency_up = 0.0  # seconds added to client -> server chunks
        self.latency_down = 0.0  # seconds added to server -> client chunks
        self.accepted = 0  # connections accepted, whatever then happened to them
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._flapper: asyncio.Task[None] | None = None
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect: ``(host, port)``."""
        return (self.host, self.port)

    def url(self, scheme: str = "redis", suffix: str = "/0") -> str:
        """A URL pointing at the proxy, e.g. ``redis://127.0.0.1:<port>/0``."""
        return f"{scheme}://{self.host}:{self.port}{suffix}"

    @property
    def open_connections(self) -> int:
        """Connections currently held by the proxy."""
        return len(self._links)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        """Start listening (in mode ``pass``)."""
        self._started = True
        await self._listen()
        return self

    async def stop(self) -> None:
        """Stop flapping, stop listening, close every connection."""
        self._started = False
        await self._stop_flapping()
        self._unlisten()
        self._close_links()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)  # no task outlives the proxy

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control -----------------------------------------------------------------------------------------

    async def set_mode(self, mode: Mode) -> None:
        """Switch mode now (also ends ``flap``); takes effect on open connections too."""
        await self._stop_flapping()
        await self._apply(mode)

    def set_latency(self, upstream: float = 0.0, downstream: float = 0.0) -> None:
        """Delay each forwarded chunk by ``upstream`` (client -> server) / ``downstream`` seconds."""
        self.latency_up, self.latency_down = upstream, downstream

    async def flap(self, period_ms: float) -> None:
        """Alternate ``pass`` and ``refuse`` every ``period_ms``, starting with ``refuse``."""
        await self._stop_flapping()
        self._flapper = asyncio.create_task(self._flap(period_ms / 1000))

    async def _flap(self, period: float) -> None:
        modes: tuple[Mode, Mode] = ("refuse", "pass")
        i = 0
        while True:
            await self._apply(modes[i % 2])
            i += 1
            await asyncio.sleep(period)

    async def _stop_flapping(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
            await asyncio.wait([self._flapper])
            self._flapper = None

    async def _apply(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        if mode == "refuse":
            self._unlisten()
            self._close_links()
            return
        if mode == "reset":
            self._close_links(rst=True)
        elif mode == "blackhole":
            for link in self._links:
                link.frozen = True
        if self._started:
            await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            # reuse_address: re-listening on the same port must not wait for TIME_WAIT to clear.
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)

    def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()  # pending handshakes in the backlog are reset, as for a dead port
            self._server = None

    def _close_links(self, *, rst: bool = False) -> None:
        for link in list(self._links):
            link.close(rst=rst)
        self._links.clear()

    # -- forwarding --------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.close()  # stopped by stop(): asyncio's stream callback would log a cancelled handler
        finally:
            self._handlers.discard(handler)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":  # accepted in the instant before the listener closed
            writer.close()
            return
        if self.mode == "reset":
            _rst(writer)
            return
        link = _Link(writer)
        link.frozen = self.mode == "blackhole"
        self._links.add(link)
        try:
            if link.frozen:
                await self._swallow(reader)
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection(*self.target)
            except OSError:
                return  # target down: the client sees its connection closed
            link.tasks = [
                asyncio.create_task(self._pump(reader, link.upstream, link, up=True)),
                asyncio.create_task(self._pump(up_reader, writer, link, up=False)),
            ]
            # Either side ending ends the link; the other pump is cancelled by close().
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *, up: bool) -> None:
        """Copy one direction chunk by chunk, delaying each chunk by that direction's latency."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if link.frozen:
                    await self._swallow(reader)
                    return
                delay = self.latency_up if up else self.latency_down
                if delay > 0:
                    await asyncio.sleep(delay)
                if link.frozen:
                    continue
                writer.write(data)
                await writer.drain()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        """Read and drop everything until the peer closes: a black hole never answers and never resets."""
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass


class ProxyThread:
    """A ``FaultProxy`` on a background thread with its own event loop, driven from sync code.

    Every setter blocks until the proxy applied it (bounded by ``timeout``). Use as a context manager.
    """

    def __init__(
        self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 5.0
    ) -> None:
        self.proxy = FaultProxy(target, host=host, port=port)
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    @property
    def port(self) -> int:
        """The proxy's listening port."""
        return self.proxy.port

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect."""
        return self.proxy.address

    def url(self, scheme: str = "redis", suffix: str = "/0") -> str:
        """A URL pointing at the proxy."""
        return self.proxy.url(scheme, suffix)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self.proxy.accepted

    @property
    def open_connections(self) -> int:
        """Client connections currently open through the proxy."""
        return self.proxy.open_connections

    @property
    def mode(self) -> Mode:
        """The current mode (while flapping: the current half of the cycle)."""
        return self.proxy.mode

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def start(self) -> ProxyThread:
        """Start the thread and the proxy."""
        self._thread.start()
        self._call(self.proxy.start())
        return self

    def stop(self) -> None:
        """Stop the proxy, the loop and the thread, and close the loop (idempotent)."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                self._call(self.proxy.stop())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(self.timeout)
        self._loop.close()

    def set_mode(self, mode: Mode) -> None:
        """See ``FaultProxy.set_mode``."""
        self._call(self.proxy.set_mode(mode))

    def set_latency(self, upstream: float = 0.0, downstream: float = 0.0) -> None:
        """See ``FaultProxy.set_latency``."""

        async def apply() -> None:
            self.proxy.set_latency(upstream, downstream)

        self._call(apply())

    def flap(self, period_ms: float) -> None:
        """See ``FaultProxy.flap``."""
        self._call(self.proxy.flap(period_ms))

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """``python -m harness.fault_proxy TARGET_PORT [TARGET_HOST]``: a proxy driven by stdin commands."""
    if not argv or not argv[0].isdigit():
        print(main.__doc__, file=sys.stderr)
        return 2
    target = (argv[1] if len(argv) > 1 else "127.0.0.1", int(argv[0]))
    with ProxyThread(target) as proxy:
        print(proxy.port, flush=True)
        for line in sys.stdin:
            words = line.split()
            try:
                if not words:
                    continue
                if words[0] in MODES:
                    proxy.set_mode(cast(Mode, words[0]))
                elif words[0] == "latency":
                    proxy.set_latency(*map(float, words[1:3]))
                elif words[0] == "flap":
                    proxy.flap(float(words[1]))
                elif words[0] == "accepted":
                    print(proxy.accepted, flush=True)
                    continue
                else:
                    raise ValueError(f"unknown command {words[0]!r}")
                print("ok", flush=True)
            except (ValueError, IndexError) as exc:
                print(f"error {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
