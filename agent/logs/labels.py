"""The one way to label a log record: every layer imports this, and it imports nothing of the agent."""

from __future__ import annotations


def labels(*, event: str, **values: str) -> dict[str, object]:
    """``extra=`` for a log record: its ``event`` and other labels (Cloud Logging labels in JSON, appended to the
    line in text)."""
    return {"labels": {"event": event, **values}}
