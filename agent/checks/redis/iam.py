"""IAM authentication for Redis (``--redis-auth iam``): the AUTH password is a short-lived access token.

Memorystore for Redis Cluster and Memorystore for Valkey authenticate a connection with an OAuth 2.0 access
token of the pod's service account (IAM role ``roles/redis.dbConnectionUser`` or
``roles/memorystore.dbConnectionUser``). A token is valid for about an hour and is needed only to open a
connection: a connection authenticated with it survives its expiry. So the provider

* fetches tokens through google-auth's application-default credentials (GKE Workload Identity and Cloud Run
  serve them from the metadata server; ``GOOGLE_APPLICATION_CREDENTIALS`` works too). google-auth arrives
  with google-cloud-logging; it is imported only when IAM is on;
* refreshes a token well before it expires (``margin``: 5 minutes, or half the lifetime of a short one), in a
  daemon thread, so a check never waits on the token endpoint while a valid token is at hand;
* while the token endpoint fails, retries with a doubling, jittered backoff (``min_backoff`` to
  ``max_backoff``) and answers at once with the last failure in between: no token means no new connection, so
  the rate of connection attempts (which IAM limits) stays bounded by the backoff, not the check interval;
* says why in words a reader can act on, never with the token or the library's raw text: no credentials, the
  metadata server unreachable, or permission denied (:class:`IamError`, reason ``auth``).

A token is a secret: it is never logged, and google-auth's own loggers are turned down to errors (their retry
warnings would repeat every few seconds while the metadata server is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.core.model import Reason, ReasonedError
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_MARGIN = 300.0  # refresh this long before expiry (Memorystore tokens live 3600 s)


class IamError(ReasonedError):
    """No usable token; ``detail`` is a secret-free sentence (the check's reason is ``auth``)."""

    reason = Reason.AUTH

    @property
    def described(self) -> str:
        return f"IAM token: {self.detail}"


@dataclass(frozen=True, slots=True)
class FetchedToken:
    """A token and how many seconds it stays valid from when it was fetched."""

    value: str
    lifetime: float

    def __repr__(self) -> str:  # never print the token, even in a traceback or a debugger
        return f"FetchedToken(value=<{len(self.value)} chars>, lifetime={self.lifetime:.0f})"


Fetch = Callable[[], FetchedToken]


class _Recorder:
    """Wraps google-auth's HTTP transport and remembers what the last request met, in words.

    google-auth retries a failing metadata server for several seconds before it raises; the provider needs the
    cause at once and without the library's text (which may quote response bodies).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.status: int | None = None
        self.transport: str | None = None

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> Any:
        import requests

        try:
            response = self.inner(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        except Exception as exc:
            cause = exc.__cause__ or exc
            self.status = None
            self.transport = "timed out" if isinstance(cause, requests.exceptions.Timeout) else "connection failed"
            raise
        self.status, self.transport = response.status, None
        return response


class AdcFetcher:
    """Fetch a token through application-default credentials (found once, refreshed on every call)."""

    def __init__(self, scopes: tuple[str, ...] = SCOPES) -> None:
        self.scopes = scopes
        self._credentials: Any = None
        self._request: _Recorder | None = None

    def progress(self) -> str | None:
        """What the fetch running now has met so far (google-auth may still be retrying), or None."""
        request = self._request
        if request is None or (request.transport is None and (request.status or 0) < 400):
            return None
        return _explain(request, None)

    def __call__(self) -> FetchedToken:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        for name in ("google.auth", "google.auth.compute_engine._metadata", "google.auth.transport"):
            logging.getLogger(name).setLevel(logging.ERROR)
        request = self._request = _Recorder(google.auth.transport.requests.Request())
        transport: Any = request  # duck-typed as google.auth.transport.Request
        try:
            if self._credentials is None:
                self._credentials, _project = google.auth.default(scopes=list(self.scopes), request=transport)
            self._credentials.refresh(transport)
        except google.auth.exceptions.DefaultCredentialsError:
            raise IamError(_no_credentials()) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            raise IamError(_explain(request, exc)) from None
        token, expiry = self._credentials.token, self._credentials.expiry
        if not token:
            raise IamError("the token endpoint answered without a token")
        lifetime = 3600.0
        if expiry is not None:
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            lifetime = (expiry - now).total_seconds()
        return FetchedToken(str(token), lifetime)


def _no_credentials() -> str:
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return ("no usable application-default credentials: GOOGLE_APPLICATION_CREDENTIALS names a file that "
                "cannot be read or is not a credential")
    return ("no application-default credentials: GOOGLE_APPLICATION_CREDENTIALS is unset and no metadata "
            "server answered (Workload Identity not enabled for this pod?)")


def _explain(request: _Recorder, exc: Exception | None) -> str:
    if request.status in (401, 403):
        return (f"permission denied by the token endpoint (HTTP {request.status}): the service account may not "
                "mint tokens (Workload Identity binding, roles/iam.workloadIdentityUser)")
    if request.status == 404:
        return "the metadata server has no service account for this pod (HTTP 404)"
    if request.transport is not None:
        return f"metadata server unreachable ({request.transport})"
    if request.status is not None and request.status >= 500:
        return f"metadata server unreachable (HTTP {request.status})"
    return f"token refresh failed ({type(exc).__name__})" if exc is not None else "token refresh failed"


class TokenProvider:
    """The current token for new connections; ``token(wait)`` never waits longer than ``wait``.

    ``fetch`` runs in a daemon thread (a stuck metadata server cannot hold the event loop or the process exit).
    """

    def __init__(self, fetch: Fetch | None = None, *, clock: Callable[[], float] = time.monotonic,
                 min_backoff: float = 0.5, max_backoff: float = 30.0, jitter: float = 0.2,
                 margin: float = REFRESH_MARGIN, rng: Callable[[], float] = random.random) -> None:
        self.fetch: Fetch = fetch or AdcFetcher()
        self.clock = clock
        self.min_backoff, self.max_backoff, self.jitter = min_backoff, max_backoff, jitter
        self.margin = margin
        self.rng = rng
        self._value: str | None = None
        self._expires = float("-inf")
        self._refresh_at = float("-inf")
        self._next_attempt = float("-inf")
        self._failures = 0
        self._inflight: asyncio.Future[FetchedToken] | None = None
        self.last_error: str | None = None
        self.attempts = 0
        self._closed = False

    def poke(self) -> None:
        """Start a refresh in the background when one is due (no waiting): called at every check, so a token
        is renewed before it expires even while no new connection is needed."""
        if self._value is None or self.clock() >= self._refresh_at:
            self._maybe_start(self.clock())

    def cached(self) -> str | None:
        """A token that is still valid now, without any I/O (None if there is none)."""
        return self._value if self.clock() < self._expires else None

    async def token(self, wait: float) -> str:
        """A valid token; starts a refresh when one is due. Raises :class:`IamError` when none is at hand.

        With a valid token it returns at once (refreshing in the background when due). Without one it waits
        up to ``wait`` for a refresh already running or allowed by the backoff, else fails at once.
        """
        now = self.clock()
        if self._value is not None and now < self._refresh_at:
            return self._value
        self._maybe_start(now)
        current = self.cached()
        if current is not None:
            return current
        inflight = self._inflight
        if inflight is None:
            raise IamError(self.last_error or "no token yet")
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(inflight)
        except TimeoutError:
            raise IamError(self._progress() or self.last_error or "waiting for a token from the metadata server") \
                from None
        except IamError:
            raise IamError(self.last_error or "token refresh failed") from None
        current = self.cached()
        if current is None:
            raise IamError("the token endpoint handed out a token that had already expired")
        return current

    def _progress(self) -> str | None:
        progress = getattr(self.fetch, "progress", None)
        return progress() if callable(progress) else None

    def _maybe_start(self, now: float) -> None:
        if self._closed or self._inflight is not None or now < self._next_attempt:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FetchedToken] = loop.create_future()
        future.add_done_callback(self._done)
        self._inflight = future
        self.attempts += 1

        def work() -> None:
            try:
                result: FetchedToken | BaseException = self.fetch()
            except IamError as exc:
                result = exc
            except Exception as exc:  # a bug in a credential plugin must not kill the agent
                result = IamError(f"token refresh failed ({type(exc).__name__})")
            with contextlib.suppress(RuntimeError):  # the loop closed while the fetch ran
                loop.call_soon_threadsafe(_settle, future, result)

        threading.Thread(target=work, name="iam-token", daemon=True).start()

    def _done(self, future: asyncio.Future[FetchedToken]) -> None:
        self._inflight = None
        now = self.clock()
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            fetched = future.result()
            self._value = fetched.value
            self._expires = now + fetched.lifetime
            self._refresh_at = self._expires - min(self.margin, fetched.lifetime / 2)
            self._failures, self._next_attempt = 0, float("-inf")
            if self.last_error is not None:
                log.info("IAM token obtained again after: %s", self.last_error, extra=labels(event="iam_token"))
            self.last_error = None
            return
        detail = error.detail if isinstance(error, IamError) else f"token refresh failed ({type(error).__name__})"
        self._failures += 1
        delay = min(self.max_backoff, self.min_backoff * 2 ** (self._failures - 1))
        delay *= 1 + self.jitter * (2 * self.rng() - 1)
        self._next_attempt = now + delay
        if detail != self.last_error:
            still = " (the current token stays in use until it expires)" if self.cached() else ""
            log.warning("IAM token refresh failed: %s%s", detail, still, extra=labels(event="iam_token_failed"))
        self.last_error = detail

    async def close(self) -> None:
        """Stop refreshing; a fetch still running in its thread is abandoned."""
        self._closed = True
        if self._inflight is not None:
            self._inflight.cancel()


def _settle(future: asyncio.Future[FetchedToken], result: FetchedToken | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
