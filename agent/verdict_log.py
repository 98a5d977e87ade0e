"""The verdict's log lines: a store listener that writes one line per transition, never one per check.

Check transitions carry their reason and detail and say when ``/readyz`` flipped with them; the startup
deadline is an ERROR with why the agent is not ready.
"""

from __future__ import annotations

import logging

from agent.model import CheckResult, State
from agent.snapshot import AgentSnapshot
from agent.store import Change

log = logging.getLogger("readiness_agent")


def labels(**values: str) -> dict[str, object]:
    """``extra=`` for a log record: Cloud Logging labels in JSON, appended by the text formatter."""
    return {"labels": dict(values)}


class VerdictLog:
    """Logs transitions; ``serving`` says whether ``/readyz`` exists to be named (``run``) or not (``wait``)."""

    def __init__(self, serving: bool = True) -> None:
        self.serving = serving

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        """Single observations are not logged: transitions are."""

    def changed(self, change: Change) -> None:
        t = change.transition
        if change.check is None:  # agent-level: the check's own line already said /readyz flipped
            if t.new is State.DRAINING:
                log.warning("draining: /readyz now answers 503", extra=labels(state="draining"))
            return
        result = change.result
        why = f" ({t.reason}: {result.detail})" if t.reason and result is not None else ""
        probe = ""
        if self.serving and change.ready_flipped is not None:
            probe = "; /readyz now 200" if change.ready_flipped else "; /readyz now 503"
        level = logging.INFO if t.new in (State.READY, State.STABILIZING) else logging.WARNING
        log.log(level, "check %s: %s -> %s%s%s", change.check, t.old, t.new, why, probe,
                extra=labels(check=change.check, state=str(t.new)))

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        reason = snapshot.last_reason
        log.error(
            "startup deadline of %gs passed without ready; last failure: %s; still checking",
            snapshot.startup_timeout, reason or "none yet (no successful stable window)",
            extra=labels(state=str(snapshot.state)),
        )
