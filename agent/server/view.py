"""What the HTTP surface may read of the running agent, and the one thing it may ask of it: to drain.

A small read-only protocol instead of the agent itself, so the server depends on the verdict's read side
(snapshots, the history) and never on how checks run; tests serve any object that has these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from agent.config.settings import Settings
from agent.core.history import History
from agent.core.snapshot import AgentSnapshot


class Ready(Protocol):
    """The store's side of the probe fast path: an event set while the verdict is ready."""

    ready: asyncio.Event


class ServedAgent(Protocol):
    """The running agent as the endpoints see it."""

    settings: Settings
    history: History

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def store(self) -> Ready: ...

    @property
    def snapshot(self) -> AgentSnapshot: ...

    def healthy(self) -> bool:
        """For ``/livez``: the agent's own tasks run and its heartbeat is recent."""
        ...

    def drain(self) -> None:
        """From ``POST /drain``: ``/readyz`` 503 from now on."""
        ...
