"""A stand-in for the GCE metadata server's token endpoint, on 127.0.0.1, for IAM authentication tests.

No metadata server can run on the test machine, so this aiohttp server (in its own thread, so a synchronous
client such as google-auth, or another process, can use it while the test blocks) implements the wire
protocol of exactly the endpoints google-auth's application-default credentials call on GCE, GKE (Workload
Identity's gke-metadata-server answers the same paths) and Cloud Run, following the Compute Engine
documentation ("Query VM metadata"; "Authenticate workloads using service accounts") and what google-auth
2.63's client sends and expects:

- ``GET /`` (google-auth's detection ping, at ``GCE_METADATA_IP``) → 200 with ``Metadata-Flavor: Google``.
- ``GET /computeMetadata/v1/project/project-id`` → the project id as text.
- ``GET /computeMetadata/v1/instance/service-accounts/default/?recursive=true`` → JSON ``email``, ``aliases``,
  ``scopes``.
- ``GET /computeMetadata/v1/instance/service-accounts/default/token[?scopes=a,b]`` → JSON ``access_token``,
  ``expires_in`` (seconds), ``token_type: Bearer``.
- ``GET /computeMetadata/v1/universe/universe-domain`` → ``googleapis.com``.

Every ``/computeMetadata/`` request must carry the request header ``Metadata-Flavor: Google`` and no
``X-Forwarded-For`` (else 403, as the real server answers); every response carries ``Metadata-Flavor:
Google``; unknown paths are 404. Point clients at it with ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP``
(``environ()``).

The control surface: ``rotate()`` serves a new token from the next request on (the real server also hands
out the same cached token until it nears expiry); ``lifetime`` sets ``expires_in``; ``fail(status)`` answers
the token endpoint with that HTTP status (403 as when the service account may not mint tokens, 404 as when
there is none, 500/503 as when the server has trouble), ``fail("hang")`` never answers, ``fail("refuse")``
closes the listening socket (connection refused), ``heal()`` ends any failure. ``token_requests`` holds the
monotonic time of every token request, ``served`` every token handed out, and ``on_token`` is called with
each new token before it is served (a test sets the Redis ACL password there).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiohttp import web

from harness.redis_server import free_port

if TYPE_CHECKING:  # only a type: the harness runs without pytest (bench, examples)
    import pytest

FLAVOR = {"Metadata-Flavor": "Google"}
PROJECT = "stand-in-project"
EMAIL = f"agent@{PROJECT}.iam.gserviceaccount.com"
DEFAULT_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
Failure = Literal["refuse", "hang"] | int
T = TypeVar("T")
METADATA_MODULE = "google.auth.compute_engine._metadata"


class MetadataServer:
    """The stand-in; ``start()`` it, read ``host``, ``stop()`` it (also a context manager)."""

    def __init__(self, lifetime: int = 3599) -> None:
        self.lifetime = lifetime
        self.port = free_port()
        self.token_requests: list[float] = []
        self.served: list[str] = []
        self.scopes_asked: list[str | None] = []
        self.on_token: Callable[[str], None] | None = None
        self._serial = itertools.count(1)
        self._token: str | None = None
        self._failure: Failure | None = None
        self._hung = asyncio.Event()  # created here, used on the server thread's loop only after start
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="metadata-stand-in", daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environ(self) -> dict[str, str]:
        """The variables that point google-auth (and the agent's platform probe) at this stand-in."""
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host}

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> MetadataServer:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._hung = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/computeMetadata/v1/project/project-id", self._project)
        app.router.add_get("/computeMetadata/v1/universe/universe-domain", self._universe)
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/{account}/", self._account)
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/{account}/token", self._token_endpoint)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _stop(self) -> None:
        self._hung.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> MetadataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control --------------------------------------------------------------------------------------

    def rotate(self) -> None:
        """Hand out a new token from the next request on."""
        self._token = None

    def fail(self, failure: Failure) -> None:
        """Answer the token endpoint with an HTTP status, never answer (``hang``) or refuse connections."""
        self.heal()
        self._failure = failure
        if failure == "refuse":
            self._call(self._unlisten())
        elif failure == "hang":
            self._loop.call_soon_threadsafe(self._hung.clear)

    def heal(self) -> None:
        """End any failure; a refused listener listens again on the same port."""
        failure, self._failure = self._failure, None
        if failure == "refuse":
            self._call(self._listen())
        elif failure == "hang":
            self._loop.call_soon_threadsafe(self._hung.set)

    async def _unlisten(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    @property
    def token(self) -> str | None:
        """The token currently served (None before the first request or after ``rotate``)."""
        return self._token

    # -- the protocol ---------------------------------------------------------------------------------

    @staticmethod
    def _refused(request: web.Request) -> web.Response | None:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing required header: Metadata-Flavor\n", headers=FLAVOR)
        if "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Request had an X-Forwarded-For header\n", headers=FLAVOR)
        return None

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="computeMetadata/\n", headers=FLAVOR)

    async def _project(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.Response(text=PROJECT, content_type="application/text",
                                                      headers=FLAVOR)

    async def _universe(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.Response(text="googleapis.com", content_type="application/text",
                                                      headers=FLAVOR)

    async def _account(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.match_info["account"] not in ("default", EMAIL):
            return web.Response(status=404, text="Not Found\n", headers=FLAVOR)
        body = {"aliases": ["default"], "email": EMAIL, "scopes": DEFAULT_SCOPES}
        if request.query.get("recursive") != "true":
            return web.Response(text="aliases\nemail\nidentity\nscopes\ntoken\n", content_type="application/text",
                                headers=FLAVOR)
        return web.Response(text=json.dumps(body), content_type="application/json", headers=FLAVOR)

    async def _token_endpoint(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        self.token_requests.append(time.monotonic())
        self.scopes_asked.append(request.query.get("scopes"))
        failure = self._failure
        if failure == "hang":
            await self._hung.wait()
            return web.Response(status=503, text="stand-in stopped\n", headers=FLAVOR)
        if isinstance(failure, int):
            return web.Response(status=failure, text=f"stand-in failure {failure}\n", headers=FLAVOR)
        if request.match_info["account"] not in ("default", EMAIL):
            return web.Response(status=404, text="Not Found\n", headers=FLAVOR)
        if self._token is None:
            token = f"ya29.stand-in-{next(self._serial)}-{secrets.token_urlsafe(24)}"
            if self.on_token is not None:
                self.on_token(token)
            self._token = token
        self.served.append(self._token)
        body = {"access_token": self._token, "expires_in": self.lifetime, "token_type": "Bearer"}
        return web.Response(text=json.dumps(body), content_type="application/json", headers=FLAVOR)


def point_google_auth(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], home: Path) -> None:
    """Set the variables google-auth reads, and re-read the ones it reads at import time.

    google-auth reads GCE_METADATA_HOST and the detection retries when its metadata module is imported; the
    agent process imports it after its environment is set, but pytest may have imported it already.
    """
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(home))  # no gcloud user credentials from the machine
    monkeypatch.setenv("GCE_METADATA_DETECT_RETRIES", "1")
    monkeypatch.setenv("GCE_METADATA_TIMEOUT", "1")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    if METADATA_MODULE in sys.modules:
        importlib.reload(sys.modules[METADATA_MODULE])


def wait_for_token_threads(timeout: float = 20.0) -> None:
    """Wait until no ``iam-token`` fetch thread (agent/checks/redis/iam.py) is alive; call after ``heal()``.

    An abandoned fetch keeps retrying inside google-auth, whose backoff draws from the global ``random``
    module; a later Hypothesis test would see that state change under it and fail. ``heal()`` lets the fetch
    succeed at its next retry (google-auth backs off 1, 2, 4, 8 s), so this returns within a few seconds.
    """
    deadline = time.monotonic() + timeout
    while any(t.name == "iam-token" and t.is_alive() for t in threading.enumerate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"an IAM token fetch thread still runs after {timeout}s")
        time.sleep(0.02)


@contextlib.contextmanager
def stand_in(monkeypatch: pytest.MonkeyPatch, home: Path) -> Iterator[MetadataServer]:
    """A started stand-in with google-auth pointed at it; afterwards no fetch thread is left and google-auth's
    import-time settings are restored."""
    with MetadataServer() as server:
        point_google_auth(monkeypatch, server.environ(), home)
        try:
            yield server
        finally:
            server.heal()
            wait_for_token_threads()
    monkeypatch.undo()
    if METADATA_MODULE in sys.modules:
        importlib.reload(sys.modules[METADATA_MODULE])
