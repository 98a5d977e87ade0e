"""A server on the Redis wire protocol that misbehaves on purpose: huge, endless, malformed or unasked replies.

No real redis-server can be made to send these (that is the point: a proxy, a wrong port or a broken server
can), so this fake implements just enough of RESP2 for the commands the agent sends — ``AUTH``, ``SELECT``,
``CLIENT SETNAME``, ``PING``, ``ROLE``, ``WAIT``, ``INFO``, ``EXISTS`` — answered as Redis 7 answers them, and one
chosen command (``bad_command``) is answered the bad way ``mode`` says:

* ``huge``: a bulk string of ``size`` bytes, really sent (in 1 MiB writes, while the client reads);
* ``stream``: ``+`` followed by endless bytes without a line end;
* ``garbage``: a reply that is not RESP;
* ``deep``: arrays nested 1,000 deep;
* ``wide``: an array of 10 million integers, really sent;
* ``fat``: a valid reply of ``size`` bytes (``ROLE``: ``master``, 0, and one bulk of ``size`` bytes);
* ``unasked``: the right reply, then an extra one nobody asked for;
* ``error``: an error reply no Redis master gives (``-ERR this proxy does not support …``), as proxies do;
* ``simple``: a well-formed simple string that is not the answer (``+HELLO``: ``PING`` not answering ``PONG``).

It counts connections and the bytes it managed to send, so tests can show the client stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

MIB = 1024 * 1024
INFO_TEXT = b"# Persistence\r\nloading:0\r\nasync_loading:0\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


@dataclass
class HostileRedis:
    """``async with HostileRedis("INFO", "huge", size=...) as server``: listens on 127.0.0.1:<port>."""

    bad_command: str
    mode: str
    size: int = 100 * MIB
    port: int = 0
    connections: int = 0
    bytes_sent: int = 0
    open_connections: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # commands received, by name
    refuse: tuple[str, ...] = ()  # commands answered "-ERR unknown command", as after rename-command
    _server: asyncio.Server | None = None
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> HostileRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_idle(self, timeout: float) -> None:
        """Until no client connection is open (TimeoutError after ``timeout``)."""
        if self.open_connections:
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_connections += 1
        self._idle.clear()
        try:
            while True:
                command = await _read_command(reader)
                if command is None:
                    return
                name = command[0].upper()
                self.calls[name] = self.calls.get(name, 0) + 1
                if name in self.refuse:
                    await self._send(writer, b"-ERR unknown command '" + name.encode() + b"'\r\n")
                elif name == self.bad_command:
                    await self._misbehave(writer, name)
                else:
                    await self._send(writer, _answer(command))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            if not self.open_connections:
                self._idle.set()
            writer.close()
            self._tasks.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.bytes_sent += len(data)

    async def _misbehave(self, writer: asyncio.StreamWriter, name: str) -> None:
        if self.mode == "huge":
            await self._send(writer, b"$%d\r\n" % self.size)
            for _ in range(self.size // MIB):
                await self._send(writer, b"x" * MIB)
        elif self.mode == "stream":
            await self._send(writer, b"+")
            while True:
                await self._send(writer, b"y" * MIB)
        elif self.mode == "garbage":
            await self._send(writer, b"?this is not RESP\r\n")
        elif self.mode == "deep":
            await self._send(writer, b"*1\r\n" * 1000 + b":1\r\n")
        elif self.mode == "wide":
            await self._send(writer, b"*10000000\r\n")
            for _ in range(100):
                await self._send(writer, b":1\r\n" * 100_000)
        elif self.mode == "fat":
            await self._send(writer, b"*3\r\n" + bulk(b"master") + b":0\r\n" + bulk(b"z" * self.size))
        elif self.mode == "error":
            await self._send(writer, b"-ERR this proxy does not support " + name.encode() + b"\r\n")
        elif self.mode == "simple":
            await self._send(writer, b"+HELLO\r\n")
        elif self.mode == "unasked":
            await self._send(writer, _answer([name]) + b"+SURPRISE\r\n")
        else:
            raise ValueError(self.mode)


def _answer(command: list[str]) -> bytes:
    name = command[0].upper()
    if name == "PING":
        return b"+PONG\r\n"
    if name == "ROLE":
        return b"*3\r\n" + bulk(b"master") + b":0\r\n*0\r\n"
    if name == "INFO":
        return bulk(INFO_TEXT)
    if name in ("EXISTS", "WAIT"):
        return b":0\r\n"
    if name in ("AUTH", "SELECT", "CLIENT"):
        return b"+OK\r\n"
    return b"-ERR unknown command '" + name.encode() + b"'\r\n"


async def _read_command(reader: asyncio.StreamReader) -> list[str] | None:
    """One RESP array of bulk strings (what clients send), or None at EOF."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        header = await reader.readuntil(b"\r\n")
        count = int(header[1:-2])
        parts = []
        for _ in range(count):
            size = int((await reader.readuntil(b"\r\n"))[1:-2])
            parts.append((await reader.readexactly(size + 2))[:-2].decode())
        return parts
    return None
