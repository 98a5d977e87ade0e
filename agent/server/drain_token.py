"""The bearer token of ``POST /drain``: read and validated at start and whenever its file changes, off the
event loop, and compared in constant time.

The token file used to be read synchronously on every request: a FIFO at that path blocked the event loop
(``/readyz`` and ``/livez`` timed out), a non-UTF-8 file turned every call into a 500, and a missing file went
unnoticed until the first drain failed. Now a missing, unreadable, non-UTF-8, empty or malformed file is one
WARNING at start (and again when the file changes to another problem) and ``POST /drain`` answers 401 until
the file holds a token; anything malformed in the request's ``Authorization`` header is a 401 too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading

from agent.config.secretfile import SecretFile
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")
# Visible ASCII: what an HTTP header can carry as a token (RFC 6750's b64token and more), up to 4 KiB.
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}", re.ASCII)


class DrainToken:
    """The expected token from ``path``; ``problem`` says why there is none (never the token itself)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = SecretFile(path)
        self._token: bytes | None = None
        self.problem: str | None = None
        self._warned: str | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Re-read the file if it changed (blocking I/O: call through :meth:`current` from the loop)."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        text = self._file.read()
        problem = self._file.problem
        token: bytes | None = None
        if text is not None:
            stripped = text.strip()
            if not stripped:
                problem = "is empty"
            elif not _TOKEN.fullmatch(stripped):
                problem = "does not hold a token (1 to 4096 visible ASCII characters)"
            else:
                token = stripped.encode("ascii")
        self._token, self.problem = token, problem
        if problem is not None and problem != self._warned:
            log.warning("drain token file %s %s: POST /drain answers 401 until it holds a token", self.path,
                        problem, extra=labels(event="drain_token_unusable"))
        self._warned = problem

    async def current(self) -> bytes | None:
        """The token, refreshed in a worker thread so a slow or odd file never stalls the probes."""
        await asyncio.to_thread(self.refresh)
        return self._token

    async def authorizes(self, header: str | None) -> bool:
        """True when ``header`` is ``Bearer <the token>``; False for anything else, malformed included."""
        expected = await self.current()
        if expected is None or not header:
            return False
        scheme, _, given = header.strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not _TOKEN.fullmatch(given):
            return False
        return hmac.compare_digest(given.encode("ascii"), expected)
