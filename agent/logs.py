"""Logging: Cloud Logging structured JSON on GCP, readable text elsewhere.

JSON goes through google-cloud-logging's ``StructuredLogHandler`` (one object per line with ``severity``,
``message`` and ``logging.googleapis.com/labels``) on **stdout**, which it does not default to. The library
costs ~330 ms and ~32 MiB at import, so it is imported only when JSON is chosen.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

LOGGER = "readiness_agent"


class _TextFormatter(logging.Formatter):
    """``time level message [check=… state=…]``: labels appended so text logs carry the same facts."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        labels = getattr(record, "labels", None)
        if labels:
            line += " [" + " ".join(f"{k}={v}" for k, v in labels.items()) + "]"
        return line


def setup_logging(fmt: str, level: str, stream: IO[str] | None = None) -> logging.Logger:
    """Configure the agent's logger; ``fmt`` is ``json`` or ``text`` (``auto`` is resolved by config)."""
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    out = stream if stream is not None else sys.stdout
    handler: logging.Handler
    if fmt == "json":
        from google.cloud.logging_v2.handlers import StructuredLogHandler

        handler = StructuredLogHandler(  # type: ignore[no-untyped-call]
            stream=out, labels={"component": "readiness-agent"}
        )
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    # aiohttp's access log would write one line per probe; the verdict log is what operators need.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logger
