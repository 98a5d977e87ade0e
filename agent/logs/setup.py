"""Logging: Cloud Logging structured JSON on GCP, readable text elsewhere, written so that it never blocks.

**One way to label a record.** Every record the agent logs passes ``extra=labels(event=…, check=…, …)``:
``event`` is required (a field tests and log queries read instead of wording), ``check`` names the check a
record is about. The handler reads only ``labels``; any other ``extra=`` key is folded into the labels as
text rather than lost, and tests/test_logging_labels.py checks statically that every call in ``agent/`` uses
:func:`labels`. Records of other loggers (``asyncio``, ``aiohttp``, ``py.warnings``) get ``event=library``
and ``logger=<name>``.

**Never blocking.** The handler sits on the root logger, so the agent's records, the libraries' (uncaught
task exceptions reach the ``asyncio`` logger), Python warnings (``logging.captureWarnings``) and exceptions
that end a thread (``threading.excepthook``) all take the same way: formatted by the caller, queued and
written by :class:`agent.logs.writer.LogWriter` (a daemon thread, non-blocking writes on a pipe). A stalled
collector costs dropped records (least important first, never a verdict transition), counted by
``readiness_agent_log_records_dropped_total``, never a frozen loop or exit.

**JSON** goes through google-cloud-logging's ``StructuredLogHandler`` format (one object per line with
``severity``, ``message`` and ``logging.googleapis.com/labels``); the library is heavy to import
(docs/benchmarks.md), so it is imported only when JSON is chosen. Out of the box it writes fields that carry
nothing for a sidecar: a first line that is the library's own diagnostic entry (no ``message``), empty
``trace``/``spanId``, ``trace_sampled: false``, ``httpRequest: {}``, a ``python_logger`` label, and a
``sourceLocation`` with an absolute path. :class:`_CompactJson` skips the diagnostic entry and drops those
fields, and shows the source location relative to the package (``agent/logs/verdict_log.py``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from typing import IO, Any

from agent.logs.labels import labels
from agent.logs.writer import DEBUG, ERROR, INFO, KEEP, WARNING, LogWriter

LOGGER = "readiness_agent"
KEEP_EVENTS = frozenset({"transition", "draining", "deadline"})  # verdict records: never dropped for others
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime",
                                                                                    "taskName", "labels"}
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above agent/


def record_labels(record: logging.LogRecord) -> dict[str, str]:
    """The record's labels, set on it: its own, any other ``extra=`` key as text, ``event=library`` for a
    library's record."""
    found = {str(k): str(v) for k, v in dict(getattr(record, "labels", None) or {}).items()}
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_") and key not in found:
            found[key] = str(value)  # an extra= that bypassed labels(): kept, not lost
    name = str(record.name)
    if name != LOGGER and not name.startswith(LOGGER + "."):
        found.setdefault("event", "library")
        found.setdefault("logger", name)
    record.labels = found
    return found


class _TextFormatter(logging.Formatter):
    """``time level message [event=… check=…]``: labels appended so text logs carry the same facts."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        found = record_labels(record)
        if found:
            line += " [" + " ".join(f"{k}={v}" for k, v in found.items()) + "]"
        return line


def json_formatter() -> logging.Formatter:
    """google-cloud-logging's ``StructuredLogHandler`` format, trimmed to fields that carry information."""
    import google.cloud.logging_v2 as library
    from google.cloud.logging_v2.handlers import StructuredLogHandler

    library._instrumentation_emitted = True  # no diagnostic entry (a line with no message, about the library)
    handler = StructuredLogHandler(labels={"component": "readiness-agent"},  # type: ignore[no-untyped-call]
                                   stream=io.StringIO())  # never written: a stream logging.shutdown() can flush

    class _CompactJson(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            record_labels(record)
            handler.filter(record)  # the library's filter sets the fields its format reads
            entry: dict[str, Any] = json.loads(handler.format(record))  # type: ignore[no-untyped-call]
            return json.dumps(_compact(entry), ensure_ascii=False)

    return _CompactJson()


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields and the constant ``python_logger`` label; source paths relative to the package."""
    found = entry.get("logging.googleapis.com/labels")
    if isinstance(found, dict):
        found.pop("python_logger", None)
    if not entry.get("logging.googleapis.com/trace"):
        entry.pop("logging.googleapis.com/trace_sampled", None)
    source = entry.get("logging.googleapis.com/sourceLocation")
    if isinstance(source, dict) and isinstance(source.get("file"), str):
        path = source["file"]
        if path.startswith(_PACKAGE_ROOT + os.sep):
            source["file"] = os.path.relpath(path, _PACKAGE_ROOT)
        else:  # a library's own line: its absolute install path says nothing about the agent
            entry.pop("logging.googleapis.com/sourceLocation")
    return {k: v for k, v in entry.items() if not (v is None or v is False or v == "" or v == {})}


def importance(record: logging.LogRecord) -> int:
    """The record's class in the writer's queue: verdict records are kept, the rest go by level."""
    if getattr(record, "labels", {}).get("event") in KEEP_EVENTS:
        return KEEP
    if record.levelno < logging.INFO:
        return DEBUG
    if record.levelno < logging.WARNING:
        return INFO
    return WARNING if record.levelno < logging.ERROR else ERROR


class QueuedHandler(logging.Handler):
    """Formats on the caller's thread and hands the line to a :class:`LogWriter`: ``emit`` never blocks, and
    ``flush``/``close`` (called by ``logging.shutdown()`` at exit) never wait for a stalled reader."""

    def __init__(self, writer: LogWriter, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).replace("\n", "\n  ") + "\n"  # a traceback stays one record
            self.writer.put(line.encode("utf-8", "backslashreplace"), importance(record))
        except Exception:  # a formatting bug: logging's own report (on stderr), as for any handler
            self.handleError(record)

    def flush(self) -> None:
        """Nothing to wait for: the writer thread writes as the descriptor accepts."""

    def close(self) -> None:
        self.writer.close()
        super().close()


_installed: QueuedHandler | None = None


def dropped_total() -> int:
    """Log records dropped since start (full queue, or output given up): the metric's value."""
    return _installed.writer.dropped if _installed is not None else 0


def _report_dropped(count: int) -> None:
    logging.getLogger(LOGGER).warning(
        "%d log records dropped: the log output did not accept them in time (least important first; counted "
        "in readiness_agent_log_records_dropped_total)", count,
        extra=labels(event="log_records_dropped", count=str(count)))


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread: one record through the queue, not a write on stderr."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger(LOGGER).error("thread %s ended with an exception", name, extra=labels(event="thread_exception"),
                                    exc_info=args.exc_value)


def setup_logging(fmt: str, level: str, stream: IO[str] | None = None) -> logging.Logger:
    """Configure logging; ``fmt`` is ``json`` or ``text`` (``auto`` is resolved by config), ``stream`` the
    output (stdout by default; only its file descriptor is used)."""
    global _installed
    out = stream if stream is not None else sys.stdout
    formatter = json_formatter() if fmt == "json" else _TextFormatter("%(asctime)s %(levelname)s %(message)s")
    handler = QueuedHandler(LogWriter(out.fileno(), _report_dropped), formatter)
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    root.addHandler(handler)
    _installed = handler
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.setLevel(level.upper())
    logger.propagate = True
    root.setLevel(max(logging.WARNING, logger.level))  # libraries: warnings and errors only
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception  # its default writes a traceback on stderr, outside the queue
    # aiohttp's access log would write one line per probe; the verdict log is what operators need.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logger
