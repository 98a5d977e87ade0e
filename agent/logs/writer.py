"""The log writer: formatted lines go through a bounded queue to a thread that never blocks the process.

In a pod, stdout is a pipe to the runtime's log shim; when the collector stalls, the pipe fills and a
synchronous write blocks whoever makes it (the event loop, the verdict listeners inside the store, and
``logging.shutdown()`` at exit). So records never reach the file descriptor from the caller: ``put`` appends
the line to a queue and returns, and a daemon thread writes it with ``os.write``. On a pipe or a socket (where
a reader can stall) the descriptor is set ``O_NONBLOCK`` and ``EAGAIN`` makes the thread wait in ``poll``;
on a terminal or a file it writes as usual. Nothing waits for the thread: ``close`` gives it at most
``CLOSE_WAIT`` seconds to write what is queued (it returns at once when the descriptor does not accept), and
interpreter exit never joins a daemon thread.

When the queue is full, the least important record goes first: debug, then info, then warnings, then errors,
the newest of a class before the oldest, and a record marked ``keep`` (a verdict transition) never goes for
another record (the queue holds up to ``KEEP_LIMIT`` of them beyond the budget). Every record dropped is
counted in ``dropped`` (the metric ``readiness_agent_log_records_dropped_total``), and once the queue is
empty again ``on_caught_up`` is called with the number dropped since the last call, to say so in the log.

A descriptor whose reader is gone (``EPIPE``) or that fails otherwise is given up: every record from then on
is dropped and counted, and one line says so on stderr (unless stderr is the descriptor itself), instead of a
traceback per record.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import stat
import threading
from collections import deque
from collections.abc import Callable

DEBUG, INFO, WARNING, ERROR, KEEP = range(5)  # importance classes, least important first
BUDGET = 1 << 20  # bytes of queued lines (a stalled collector costs at most this much memory, plus kept ones)
KEEP_LIMIT = 10_000  # kept records beyond the budget: a collector stalled for days must not grow the heap forever
BATCH = 64 * 1024  # bytes handed to one write()
CLOSE_WAIT = 0.25  # seconds close() gives the thread to write what is queued, when the descriptor accepts it
POLL_MS = 1000  # the thread looks at its state this often while the descriptor does not accept


class LogWriter:
    """A bounded, importance-ordered queue of lines and the daemon thread that writes them to ``fd``."""

    def __init__(self, fd: int, on_caught_up: Callable[[int], None] | None = None, budget: int = BUDGET,
                 keep_limit: int = KEEP_LIMIT) -> None:
        self.fd = fd
        self.on_caught_up = on_caught_up
        self.budget = budget
        self.keep_limit = keep_limit
        self.dropped = 0  # every record ever dropped (full queue, closed or failed descriptor)
        self._unreported = 0  # dropped since on_caught_up was last called
        self._cond = threading.Condition()
        self._queues: list[deque[tuple[int, bytes]]] = [deque() for _ in range(KEEP + 1)]
        self._bytes = 0  # queued bytes of the classes below KEEP
        self._seq = 0
        self._busy = False  # the thread holds lines taken from the queue and not yet written
        self._stalled = False  # the last write found the descriptor full
        self._failed: str | None = None  # why the descriptor was given up
        self._closing = False
        self._flags = _make_nonblocking(fd)
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ producers

    def put(self, line: bytes, importance: int) -> None:
        """Queue ``line`` (never blocks); drop the least important record when the queue is full."""
        with self._cond:
            if self._failed is not None or not self._thread.is_alive():
                self._drop(1)
                return
            if importance < KEEP:
                while self._bytes + len(line) > self.budget:
                    victim = next((c for c in range(KEEP) if self._queues[c]), None)
                    if victim is None or victim >= importance:  # the new line is the least important
                        self._drop(1)
                        return
                    self._bytes -= len(self._queues[victim].pop()[1])  # the newest of the lowest class
                    self._drop(1)
                self._bytes += len(line)
            elif len(self._queues[KEEP]) >= self.keep_limit:
                self._drop(1)
                return
            self._queues[importance].append((self._seq, line))
            self._seq += 1
            self._cond.notify()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Let the thread write what is queued for at most ``wait`` seconds, unless the descriptor does not accept
        (then return at once); restore the descriptor's flags. Never joins the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._stalled or self._failed is not None or not self._pending(), wait)
        if self._flags is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)

    @property
    def stalled(self) -> bool:
        """The last write found the descriptor full (a stalled reader)."""
        with self._cond:
            return self._stalled

    @property
    def running(self) -> bool:
        """The thread still runs (it ends once closed and drained, or when the descriptor is given up)."""
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Records waiting in the queue."""
        with self._cond:
            return sum(len(q) for q in self._queues)

    # ------------------------------------------------------------------------------------------ the thread

    def _pending(self) -> bool:
        return self._busy or any(self._queues)

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._unreported += n

    def _take(self) -> bytes:
        """Lines in queue order (the lowest sequence number first), up to ``BATCH`` bytes; the lock is held."""
        out: list[bytes] = []
        size = 0
        while size < BATCH:
            heads = [(q[0][0], c) for c, q in enumerate(self._queues) if q]
            if not heads:
                break
            _, cls = min(heads)
            line = self._queues[cls].popleft()[1]
            if cls < KEEP:
                self._bytes -= len(line)
            out.append(line)
            size += len(line)
        return b"".join(out)

    def _run(self) -> None:
        data = b""
        while True:
            report = 0
            with self._cond:
                if not data:
                    self._busy = False
                    if not any(self._queues):
                        if self._unreported and self.on_caught_up is not None and self._failed is None:
                            report, self._unreported = self._unreported, 0
                        else:
                            self._cond.notify_all()  # close() waits for an empty queue
                            if self._closing:
                                return
                            self._cond.wait()
                            continue
                    else:
                        data = self._take()
                        self._busy = True
            if report:
                assert self.on_caught_up is not None
                self.on_caught_up(report)  # logs a line: it comes back through put()
                continue
            data = self._write(data)
            if self._failed is not None:
                return

    def _write(self, data: bytes) -> bytes:
        """Write what the descriptor accepts; the rest. Waits (in poll) while it accepts nothing."""
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            with self._cond:
                self._stalled = True
                self._cond.notify_all()
            _wait_writable(self.fd)
            return data
        except InterruptedError:
            return data
        except OSError as exc:
            self._give_up(exc, data)
            return b""
        if self._stalled:
            with self._cond:
                self._stalled = False
        return data[written:]

    def _give_up(self, exc: OSError, data: bytes) -> None:
        """The descriptor is gone (EPIPE) or failing: drop everything from now on and say so once on stderr."""
        with self._cond:
            lost = data.count(b"\n") + sum(len(q) for q in self._queues)
            for q in self._queues:
                q.clear()
            self._bytes = 0
            self._busy = False
            self._drop(lost)
            self._failed = errno.errorcode.get(exc.errno or 0, str(exc))
            self._cond.notify_all()
        if self.fd != 2:
            what = "its reader is gone" if exc.errno == errno.EPIPE else f"writing failed ({exc.strerror})"
            message = (f"readiness-agent: log output on fd {self.fd} given up: {what} ({self._failed}); records "
                       "are dropped from now on (readiness_agent_log_records_dropped_total counts them)\n")
            with contextlib.suppress(OSError):
                os.write(2, message.encode())


def _make_nonblocking(fd: int) -> int | None:
    """Set ``O_NONBLOCK`` on a pipe or socket (a stalled reader makes a write wait); its old flags, or None when
    left alone (a terminal, a file, a descriptor that is not open)."""
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return None
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if not flags & os.O_NONBLOCK:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        return flags
    except OSError:
        return None


def _wait_writable(fd: int) -> None:
    """Block this thread (never the process) until ``fd`` accepts a write, fails, or ``POLL_MS`` pass."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    with contextlib.suppress(OSError):
        poller.poll(POLL_MS)
