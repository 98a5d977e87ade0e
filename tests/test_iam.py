"""IAM tokens through the real google-auth application-default credentials, against the metadata stand-in."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks.redis.iam import AdcFetcher, FetchedToken, IamError, TokenProvider
from harness.metadata_server import (
    DEFAULT_SCOPES,
    METADATA_MODULE,
    MetadataServer,
    point_google_auth,
    stand_in,
)
from harness.redis_server import free_port
from harness.wait import until_async


@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MetadataServer]:
    """A started stand-in, with google-auth pointed at it."""
    with stand_in(monkeypatch, tmp_path) as server:
        yield server


async def other_token(provider: TokenProvider, than: str | None) -> str | None:
    """One ``provider.token`` call, as a check makes it: the token if it differs from ``than``, else None."""
    token = await provider.token(0.05)
    return token if token != than else None


class TestMetadataStandIn:
    def test_refuses_requests_without_the_flavor_header(self, metadata: MetadataServer) -> None:
        """The stand-in answers 403 without Metadata-Flavor: Google, as the real server does."""
        import requests

        url = f"http://{metadata.host}/computeMetadata/v1/instance/service-accounts/default/token"
        assert requests.get(url, timeout=2).status_code == 403
        answer = requests.get(url, headers={"Metadata-Flavor": "Google"}, timeout=2)
        assert answer.status_code == 200 and answer.headers["Metadata-Flavor"] == "Google"
        assert answer.json()["token_type"] == "Bearer"


class TestAdcFetcher:
    def test_fetches_the_service_account_token_with_the_cloud_platform_scope(self, metadata: MetadataServer) -> None:
        """google-auth finds the metadata server, and the token it hands out is the one the stand-in served."""
        fetched = AdcFetcher()()
        assert fetched.value == metadata.token and 3500 < fetched.lifetime <= 3599
        assert metadata.scopes_asked == [",".join(DEFAULT_SCOPES)]
        assert fetched.value not in repr(fetched)

    def test_permission_denied(self, metadata: MetadataServer) -> None:
        """HTTP 403 from the token endpoint is "permission denied", with no library text."""
        metadata.fail(403)
        with pytest.raises(IamError) as error:
            AdcFetcher()()
        assert error.value.detail.startswith("permission denied by the token endpoint (HTTP 403)")
        assert "stand-in" not in error.value.detail

    def test_no_service_account(self, metadata: MetadataServer) -> None:
        """HTTP 404 says the pod has no service account."""
        metadata.fail(404)
        with pytest.raises(IamError, match="no service account for this pod"):
            AdcFetcher()()

    def test_no_credentials(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """No GOOGLE_APPLICATION_CREDENTIALS and no metadata server: "no application-default credentials"."""
        closed = f"127.0.0.1:{free_port()}"
        point_google_auth(monkeypatch, {"GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed}, tmp_path)
        try:
            with pytest.raises(IamError, match=r"^no application-default credentials"):
                AdcFetcher()()
        finally:
            monkeypatch.undo()
            importlib.reload(sys.modules[METADATA_MODULE])

    def test_unreadable_credentials_file(self, metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
        """GOOGLE_APPLICATION_CREDENTIALS naming a missing file says so, without the path's content."""
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
        with pytest.raises(IamError, match="GOOGLE_APPLICATION_CREDENTIALS names a file that cannot be read"):
            AdcFetcher()()


class TestTokenProvider:
    async def test_first_token_then_served_from_cache(self, metadata: MetadataServer) -> None:
        """The first call waits for a token; later calls within its life do no I/O."""
        provider = TokenProvider()
        token = await provider.token(5.0)
        assert token == metadata.token
        for _ in range(20):
            assert await provider.token(5.0) == token
        assert len(metadata.token_requests) == 1 and provider.attempts == 1

    async def test_refreshed_before_expiry_after_rotation(self, metadata: MetadataServer) -> None:
        """A 2 s token is refreshed at half its life, before it expires, and the rotated token is used."""
        metadata.lifetime = 2
        provider = TokenProvider()
        first = await provider.token(5.0)
        fetched_at = time.monotonic()
        metadata.rotate()
        second = await until_async(lambda: other_token(provider, first), 2 * 1.0 + 1, "a new token", ignore=(IamError,))
        elapsed = time.monotonic() - fetched_at
        assert second == metadata.token and second != first
        assert 0.9 <= elapsed < 2.0  # refresh at half the 2 s life (expires_in is counted from the server's answer)

    async def test_poke_renews_in_the_background_without_a_caller_waiting(self, metadata: MetadataServer) -> None:
        """poke() (called at every check) renews a due token though no new connection asks for one."""
        metadata.lifetime = 2
        provider = TokenProvider()
        first = await provider.token(5.0)
        metadata.rotate()
        deadline = time.monotonic() + 2 * 1.0 + 1
        while provider.cached() in (first, None):
            provider.poke()
            assert time.monotonic() < deadline, "no renewal before the token expired"
            await asyncio.sleep(0.02)
        assert provider.cached() == metadata.token != first
        assert len(metadata.token_requests) == 2

    async def test_old_token_kept_while_refresh_fails(self, metadata: MetadataServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
        """A failing refresh keeps the still-valid token in use and says so once, without the token."""
        metadata.lifetime = 2
        provider = TokenProvider(min_backoff=0.1)
        first = await provider.token(5.0)
        metadata.fail(403)
        caplog.set_level(logging.DEBUG)
        deadline = time.monotonic() + 1.6  # within the token's life, past its refresh time
        while time.monotonic() < deadline:
            assert await provider.token(0.05) == first
            await asyncio.sleep(0.02)
        assert provider.attempts >= 2 and provider.last_error is not None
        assert "permission denied" in caplog.text and first not in caplog.text
        assert caplog.text.count("IAM token refresh failed") == 1

    async def test_backoff_bounds_token_requests_while_the_endpoint_fails(self, metadata: MetadataServer) -> None:
        """With every refresh refused, attempts follow the doubling backoff (0, 0.5, 1.5 s), not the callers."""
        metadata.fail(403)
        provider = TokenProvider(rng=lambda: 0.5)  # no jitter: attempts at 0, 0.5, 1.5, 3.5 s
        started = time.monotonic()
        with pytest.raises(IamError):
            await provider.token(2.0)  # the first attempt (google-auth finds the metadata server first)
        calls, failures = 0, set()
        while time.monotonic() - started < 2.0:
            calls += 1
            try:
                await provider.token(0.05)
            except IamError as error:
                failures.add(error.detail.split(" (")[0])
            await asyncio.sleep(0.01)
        assert calls > 50
        assert 2 <= provider.attempts <= 3 and len(metadata.token_requests) == provider.attempts
        assert failures == {"permission denied by the token endpoint"}

    async def test_unreachable_is_reported_while_google_auth_still_retries(self, metadata: MetadataServer) -> None:
        """A refused metadata server is named at once, though google-auth keeps retrying for seconds."""
        metadata.lifetime = 1
        provider = TokenProvider()
        await provider.token(5.0)
        metadata.fail("refuse")
        started = time.monotonic()
        deadline = started + 3.0
        detail = None
        while time.monotonic() < deadline:
            try:
                await provider.token(0.2)
            except IamError as error:
                detail = error.detail
                if detail.startswith("metadata server unreachable"):
                    break
            await asyncio.sleep(0.02)
        assert detail == "metadata server unreachable (connection failed)"
        await provider.close()

    async def test_recovers_when_the_endpoint_heals(self, metadata: MetadataServer) -> None:
        """After failures, the first attempt the backoff allows gets a token again."""
        metadata.fail(503)
        provider = TokenProvider(fetch=_FastFetch(metadata), min_backoff=0.1)
        with pytest.raises(IamError, match="HTTP 503"):
            await provider.token(2.0)
        metadata.heal()
        token = await until_async(lambda: other_token(provider, None), 0.2 * 2 + 1, "a token", ignore=(IamError,))
        assert token == metadata.token

    async def test_close_abandons_a_hung_fetch(self, metadata: MetadataServer) -> None:
        """A metadata server that never answers bounds every call by `wait`, and close() does not wait for it."""
        metadata.fail("hang")
        provider = TokenProvider()
        started = time.monotonic()
        with pytest.raises(IamError):
            await provider.token(0.3)
        assert 0.3 <= time.monotonic() - started <= 0.3 * 2 + 1
        started = time.monotonic()
        await provider.close()
        assert time.monotonic() - started < 0.1
        metadata.heal()


class _FastFetch:
    """The stand-in's token endpoint over plain HTTP without google-auth's own retries (for backoff timing)."""

    def __init__(self, metadata: MetadataServer) -> None:
        self.url = f"http://{metadata.host}/computeMetadata/v1/instance/service-accounts/default/token"

    def __call__(self) -> FetchedToken:
        import requests

        answer = requests.get(self.url, headers={"Metadata-Flavor": "Google"}, timeout=1)
        if answer.status_code != 200:
            raise IamError(f"metadata server unreachable (HTTP {answer.status_code})")
        body = answer.json()
        return FetchedToken(body["access_token"], float(body["expires_in"]))
