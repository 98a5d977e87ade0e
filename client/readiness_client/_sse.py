"""A minimal Server-Sent Events reader over one HTTP/1.1 GET, with the standard library only.

It speaks just enough HTTP for the agent's ``/watch`` (docs/design.md, "The watch protocol"): a status line,
headers, then a body that is chunked or runs to the end of the connection. Every read is bounded (a line, a
chunk, the headers), so a confused peer cannot make the app buffer without limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_LINE = 16 * 1024  # an SSE line of the agent is ~120 bytes
MAX_HEADERS = 64


class StreamRefused(Exception):
    """The server answered, but not with a stream (``status`` and the ``Retry-After`` seconds, if any)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event: its name (``message`` when unnamed), its data (``data:`` lines joined), its ``id``."""

    name: str
    data: str
    id: str | None = None

    def json(self) -> object:
        return json.loads(self.data)


HEARTBEAT = Event("heartbeat", "")  # what a comment line is reported as: proof the stream is alive


class _Body:
    """The response body as lines, undoing chunked transfer coding when the server used it."""

    def __init__(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        self.reader = reader
        self.chunked = chunked
        self.buffer = b""
        self.eof = False

    async def _more(self) -> bool:
        if self.eof:
            return False
        if not self.chunked:
            data = await self.reader.read(4096)
            self.eof = not data
            self.buffer += data
            return bool(data)
        size_line = await self.reader.readuntil(b"\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            self.eof = True
            return False
        if size > MAX_LINE * 4:
            raise ValueError("chunk too large")
        self.buffer += await self.reader.readexactly(size)
        await self.reader.readexactly(2)  # CRLF after the chunk
        return True

    async def line(self) -> str | None:
        """The next line without its end of line; None at the end of the body."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ValueError("line too long")
            if not await self._more():
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")


async def open_stream(url: str, timeout: float) -> tuple[asyncio.StreamWriter, _Body]:
    """Connect and send the GET; return the writer (to close) and the body, or raise StreamRefused/OSError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    host, port = parts.hostname, parts.port or 80
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\nAccept: text/event-stream\r\n"
                         "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode())
            status_line = (await reader.readuntil(b"\n")).decode("latin-1").split()
            status = int(status_line[1]) if len(status_line) >= 2 and status_line[1].isdigit() else 0
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADERS):
                line = (await reader.readuntil(b"\n")).decode("latin-1").strip()
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            else:
                raise ValueError("too many headers")
        except BaseException:
            writer.close()
            raise
    if status != 200:
        writer.close()
        retry = headers.get("retry-after", "")
        raise StreamRefused(status, float(retry) if retry.isdigit() else None)
    return writer, _Body(reader, "chunked" in headers.get("transfer-encoding", "").lower())


async def events(body: _Body) -> AsyncIterator[Event]:
    """Parse SSE events from ``body``: comment lines come out as :data:`HEARTBEAT`."""
    name, event_id = "", None
    data: list[str] = []
    while (line := await body.line()) is not None:
        if line == "":
            if data or name:
                yield Event(name or "message", "\n".join(data), event_id)
            name, data = "", []
            continue
        if line.startswith(":"):
            yield HEARTBEAT
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
