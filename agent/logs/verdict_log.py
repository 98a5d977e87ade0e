"""The verdict's log lines: a store listener that says what is wrong at once, and never logs one line per check.

What gets a line, per check:

* every transition of its state machine, with the reason and detail, and whether ``/readyz`` flipped with it
  (only when the command serves ``/readyz``: ``run``, not ``wait``);
* the **first failure** of a failure episode, at once, even when it moves no state (a check that never leaves
  ``starting``, an optional check, a ready check below its failure threshold);
* each **change of reason** while the episode lasts (at most one such line per ``min_gap`` seconds: a change
  that comes sooner is logged at the first failure after ``min_gap``, with counts by reason since the last
  line);
* a **reminder** every ``remind_every`` seconds while the same failure persists;
* the end of an episode that moved no state (a blip a ready check absorbed); otherwise the transition says it.

When a failure causes a transition, the transition line carries the reason and detail and no separate failure
line is written. The clock is injected (the store's monotonic clock in production) so the rate limits are
tested with exact times. The startup deadline is an ERROR with why the agent is not ready.

Every line carries ``labels`` (:func:`agent.logs.setup.labels`, the one way to label a record: Cloud Logging labels in
JSON, appended by the text formatter): ``event`` and ``state`` always, ``check`` on every line about a check,
``reason`` for failures, so tests and log queries read fields, not wording. Transitions, the drain and the
deadline are never dropped by a stalled log output (agent/logs/writer.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.core.model import CheckResult, Reason, State
from agent.core.snapshot import AgentSnapshot
from agent.core.store import Change
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")

REMIND_EVERY = 30.0  # seconds between reminders while one failure persists
MIN_GAP = 1.0  # seconds: reason changes closer than this to the previous line are folded into the next one


@dataclass(slots=True)
class _Episode:
    """One check's failures since its last success."""

    reason: Reason
    since: float
    logged_at: float
    logged_reason: Reason  # the reason the last line named: a change is logged even when it came too soon
    failures: int = 1
    unlogged: Counter[str] = field(default_factory=Counter)  # failures by reason since the last line


class VerdictLog:
    """Logs transitions and failure episodes; ``serving`` says whether ``/readyz`` exists to be named."""

    def __init__(self, clock: Callable[[], float], serving: bool = True, remind_every: float = REMIND_EVERY,
                 min_gap: float = MIN_GAP) -> None:
        self.clock = clock
        self.serving = serving
        self.remind_every = remind_every
        self.min_gap = min_gap
        self._episodes: dict[str, _Episode] = {}
        self._states: dict[str, State] = {}  # each check's state as of the last event this listener saw

    # ------------------------------------------------------------------------------------------ listener

    def observed(self, name: str, result: CheckResult, snapshot: AgentSnapshot) -> None:
        """Start, update or end the check's failure episode; log what an operator must see now."""
        now = self.clock()
        check = snapshot.checks[name]
        moves = self._states.get(name, State.STARTING) is not check.state  # changed() will log this event
        if result.ok:
            episode = self._episodes.pop(name, None)
            if episode is not None and not moves:
                log.info("check %s passes again after %d failed checks over %.1fs (%s)", name, episode.failures,
                         now - episode.since, check.state,
                         extra=labels(check=name, state=str(check.state), event="recovered"))
            return
        reason = result.reason or Reason.ERROR
        episode = self._episodes.get(name)
        if episode is None:
            self._episodes[name] = _Episode(reason, since=now, logged_at=now, logged_reason=reason)
            if not moves:
                log.log(self._level(check.required), "check %s failed: %s (%s); %s", name, reason, result.detail,
                        self._still(check.state, check.required),
                        extra=labels(check=name, state=str(check.state), event="failing", reason=str(reason)))
            return
        episode.failures += 1
        episode.unlogged[str(reason)] += 1
        episode.reason = reason
        if moves:  # the transition line names this reason
            episode.logged_at, episode.logged_reason, episode.unlogged = now, reason, Counter()
            return
        changed_reason = reason is not episode.logged_reason
        due = now - episode.logged_at >= self.remind_every
        if (changed_reason and now - episode.logged_at >= self.min_gap) or due:
            event = "reason_changed" if changed_reason else "still_failing"
            counts = ", ".join(f"{r} x{n}" for r, n in sorted(episode.unlogged.items()))
            log.log(self._level(check.required), "check %s %s: %s (%s) for %.1fs, %d failed checks (since last "
                    "line: %s); %s", name, "now failing with" if changed_reason else "still failing", reason,
                    result.detail, now - episode.since, episode.failures, counts,
                    self._still(check.state, check.required),
                    extra=labels(check=name, state=str(check.state), event=event, reason=str(reason)))
            episode.logged_at, episode.logged_reason, episode.unlogged = now, reason, Counter()

    def changed(self, change: Change) -> None:
        """One line per check transition; the agent's own line only for draining (check lines say the rest)."""
        t = change.transition
        if change.check is None:
            if t.new is State.DRAINING:
                probe = "/readyz now answers 503" if self.serving else "not ready"
                log.warning("draining: %s", probe, extra=labels(state="draining", event="draining"))
            return
        self._states[change.check] = t.new
        result = change.result
        why = f" ({t.reason}: {result.detail})" if t.reason and result is not None and not result.ok else ""
        probe = ""
        if self.serving and change.ready_flipped is not None:
            probe = "; /readyz now 200" if change.ready_flipped else "; /readyz now 503"
        level = logging.INFO if t.new in (State.READY, State.STABILIZING) else logging.WARNING
        reason = {"reason": str(t.reason)} if why else {}
        log.log(level, "check %s: %s -> %s%s%s", change.check, t.old, t.new, why, probe,
                extra=labels(event="transition", check=change.check, state=str(t.new), **reason))

    def deadline_passed(self, snapshot: AgentSnapshot) -> None:
        """An ERROR for ``run``; ``wait`` has its own limit (``--max-wait``) and says so when it gives up."""
        if not self.serving:
            return
        reason = snapshot.last_reason
        log.error(
            "startup deadline of %gs passed without ready; last failure: %s; still checking (%s)",
            snapshot.startup_timeout, reason or "none yet (no successful stable window)", snapshot.why_not_ready(),
            extra=labels(state=str(snapshot.state), event="deadline",
                         **({"reason": str(reason)} if reason else {})),
        )

    # ------------------------------------------------------------------------------------------ wording

    @staticmethod
    def _level(required: bool) -> int:
        return logging.WARNING if required else logging.INFO

    def _still(self, state: State, required: bool) -> str:
        """What the failure means for the verdict right now."""
        if not required:
            return f"{state}, optional: does not gate readiness"
        if state is State.READY:
            return "still ready (below the failure threshold)"
        return f"{state}: not ready" + ("" if self.serving else " yet")
