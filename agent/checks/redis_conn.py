"""The one connection factory for a Redis: address, TLS and credentials, for every connection the agent opens.

The probe speaks through redis-py; the monitor holds a plain asyncio stream. Both get the same SSL context
(built once from the CA, certificate and key files) and the same credentials (a mounted password file is
re-read when it changes), so a TLS or auth fix is made in one place.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agent.checkconfig import CheckConfig
from agent.secretfile import SecretFile
from agent.urls import RedisTarget


class _TlsConnection(Connection):
    """redis-py's TCP connection with our SSL context (redis-py's SSLConnection builds its own)."""

    def __init__(self, *, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ssl_context = ssl_context

    def _connection_arguments(self) -> Any:
        return {**super()._connection_arguments(), "ssl": self._ssl_context}


class RedisEndpoint:
    """Where and how to reach one Redis: opens probe connections (redis-py) and raw streams (the monitor)."""

    def __init__(self, config: CheckConfig, timeout: float) -> None:
        assert config.redis is not None
        self.config = config
        self.target: RedisTarget = config.redis
        self.timeout = timeout
        self.password_file = SecretFile(config.password_file) if config.password_file else None
        self._ssl: ssl.SSLContext | None = None

    def password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read()
        return self.target.password

    def credentials_changed(self) -> bool:
        """True when a mounted password file changed since it was last read."""
        return self.password_file is not None and self.password_file.changed()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The SSL context for ``rediss://`` (None for ``redis://``), built once."""
        if not self.target.tls:
            return None
        if self._ssl is None:
            context = ssl.create_default_context(cafile=self.config.ca_file)
            if self.config.cert_file:
                context.load_cert_chain(self.config.cert_file, self.config.key_file)
            self._ssl = context
        return self._ssl

    def probe_connection(self) -> Connection:
        """A redis-py connection with no retries, bounded timeouts and TCP keepalive (not yet connected)."""
        kwargs: dict[str, Any] = {
            "host": self.target.host,
            "port": self.target.port,
            "db": self.target.db,
            "username": self.target.username,
            "password": self.password(),
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),
            "driver_info": None,
            "socket_keepalive": True,
        }
        context = self.ssl_context()
        if context is not None:
            return _TlsConnection(ssl_context=context, **kwargs)
        return Connection(**kwargs)

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw, authenticated stream to the server, with TCP keepalive; the caller bounds it in time."""
        reader, writer = await asyncio.open_connection(self.target.host, self.target.port, ssl=self.ssl_context())
        try:
            password = self.password()
            if password is not None:
                user = self.target.username
                writer.write(resp("AUTH", *([user, password] if user else [password])))
                line = await reader.readline()
                if not line.startswith(b"+"):
                    raise rx.AuthenticationError("AUTH refused")
        except BaseException:
            writer.close()
            raise
        _keepalive(writer)
        return reader, writer


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive, so a path that died without a RST is noticed even between checks."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def resp(*parts: str) -> bytes:
    """One command in RESP (array of bulk strings)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
