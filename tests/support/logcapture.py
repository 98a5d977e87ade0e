"""Capture the agent logger's records in-process, so tests assert records and their fields, not wording.

The agent's logger (``readiness_agent``) stops propagating once ``setup_logging`` configured it, so pytest's
``caplog`` (on the root logger) may see nothing: this handler attaches to the agent's logger itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TypeVar

H = TypeVar("H", bound=logging.Handler)


class AgentLogs(logging.Handler):
    """Keeps every record the agent's logger emits."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int = logging.WARNING) -> list[str]:
        """The messages of the records at ``level`` or above."""
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def labels(self) -> list[dict[str, str]]:
        """The ``labels`` of every record (empty for a record without)."""
        return [dict(getattr(r, "labels", {})) for r in self.records]


@contextlib.contextmanager
def agent_logs(handler: H) -> Iterator[H]:
    """Attach ``handler`` to the agent's logger at DEBUG for the block; restore the level after."""
    logger = logging.getLogger("readiness_agent")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
