"""The HTTP check against real aiohttp servers (plain and TLS with a CA made at test time)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from agent.checks.http import HttpCheck
from agent.checks.http_config import DEFAULT_STATUS, HttpCheckConfig, HttpTarget, parse_http_url, parse_status_range
from agent.core.model import Reason
from harness.redis_server import free_port
from harness.tls import Authority, Issued

Serve = Callable[..., Awaitable[str]]


class Service:
    """A real aiohttp server with the endpoints the tests need; counts requests and connections."""

    def __init__(self) -> None:
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()
        self.released = asyncio.Event()  # set at teardown: ends the hanging endpoint
        self.app = web.Application()
        self.app.router.add_get("/ok", self.ok)
        self.app.router.add_get("/status/{code}", self.status)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/stream", self.stream)

    def _seen(self, request: web.Request) -> None:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(peer[:2])

    async def ok(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text="ok")

    async def status(self, request: web.Request) -> web.Response:
        self._seen(request)
        code = int(request.match_info["code"])
        if 300 <= code < 400:
            return web.Response(status=code, headers={"Location": "/ok"})
        return web.Response(status=code, text="x")

    async def slow(self, request: web.Request) -> web.Response:
        self._seen(request)
        await self.released.wait()  # hangs until teardown
        return web.Response(text="late")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x" * 65536)
        return response


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a Service over plain HTTP or TLS (``ssl_context``); returns its base URL."""
    runners: list[web.AppRunner] = []
    services: list[Service] = []

    async def start(service: Service, ssl_context: ssl.SSLContext | None = None) -> str:
        services.append(service)
        runner = web.AppRunner(service.app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
        runners.append(runner)
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for service in services:
        service.released.set()
    for runner in runners:
        await runner.cleanup()


def server_context(issued: Issued) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    return context


def http_check(url: str, timeout: float = 0.5, status: tuple[int, int] = DEFAULT_STATUS,
               ca_file: str | None = None) -> HttpCheck:
    return HttpCheck(HttpCheckConfig(name="auth", required=True, url=url, expect_status=status, ca_file=ca_file),
                     timeout)


class TestParsing:
    def test_status_ranges(self) -> None:
        """A code, a range and a class are accepted; anything else names the accepted forms."""
        assert parse_status_range("204") == (204, 204)
        assert parse_status_range("200-299") == (200, 299)
        assert parse_status_range("2xx") == (200, 299)
        for bad in ("99", "600", "299-200", "2XX", "abc", "200-"):
            with pytest.raises(ValueError):
                parse_status_range(bad)

    def test_urls(self) -> None:
        """Only http(s) URLs with a host are accepted, and the error never repeats the URL."""
        assert parse_http_url("https://auth.internal:8443/healthz") == "https://auth.internal:8443/healthz"
        for bad in ("ftp://x/", "http:///path", "redis://h:1", "http://h:0/"):
            with pytest.raises(ValueError) as error:
                parse_http_url(bad)
            assert bad not in str(error.value)

    def test_target_hides_user_info_and_query(self) -> None:
        """The shown target keeps scheme, host, port and path only."""
        target = HttpTarget("https://user:secret@auth.internal:8443/healthz?token=abc")
        assert target.redacted == "https://auth.internal:8443/healthz"
        assert HttpTarget("http://[::1]:81").redacted == "http://[::1]:81/"


class TestHttpCheck:
    async def test_ok_reuses_one_connection(self, serve: Serve) -> None:
        """A 200 passes, and repeated checks reuse one keep-alive connection."""
        service = Service()
        check = http_check(await serve(service) + "/ok")
        try:
            for _ in range(5):
                result = await check.run()
                assert result.ok, result
            assert service.requests == 5 and len(service.peers) == 1
            assert check.kind == "http" and check.target.endswith("/ok")
        finally:
            await check.close()

    async def test_status_outside_the_range_fails(self, serve: Serve) -> None:
        """A 503 fails with reason error naming the status and the expected range."""
        check = http_check(await serve(Service()) + "/status/503")
        try:
            result = await check.run()
            assert not result.ok and result.reason is Reason.ERROR
            assert result.detail == "HTTP 503 (expected 200-399)"
        finally:
            await check.close()

    async def test_redirects_are_not_followed_and_count_by_range(self, serve: Serve) -> None:
        """A 302 passes with the default range and fails with 2xx; the redirect target is never fetched."""
        service = Service()
        base = await serve(service)
        default, strict = http_check(base + "/status/302"), http_check(base + "/status/302", status=(200, 299))
        try:
            assert (await default.run()).ok
            result = await strict.run()
            assert result.detail == "HTTP 302 (expected 200-299)"
            assert service.requests == 2
        finally:
            await default.close()
            await strict.close()

    async def test_timeout_within_the_bound(self, serve: Serve) -> None:
        """A hanging endpoint fails with reason timeout after about `timeout`."""
        check = http_check(await serve(Service()) + "/slow", timeout=0.3)
        try:
            started = time.monotonic()
            result = await check.run()
            elapsed = time.monotonic() - started
            assert result.reason is Reason.TIMEOUT
            assert 0.3 <= elapsed <= 0.3 * 2 + 1
        finally:
            await check.close()

    async def test_endless_body_does_not_hold_the_check(self, serve: Serve) -> None:
        """A streaming body is not read: the check passes on the status line, quickly."""
        check = http_check(await serve(Service()) + "/stream", timeout=1.0)
        try:
            result = await check.run()
            assert result.ok and result.latency < 1.0
        finally:
            await check.close()

    async def test_closed_port_is_refused(self) -> None:
        """Nothing listening: reason refused."""
        check = http_check(f"http://127.0.0.1:{free_port()}/")
        try:
            result = await check.run()
            assert result.reason is Reason.REFUSED
        finally:
            await check.close()

    async def test_not_http_is_protocol(self) -> None:
        """A server that answers with something that is not HTTP: reason protocol."""

        async def garbage(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"-ERR this is Redis, not HTTP\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        check = http_check(f"http://127.0.0.1:{port}/")
        try:
            result = await check.run()
            assert (result.reason, result.detail) == (Reason.PROTOCOL, "not a valid HTTP response"), result
        finally:
            await check.close()
            server.close()
            await server.wait_closed()

    async def test_server_back_after_a_failure(self, serve: Serve) -> None:
        """After a refused check the next one opens a new connection and passes."""
        service = Service()
        base = await serve(service)
        check = http_check(base + "/status/503")
        ok = http_check(base + "/ok")
        try:
            assert not (await check.run()).ok
            assert (await ok.run()).ok
        finally:
            await check.close()
            await ok.close()


class TestHttpsCheck:
    async def test_ca_file_verifies_the_chain_and_the_ip(self, serve: Serve, tmp_path: Path) -> None:
        """A server certificate for 127.0.0.1 signed by the CA file passes."""
        ca = Authority(tmp_path)
        base = await serve(Service(), server_context(ca.issue("server", ips=("127.0.0.1",))))
        check = http_check(base + "/ok", ca_file=str(ca.path))
        try:
            result = await check.run()
            assert result.ok, result
        finally:
            await check.close()

    async def test_unknown_ca_is_tls(self, serve: Serve, tmp_path: Path) -> None:
        """A certificate from another CA fails with reason tls."""
        ca, other = Authority(tmp_path, "ca"), Authority(tmp_path, "other")
        base = await serve(Service(), server_context(other.issue("server", ips=("127.0.0.1",))))
        check = http_check(base + "/ok", ca_file=str(ca.path))
        try:
            result = await check.run()
            assert result.reason is Reason.TLS and "certificate" in result.detail
        finally:
            await check.close()

    async def test_certificate_without_the_ip_is_tls(self, serve: Serve, tmp_path: Path) -> None:
        """A certificate from the right CA that does not carry the IP fails host-name verification."""
        ca = Authority(tmp_path)
        base = await serve(Service(), server_context(ca.issue("server", dns=("auth.internal",))))
        check = http_check(base + "/ok", ca_file=str(ca.path))
        try:
            result = await check.run()
            assert result.reason is Reason.TLS and "mismatch" in result.detail.lower()
        finally:
            await check.close()

    async def test_ca_rotation_and_a_vanished_ca_file(self, serve: Serve, tmp_path: Path) -> None:
        """A server moved to a new CA passes once the CA file holds it; a removed CA file is reason tls."""
        old, new = Authority(tmp_path, "old"), Authority(tmp_path, "new")
        ca_file = tmp_path / "bundle.pem"
        ca_file.write_bytes(old.pem)
        base = await serve(Service(), server_context(new.issue("server", ips=("127.0.0.1",))))
        check = http_check(base + "/ok", ca_file=str(ca_file))
        try:
            assert (await check.run()).reason is Reason.TLS
            (tmp_path / "next.pem").write_bytes(old.pem + new.pem)
            (tmp_path / "next.pem").replace(ca_file)
            assert (await check.run()).ok
            ca_file.unlink()
            assert (await check.run()).ok  # the kept connection needs no CA
            await check.close()
            result = await check.run()
            assert result.reason is Reason.TLS and str(ca_file) in result.detail, result
        finally:
            await check.close()
