"""Logging: Cloud Logging structured JSON on GCP, readable text elsewhere.

JSON goes through google-cloud-logging's ``StructuredLogHandler`` (one object per line with ``severity``,
``message`` and ``logging.googleapis.com/labels``) on **stdout**, which it does not default to. The library
costs ~330 ms and ~32 MiB at import, so it is imported only when JSON is chosen.

Out of the box that handler writes fields that carry nothing for a sidecar: a first line that is the library's
own diagnostic entry (no ``message``), empty ``trace``/``spanId``, ``trace_sampled: false``, ``httpRequest:
{}``, a ``python_logger`` label, and a ``sourceLocation`` with an absolute path. :class:`_CompactJsonHandler`
keeps the handler (and its format) but skips the diagnostic entry and drops those fields, and shows the source
location relative to the package (``agent/verdict_log.py``), so every line has a ``message`` and only fields
that carry information.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import IO, Any

LOGGER = "readiness_agent"


class _TextFormatter(logging.Formatter):
    """``time level message [check=… state=…]``: labels appended so text logs carry the same facts."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        labels = getattr(record, "labels", None)
        if labels:
            line += " [" + " ".join(f"{k}={v}" for k, v in labels.items()) + "]"
        return line


_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def json_handler(stream: IO[str]) -> logging.Handler:
    """google-cloud-logging's ``StructuredLogHandler`` on ``stream``, trimmed to fields that carry information."""
    from google.cloud.logging_v2.handlers import StructuredLogHandler

    class _CompactJsonHandler(StructuredLogHandler):
        def emit_instrumentation_info(self) -> None:
            """Skip the library's one-time diagnostic entry (a line with no message, about the library)."""
            import google.cloud.logging_v2 as library

            library._instrumentation_emitted = True

        def format(self, record: logging.LogRecord) -> str:
            entry: dict[str, Any] = json.loads(super().format(record))  # type: ignore[no-untyped-call]
            return json.dumps(_compact(entry), ensure_ascii=False)

    return _CompactJsonHandler(stream=stream, labels={"component": "readiness-agent"})  # type: ignore[no-untyped-call]


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields and the constant ``python_logger`` label; source paths relative to the package."""
    labels = entry.get("logging.googleapis.com/labels")
    if isinstance(labels, dict):
        labels.pop("python_logger", None)
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


def setup_logging(fmt: str, level: str, stream: IO[str] | None = None) -> logging.Logger:
    """Configure the agent's logger; ``fmt`` is ``json`` or ``text`` (``auto`` is resolved by config)."""
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    out = stream if stream is not None else sys.stdout
    handler: logging.Handler
    if fmt == "json":
        handler = json_handler(out)
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    # aiohttp's access log would write one line per probe; the verdict log is what operators need.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logger
