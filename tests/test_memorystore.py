"""Memorystore as it is, through the agent's own settings and Redis check: IAM tokens, TLS to an IP, usable.

Against a real TLS redis-server whose ACL user's password the test sets to each token the metadata stand-in
serves (only the newest one works for a new connection, as an expired token would not), and test-time CAs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.checks import build_check
from agent.checks.redis.check import RedisCheck
from agent.config.loader import load_settings
from agent.config.settings import Platform, Settings
from agent.config.values import ConfigError
from agent.core.model import Reason
from harness.agent_process import AgentProcess, run_cli
from harness.metadata_server import MetadataServer, stand_in
from harness.redis_server import RedisProcess, RespError
from harness.tls import Authority, Issued, TlsRedis
from harness.wait import until, until_async

HOST = "127.0.0.1"


def settings(flags: dict[str, str], config_file: str | None = None) -> Settings:
    return load_settings(flags, {}, lambda _e: (Platform.LOCAL, "test"), config_file=config_file)


def redis_check(flags: dict[str, str], timeout: float = 1.0) -> RedisCheck:
    check = build_check(settings(flags).checks[0], timeout)
    assert isinstance(check, RedisCheck)
    return check


async def settle() -> None:
    """A few passes of the loop: asyncio closes a failed TLS handshake's socket in a callback it schedules,
    which must run before the test's loop is closed (not a wait for a fact)."""
    for _ in range(3):
        await asyncio.sleep(0)


def agent_clients(server: TlsRedis) -> set[str]:
    """Ids of the connections authenticated as the ACL user ``agent`` (the check's)."""
    listing = server.cli("CLIENT", "LIST")
    assert isinstance(listing, str)
    return {line.split()[0] for line in listing.splitlines() if " user=agent " in f" {line} "}


def connections(server: TlsRedis) -> int:
    """Connections the server has accepted so far (its plain port included, which the harness uses)."""
    return int(server.info("stats")["total_connections_received"])


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def ca(tls_dir: Path) -> Authority:
    return Authority(tls_dir)


@pytest.fixture
def server_cert(ca: Authority) -> Issued:
    return ca.issue("server", ips=(HOST,))


@pytest.fixture
def tls_redis(ca: Authority, server_cert: Issued) -> Iterator[TlsRedis]:
    with TlsRedis(server_cert, ca.path) as server:
        yield server.start()


@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls_redis: TlsRedis) -> Iterator[MetadataServer]:
    """The stand-in, google-auth pointed at it, and the ACL user ``agent`` whose password is the newest token."""

    def set_password(token: str) -> None:
        reply = tls_redis.cli("ACL", "SETUSER", "agent", "on", "resetpass", f">{token}", "~*", "&*", "+@all")
        assert reply == "OK", reply

    home = tmp_path / "gcloud"
    home.mkdir()
    with stand_in(monkeypatch, home) as server:
        server.on_token = set_password
        yield server


def iam_flags(server: TlsRedis, ca: Authority, **more: str) -> dict[str, str]:
    return {"redis_url": f"rediss://agent@{HOST}:{server.tls_port}/0", "redis_auth": "iam",
            "redis_ca_file": str(ca.path), **more}


class TestIamAuthentication:
    async def test_rotation_new_connections_use_the_new_token_held_one_stays(
            self, metadata: MetadataServer, tls_redis: TlsRedis, ca: Authority) -> None:
        """After a rotation the held connection keeps working; a new one authenticates with the new token."""
        metadata.lifetime = 2  # refreshed at half its life
        check = redis_check(iam_flags(tls_redis, ca))
        try:
            assert (await check.run()).ok
            first = metadata.token
            assert check.endpoint.iam is not None and check.endpoint.iam.cached() == first
            held = agent_clients(tls_redis)
            assert len(held) == 1
            metadata.rotate()  # the next token request mints a new token; the ACL then accepts only it
            deadline = time.monotonic() + 2 * 1.0 + 1
            while check.endpoint.iam.cached() == first:  # checks keep running on the held connection
                assert (await check.run()).ok
                assert time.monotonic() < deadline, "the token was not refreshed before expiry"
                await asyncio.sleep(0.05)
            second = check.endpoint.iam.cached()
            assert second is not None and second != first and second == metadata.token
            assert (await check.run()).ok
            assert agent_clients(tls_redis) == held  # the held connection stayed, authenticated by the old token
            assert isinstance(tls_redis.cli("AUTH", "agent", first), RespError)  # the old token opens nothing now
            assert tls_redis.cli("CLIENT", "KILL", "USER", "agent") == 1
            await until_async(lambda: not check.watch.watching, 2.0, "the check saw its connection end")
            result = await check.run()
            assert result.ok, result  # a new connection: AUTH with the new token
            assert len(agent_clients(tls_redis) - held) == 1
        finally:
            await check.close()

    async def test_no_connection_attempts_while_the_token_endpoint_fails(
            self, metadata: MetadataServer, tls_redis: TlsRedis, ca: Authority) -> None:
        """Permission denied: every check fails with reason auth at once, Redis sees no connection at all,
        and token requests follow the backoff (at most 3 in 2 s) while checks run every 20 ms."""
        metadata.fail(403)
        check = redis_check(iam_flags(tls_redis, ca))
        before = connections(tls_redis)
        started, runs, details = time.monotonic(), 0, set()
        try:
            while time.monotonic() - started < 2.0:
                result = await check.run()
                runs += 1
                assert result.reason is Reason.AUTH, result
                details.add(result.detail)
                await asyncio.sleep(0.02)
        finally:
            await check.close()
        assert runs > 30
        assert connections(tls_redis) == before + 1  # only the INFO that counts them
        assert 1 <= len(metadata.token_requests) <= 3
        assert all(d.startswith("IAM token: permission denied by the token endpoint (HTTP 403)") for d in details)
        assert not any("ya29" in d for d in details)

    async def test_held_connection_outlives_its_token(self, metadata: MetadataServer, tls_redis: TlsRedis,
                                                      ca: Authority) -> None:
        """With the token expired and the endpoint unreachable, the held connection keeps the check ready."""
        metadata.lifetime = 1
        check = redis_check(iam_flags(tls_redis, ca))
        try:
            assert (await check.run()).ok
            metadata.fail("refuse")
            assert check.endpoint.iam is not None
            deadline = time.monotonic() + 1 * 2 + 1
            while check.endpoint.iam.cached() is not None:
                assert (await check.run()).ok
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert (await check.run()).ok
        finally:
            await check.close()
            metadata.heal()

    def test_check_command_in_a_fresh_process(self, metadata: MetadataServer, tls_redis: TlsRedis,
                                              ca: Authority, tmp_path: Path) -> None:
        """`check --redis-auth iam` in its own process finds the stand-in through GCE_METADATA_HOST alone,
        passes, and prints no token; with the endpoint refusing it fails with auth, naming why."""
        env = {**metadata.environ(), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
        args = ["check", "--redis-url", f"rediss://agent@{HOST}:{tls_redis.tls_port}/0", "--redis-auth", "iam",
                "--redis-ca-file", str(ca.path), "--timeout", "5s", "--log-level", "debug"]
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith("[+]redis ok")
        assert metadata.served and not any(t in proc.stdout + proc.stderr for t in metadata.served)
        metadata.fail(403)
        proc = run_cli(*args, env=env)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "[-]redis failed: auth (IAM token: permission denied by the token endpoint (HTTP 403)" in proc.stdout

    def test_iam_over_plain_redis_is_refused_at_start(self) -> None:
        """IAM with redis:// exits 2 with one line: a token never crosses the network in clear."""
        with pytest.raises(ConfigError, match="IAM authentication needs a rediss:// URL"):
            settings({"redis_url": "redis://10.0.0.3:6379/0", "redis_auth": "iam"})
        proc = run_cli("check", "--redis-url", "redis://10.0.0.3:6379/0", "--redis-auth", "iam")
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert "rediss://" in proc.stderr


class TestTlsToAnIp:
    @pytest.fixture
    def named_redis(self, ca: Authority) -> Iterator[TlsRedis]:
        """A TLS server whose certificate names redis.internal and not the IP (as Memorystore's may not)."""
        with TlsRedis(ca.issue("named", dns=("redis.internal",)), ca.path) as server:
            yield server.start()

    async def test_without_the_ip_in_the_certificate_it_is_reason_tls(self, named_redis: TlsRedis,
                                                                       ca: Authority) -> None:
        """Connecting to the IP verifies the IP: reason tls, saying the name does not match."""
        check = redis_check({"redis_url": f"rediss://{HOST}:{named_redis.tls_port}/0",
                             "redis_ca_file": str(ca.path)})
        try:
            result = await check.run()
            await settle()
            assert result.reason is Reason.TLS and "IP address mismatch" in result.detail, result
            assert "tls_server_name" in result.detail
        finally:
            await check.close()

    @pytest.mark.parametrize("flags", [{"redis_tls_server_name": "redis.internal"},
                                       {"redis_tls_skip_hostname_check": "true"}])
    async def test_server_name_or_opt_out_passes(self, named_redis: TlsRedis, ca: Authority,
                                                 flags: dict[str, str]) -> None:
        """tls_server_name verifies the certificate's name; the opt-out skips the name but keeps the chain."""
        check = redis_check({"redis_url": f"rediss://{HOST}:{named_redis.tls_port}/0",
                             "redis_ca_file": str(ca.path), **flags})
        try:
            result = await check.run()
            assert result.ok, result
        finally:
            await check.close()

    async def test_opt_out_still_refuses_another_ca(self, named_redis: TlsRedis, tls_dir: Path) -> None:
        """Skipping the host name does not skip the chain: a CA that did not sign the server is reason tls."""
        other = Authority(tls_dir, "other")
        check = redis_check({"redis_url": f"rediss://{HOST}:{named_redis.tls_port}/0",
                             "redis_ca_file": str(other.path), "redis_tls_skip_hostname_check": "true"})
        try:
            result = await check.run()
            await settle()
            assert result.reason is Reason.TLS and "certificate verify failed" in result.detail, result
        finally:
            await check.close()

    def test_tls_server_name_has_its_short_names(self, tmp_path: Path, ca: Authority) -> None:
        """The flag --tls-server-name, READINESS_AGENT_TLS_SERVER_NAME and the file key tls_server_name."""
        url = "rediss://10.0.0.3:6378/0"
        env = {"READINESS_AGENT_TLS_SERVER_NAME": "a.internal", "READINESS_AGENT_REDIS_CA_FILE": str(ca.path)}
        assert load_settings({"redis_url": url}, env, lambda _e: (Platform.LOCAL, "t")).checks[0].tls_server_name \
            == "a.internal"
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"redis_url: {url}\ntls_server_name: b.internal\nredis_ca_file: {ca.path}\n")
        assert settings({}, str(cfg)).checks[0].tls_server_name == "b.internal"
        proc = run_cli("check", "--help")
        assert "--tls-server-name" in proc.stdout and "--redis-tls-skip-hostname-check" in proc.stdout

    async def test_missing_ca_file_exits_2_and_a_vanished_one_is_reason_tls(
            self, tls_redis: TlsRedis, ca: Authority, tls_dir: Path) -> None:
        """A missing CA file is a one-line exit 2; one removed later fails the next new connection with tls."""
        missing = tls_dir / "nope.pem"
        proc = run_cli("check", "--redis-url", f"rediss://{HOST}:{tls_redis.tls_port}/0", "--redis-ca-file",
                       str(missing))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"CA file {missing}: does not exist" in proc.stderr
        check = redis_check({"redis_url": f"rediss://{HOST}:{tls_redis.tls_port}/0", "redis_ca_file": str(ca.path)})
        try:
            assert (await check.run()).ok
            ca.path.unlink()
            assert (await check.run()).ok  # the held connection carries on
            tls_redis.cli("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await until_async(lambda: not check.watch.watching, 2.0, "the check saw its connection end")
            result = await check.run()
            assert result.reason is Reason.TLS and str(ca.path) in result.detail, result
        finally:
            await check.close()

    async def test_two_ca_bundle_during_rotation(self, tls_dir: Path, ca: Authority) -> None:
        """redis_ca_file with the old and the new CA: a server on the new CA passes."""
        new = Authority(tls_dir, "new")
        both = tls_dir / "both.pem"
        both.write_bytes(ca.pem + new.pem)
        with TlsRedis(new.issue("renewed", ips=(HOST,)), new.path) as server:
            server.start()
            check = redis_check({"redis_url": f"rediss://{HOST}:{server.tls_port}/0", "redis_ca_file": str(both)})
            try:
                result = await check.run()
                assert result.ok, result
            finally:
                await check.close()


class TestUsableThroughTheCheck:
    async def test_write_canary_and_pubsub_pass_then_oom_fails(self, tls_redis: TlsRedis, ca: Authority) -> None:
        """--redis-write-canary and --redis-pubsub-roundtrip over TLS: ok, then maxmemory makes it oom."""
        check = redis_check({"redis_url": f"rediss://{HOST}:{tls_redis.tls_port}/0", "redis_ca_file": str(ca.path),
                             "redis_write_canary": "true", "redis_pubsub_roundtrip": "true",
                             "redis_canary_interval": "0"})
        try:
            assert (await check.run()).ok
            assert any(str(k).startswith("readiness-agent:canary:") for k in tls_redis.cli("KEYS", "*"))  # type: ignore[union-attr]
            tls_redis.cli("CONFIG", "SET", "maxmemory", "1")
            result = await check.run()
            assert result.reason is Reason.OOM and result.detail.startswith("write canary"), result
        finally:
            await check.close()

    async def test_client_pause_write_is_a_timeout_naming_the_pause(self, tls_redis: TlsRedis,
                                                                    ca: Authority) -> None:
        """During CLIENT PAUSE WRITE the check fails in about its timeout, saying writes are paused."""
        check = redis_check({"redis_url": f"rediss://{HOST}:{tls_redis.tls_port}/0", "redis_ca_file": str(ca.path),
                             "redis_write_canary": "true", "redis_canary_interval": "0"}, timeout=0.4)
        try:
            assert (await check.run()).ok
            assert tls_redis.cli("CLIENT", "PAUSE", "2000", "WRITE") == "OK"
            started = time.monotonic()
            result = await check.run()
            assert 0.4 - 0.02 <= time.monotonic() - started <= 0.4 * 2 + 1
            assert result.reason is Reason.TIMEOUT and "CLIENT PAUSE WRITE" in result.detail, result
        finally:
            tls_redis.cli("CLIENT", "UNPAUSE")
            await check.close()


class TestHttpCheckConfig:
    def test_http_entries_are_validated(self, tmp_path: Path) -> None:
        """type: http needs a URL; expect_status takes a code, range or class; errors are one line."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text("checks:\n  - name: auth\n    type: http\n    url: https://auth.internal/healthz\n"
                       "    expect_status: 2xx\n    required: false\n")
        (check,) = settings({}, str(cfg)).checks
        assert check.kind == "http" and check.http is not None and check.http.status == (200, 299)
        assert not check.required and check.describe() == "https://auth.internal/healthz"
        cfg.write_text("checks:\n  - name: auth\n    type: http\n    url: ftp://x/\n")
        with pytest.raises(ConfigError, match="expected an http:// or https:// URL"):
            settings({}, str(cfg))
        cfg.write_text("checks:\n  - name: auth\n    type: http\n    url: http://x/\n    expect_status: 2XX\n")
        with pytest.raises(ConfigError, match="invalid expect_status"):
            settings({}, str(cfg))


class _Health(BaseHTTPRequestHandler):
    """A real (stdlib) HTTP server's handler: answers ``status`` of its server to every GET."""

    def do_GET(self) -> None:
        status = self.server.status  # type: ignore[attr-defined]
        body = b"" if status in (204, 304) else b"ok"  # a 204 has no body (RFC 9110)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_servers() -> Iterator[list[ThreadingHTTPServer]]:
    made: list[ThreadingHTTPServer] = []
    yield made
    for server in made:
        server.shutdown()
        server.server_close()


def health(made: list[ThreadingHTTPServer], status: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((HOST, 0), _Health)
    server.status = status  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    made.append(server)
    return server


class TestRedisAndAnAuthService:
    def test_required_http_gates_optional_reports(self, redis_proc: RedisProcess, tmp_path: Path,
                                                  health_servers: list[ThreadingHTTPServer]) -> None:
        """The real agent: ready with Redis (canary, pub/sub) and a healthy auth service while an optional
        HTTP check fails; out of rotation when the required auth service answers 503."""
        auth, admin = health(health_servers, 204), health(health_servers, 503)
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            "checks:\n"
            f"  - {{name: redis, url: '{redis_proc.url}', write_canary: true, pubsub_roundtrip: true}}\n"
            f"  - {{name: auth, type: http, url: 'http://{HOST}:{auth.server_port}/healthz', expect_status: 2xx}}\n"
            f"  - {{name: admin, type: http, url: 'http://{HOST}:{admin.server_port}/', required: false}}\n")
        with AgentProcess("--config", str(cfg)) as agent:
            try:
                until(lambda: agent.get_status("/readyz") == 200, 0.5 + 3.42 * 2 + 1, what="ready")
            except TimeoutError:
                raise AssertionError(agent.output()) from None
            _, body = agent.get("/readyz?verbose")
            assert "[+]redis ok" in body and "[+]auth ok" in body
            assert "[-]admin failed: error" in body and "(optional)" in body
            auth.status = 503  # type: ignore[attr-defined]
            until(lambda: agent.get_status("/readyz") == 503, 3.42 * 2 + 1, what="not ready")
            _, body = agent.get("/readyz?verbose")
            assert "[-]auth failed" in body
