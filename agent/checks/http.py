"""The HTTP check: a dependency with an HTTP health endpoint (an auth service beside Redis) answers in range.

Why beside ``redis`` and ``tcp``: a WebSocket backend often needs an auth service as much as its Redis, and a
TCP accept proves little about a web server (a proxy in front accepts while the service behind answers 502).
The check is ``GET <url>`` with no redirects followed, bounded by the check's timeout; it passes when the
status is in the expected range (``200-399`` by default, as a Kubernetes ``httpGet`` probe). ``https://``
verifies the chain against a CA file (or the system CAs) and the host name, as every TLS client here does.

One keep-alive connection is reused between checks (aiohttp's connector, limit 1), so a healthy service costs
one request per interval, not a handshake; after any failure it is dropped, and the next one uses the CA file
as it is then (agent/config/tls.py re-reads it when it changed: a rotation; gone, it is reason ``tls``). The body is
not read beyond ``MAX_BODY``: a health endpoint that streams for ever cannot hold the check. The target shown
in logs and ``/status`` drops user info and query (either may carry a credential).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import aiohttp

from agent import __version__
from agent.checks.dns import LookupTimeout, ThreadResolver
from agent.checks.http_config import HttpCheckConfig
from agent.config.tls import TlsFileError, TlsMaterial
from agent.core.model import CheckResult, Reason

MAX_BODY = 64 * 1024


def classify_http(exc: BaseException) -> tuple[Reason, str]:
    """A client error as a reason and a secret-free detail."""
    if isinstance(exc, TlsFileError):
        return Reason.TLS, exc.detail
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Reason.TIMEOUT, "no HTTP answer within the check timeout"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        cert_error = getattr(exc, "certificate_error", None)
        why = getattr(cert_error, "verify_message", None) or getattr(cert_error, "reason", None)
        return Reason.TLS, f"TLS error: {why or 'handshake failed'}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        if isinstance(exc.os_error, LookupTimeout):
            return Reason.DNS, "no answer from the resolver within the check timeout"
        return Reason.DNS, "host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorError):
        root = exc.os_error
        if isinstance(root, ssl.SSLError):
            return Reason.TLS, f"TLS error: {root.reason or type(root).__name__}"
        return Reason.REFUSED, exc.strerror or "connection failed"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return Reason.PROTOCOL, "not a valid HTTP response"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
        return Reason.REFUSED, "connection closed by the server"
    return Reason.ERROR, type(exc).__name__


class HttpCheck:
    """``GET`` the URL; ok when the status is in range. ``run`` never raises and returns within ``timeout``."""

    kind = "http"

    def __init__(self, config: HttpCheckConfig, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        target = config.http
        self.name = config.name
        self.required = config.required
        self.spec = target
        self.target = target.redacted
        self.timeout = timeout
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._resolver = ThreadResolver()  # bounded lookups named dns, never holding up the exit (checks/dns.py)
        # The CA file is re-read when it changes (a rotation), at the next new connection (agent/config/tls.py).
        self._tls = TlsMaterial(target.ca_file) if target.url.lower().startswith("https:") else None
        low, high = target.status
        self._expected = str(low) if low == high else f"{low}-{high}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = self._tls.context() if self._tls is not None else False
            connector = aiohttp.TCPConnector(ssl=context, limit=1, use_dns_cache=False, resolver=self._resolver)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": f"readiness-agent/{__version__}"},
                auto_decompress=False, trust_env=False)
        return self._session

    async def run(self) -> CheckResult:
        """One GET, bounded by ``timeout``."""
        started = self.clock()
        self._resolver.deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._get()
        except asyncio.CancelledError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()  # a broken keep-alive connection must not be reused
            reason, detail = classify_http(exc)
            return CheckResult(False, self.clock() - started, reason, detail)
        low, high = self.spec.status
        if not low <= status <= high:
            return CheckResult(False, self.clock() - started, Reason.ERROR,
                               f"HTTP {status} (expected {self._expected})")
        return CheckResult(True, self.clock() - started)

    async def _get(self) -> int:
        async with self._client().get(self.spec.url, allow_redirects=False) as response:
            # Drain a small body so the connection can be reused; a larger one closes it instead.
            if response.content_length is not None and response.content_length <= MAX_BODY:
                await response.content.read(MAX_BODY)
            else:
                response.close()
            return response.status

    async def close(self) -> None:
        """Close the keep-alive connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
