"""The log writer on real pipes: nothing blocks the caller, a full queue drops the least important records
first and never a kept one (a transition), the drop is counted and said once the writer catches up, a closed
reader is one line on stderr, and close() never waits for a stalled reader."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator

import pytest

from agent.logs.labels import labels
from agent.logs.setup import QueuedHandler, _TextFormatter
from agent.logs.writer import DEBUG, ERROR, INFO, KEEP, WARNING, LogWriter
from harness.wait import until


class Pipe:
    """A pipe: the writer's end, a second non-blocking description to fill it, and the reader's end."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        self.fill_fd = os.open(f"/proc/self/fd/{self.write}", os.O_WRONLY | os.O_NONBLOCK)
        self.got = b""
        self.writers: list[LogWriter] = []

    def writer(self, on_caught_up: Callable[[int], None] | None = None, budget: int = 1 << 20) -> LogWriter:
        """A writer on this pipe, ended with the pipe (no thread outlives the test to write on a reused fd)."""
        writer = LogWriter(self.write, on_caught_up, budget=budget)
        self.writers.append(writer)
        return writer

    def fill(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(self.fill_fd, b"." * 4096)

    def drain(self) -> bytes:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read, 1 << 16):
                self.got += chunk
        return self.got

    def lines(self) -> list[bytes]:
        """What the writer wrote (the fill bytes taken out)."""
        return [line.lstrip(b".") for line in self.drain().splitlines() if line.lstrip(b".")]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.read)  # every writer still running gets EPIPE and ends
        for writer in self.writers:
            writer.close()
        until(lambda: not any(w.running for w in self.writers), 5, "the writer threads ended")
        for fd in (self.write, self.fill_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close()


def stalled_writer(pipe: Pipe, budget: int, reports: list[int]) -> LogWriter:
    """A writer whose first line is stuck in a full pipe: what is put next stays queued, in a known order."""
    pipe.fill()
    writer = pipe.writer(reports.append, budget=budget)
    writer.put(b"first\n", INFO)
    until(lambda: writer.stalled, 5, "the writer stalled")
    return writer


class TestOrderAndDrops:
    def test_lines_come_out_in_order(self, pipe: Pipe) -> None:
        writer = pipe.writer()
        for i, cls in enumerate([INFO, KEEP, DEBUG, ERROR, WARNING] * 20):
            writer.put(b"%d\n" % i, cls)
        until(lambda: len(pipe.lines()) == 100, 5, "100 lines")
        assert pipe.lines() == [b"%d" % i for i in range(100)]
        assert writer.dropped == 0
        writer.close()

    def test_a_full_queue_drops_the_least_important_first_and_says_so(self, pipe: Pipe) -> None:
        """Budget for 4 lines of 3 bytes: debug goes before info, info before warning; the newest of a class
        first; kept lines always stay; the count is reported once the queue is empty again."""
        reports: list[int] = []
        writer = stalled_writer(pipe, budget=12, reports=reports)
        for line, cls in [(b"i1\n", INFO), (b"d1\n", DEBUG), (b"w1\n", WARNING), (b"i2\n", INFO),
                          (b"e1\n", ERROR), (b"d2\n", DEBUG), (b"i3\n", INFO), (b"t1\n", KEEP), (b"t2\n", KEEP),
                          (b"w2\n", WARNING)]:
            writer.put(line, cls)
        assert writer.dropped == 4 and writer.queued == 6
        assert reports == []  # not yet: the writer has not caught up
        until(lambda: len(pipe.lines()) == 7, 5, "7 lines")
        assert pipe.lines() == [b"first", b"i1", b"w1", b"e1", b"t1", b"t2", b"w2"]
        until(lambda: reports == [4], 5, "the report")
        writer.close()

    def test_kept_lines_are_never_dropped_for_others(self, pipe: Pipe) -> None:
        writer = stalled_writer(pipe, budget=10, reports=[])
        for i in range(200):
            writer.put(b"t%d\n" % i, KEEP)
            writer.put(b"e%d\n" % i, ERROR)
        assert writer.queued >= 200
        pipe.drain()
        until(lambda: sum(line.startswith(b"t") for line in pipe.lines()) == 200, 5, "every kept line")
        writer.close()


class TestNeverBlocks:
    def test_close_returns_within_a_second_on_a_stalled_pipe(self, pipe: Pipe) -> None:
        """logging.shutdown() calls flush() and close(): neither waits for a reader that does not read."""
        writer = stalled_writer(pipe, budget=1 << 20, reports=[])
        handler = QueuedHandler(writer, _TextFormatter())
        started = time.monotonic()
        for i in range(1000):
            handler.handle(logging.makeLogRecord({"name": "readiness_agent", "msg": f"line {i}",
                                                         "levelno": logging.INFO}))
        handler.flush()
        handler.close()
        assert time.monotonic() - started < 1.0

    def test_a_gone_reader_is_one_line_on_stderr(self, pipe: Pipe, capfd: pytest.CaptureFixture[str]) -> None:
        writer = pipe.writer()
        os.close(pipe.read)
        for i in range(50):
            writer.put(b"line %d\n" % i, INFO)
        until(lambda: writer.dropped == 50, 5, "50 dropped")
        err = capfd.readouterr().err
        assert len(err.splitlines()) == 1 and "EPIPE" in err and "reader is gone" in err
        writer.close()


def test_labels_need_an_event() -> None:
    assert labels(event="x", check="redis") == {"labels": {"event": "x", "check": "redis"}}
    with pytest.raises(TypeError):
        labels(check="redis")  # type: ignore[call-arg]
