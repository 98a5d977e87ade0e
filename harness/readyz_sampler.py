"""The one ``/readyz`` sampler: polls an agent's readiness URL from a thread, as a prober would, and keeps
every answer, so a test or a figure can ask "when did it first answer 503 after the kill".

It polls ``GET path`` every ``period`` s over one keep-alive connection from its own thread (not the caller's
event loop, so a busy or blocked loop does not delay a sample, and sync and async callers share it). Each
:class:`Sample` keeps its send time, status (0 = no answer) and latency; ``changes`` keeps each change of
status with the send time of the request that first saw it, so a time read here is what a prober polling at
this rate would see, ± ``period``. Sync callers block in ``wait_for``/``wait_steady``; async ones ``await
expect(...)``.
"""

from __future__ import annotations

import bisect
import http.client
import threading
import time
from dataclasses import dataclass

from harness.wait import until_async


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe: when it was sent, its status (0 = no answer), and how long it took."""

    at: float
    status: int
    latency: float


class ReadyzSampler:
    """Samples ``http://host:port/path`` every ``period`` s while started (``start``/``stop`` or ``with``)."""

    def __init__(self, port: int, path: str = "/readyz", *, host: str = "127.0.0.1", period: float = 0.005,
                 request_timeout: float = 2.0) -> None:
        self.port = port
        self.path = path
        self.host = host
        self.period = period
        self.request_timeout = request_timeout
        self.status = -1
        self.samples: list[Sample] = []
        self.changes: list[tuple[float, int]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"readyz-sampler:{port}{path}", daemon=True)

    def start(self) -> ReadyzSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.request_timeout + 5)

    def __enter__(self) -> ReadyzSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.request_timeout)
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                status = 0
            with self._cond:
                self.samples.append(Sample(sent, status, time.monotonic() - sent))
                if status != self.status:
                    self.changes.append((sent, status))
                    self.status = status
                self._cond.notify_all()
            next_at = max(next_at + self.period, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def first(self, status: int, after: float = 0.0) -> float | None:
        """The send time of the first sample at or after ``after`` that answered ``status`` (or None)."""
        with self._cond:
            return self._first(status, after)

    def _first(self, status: int, after: float) -> float | None:
        start = bisect.bisect_left(self.samples, after, key=lambda s: s.at)  # samples are in time order
        return next((s.at for s in self.samples[start:] if s.status == status), None)

    def wait_for(self, status: int, after: float, timeout: float) -> float | None:
        """Block until a sample at or after ``after`` answers ``status``; its send time, or None on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._first(status, after), timeout)

    def wait_steady(self, status: int, timeout: float) -> bool:
        """Block until the current status is ``status`` (whenever it changed); whether it did in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self.status == status, timeout)

    async def expect(self, status: int, *, after: float, timeout: float) -> float:
        """``wait_for`` on the event loop: the send time, or ``TimeoutError`` naming the last samples."""
        return await until_async(lambda: self.first(status, after), timeout, period=min(self.period, 0.01),
                                 what=lambda: f"{self.path} {status} (last samples: {self.samples[-3:]})")
