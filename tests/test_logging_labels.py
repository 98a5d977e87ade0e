"""Every log record carries its labels: one way to label a record (``extra=labels(event=…, check=…)``), kept by a
static check of every logging call in agent/, and a real run whose every line (JSON and text) has its ``event``,
and its ``check`` wherever it is about one.

Before, checks/redis.py and iam.py passed ``extra={"check": …, "event": …}``, which the formatter never read:
the degraded-commands warning came out with no labels at all.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.logs.setup import _TextFormatter, record_labels
from harness.agent_process import ROOT, AgentProcess
from harness.redis_server import RedisProcess

LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
ABOUT_A_CHECK = re.compile(r"^check (\S+?):? ")  # "check redis: …", "check redis failed …"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (?P<message>.*?)(?: \[(?P<labels>[^\]]*)\])?$",
                       re.S)


def logging_calls() -> list[tuple[str, ast.Call]]:
    """Every ``log.<level>(…)`` call, and every call passing ``extra=``, in agent/."""
    found = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            to_log = (isinstance(func, ast.Attribute) and func.attr in LEVELS and isinstance(func.value, ast.Name)
                      and func.value.id in {"log", "logger"})
            if to_log or any(k.arg == "extra" for k in node.keywords):
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


def label_keys(call: ast.Call) -> set[str] | None:
    """The keywords of ``extra=labels(…)``, or None when the call does not label that way."""
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    if isinstance(extra, ast.Call) and isinstance(extra.func, ast.Name) and extra.func.id == "labels":
        return {k.arg for k in extra.keywords if k.arg is not None}
    return None


class TestOneWayToLabel:
    def test_every_logging_call_labels_its_record(self) -> None:
        """Each call passes ``extra=labels(event=…)``; a message about a check (``check %s…``) names it."""
        calls = logging_calls()
        assert len(calls) > 30
        unlabelled = [where for where, call in calls if label_keys(call) is None]
        assert unlabelled == [], "pass extra=labels(event=..., ...) (agent/logs/setup.py) at: " + ", ".join(unlabelled)
        about = [(where, call) for where, call in calls if isinstance(call.args[0] if call.args else None,
                                                                       ast.Constant)]
        unnamed = [where for where, call in about if str(call.args[0].value).startswith("check %s")  # type: ignore[attr-defined]
                   and "check" not in (label_keys(call) or set())]
        assert unnamed == [], "a line about a check carries check=: " + ", ".join(unnamed)

    def test_another_extra_is_kept_not_lost(self) -> None:
        """An ``extra=`` key outside ``labels`` still reaches the line (as a label), and a library's record is
        labelled ``event=library``."""
        record = logging.makeLogRecord({"name": "readiness_agent", "msg": "m", "levelno": logging.WARNING,
                                        "levelname": "WARNING", "check": "cache", "labels": {"event": "e"}})
        assert record_labels(record) == {"event": "e", "check": "cache"}
        library = logging.makeLogRecord({"name": "asyncio", "msg": "Task exception was never retrieved"})
        assert _TextFormatter("%(message)s").format(library).endswith("[event=library logger=asyncio]")


def text_records(out: str) -> list[tuple[str, dict[str, str]]]:
    """(message, labels) of each text record; a record's later lines (a traceback) are indented by two spaces."""
    records = []
    for line in re.split(r"\n(?!  )", out.rstrip("\n")):
        match = TEXT_LINE.match(line)
        assert match, f"not a log line: {line!r}"
        pairs = (match["labels"] or "").split()
        records.append((match["message"], dict(p.split("=", 1) for p in pairs)))
    return records


def json_records(out: str) -> list[tuple[str, dict[str, str]]]:
    records = []
    for line in out.splitlines():
        entry: dict[str, Any] = json.loads(line)
        records.append((entry["message"], entry.get("logging.googleapis.com/labels", {})))
    return records


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_line_of_a_real_run_has_its_event_and_check(redis_proc: RedisProcess, fmt: str) -> None:
    """Start (an ACL user without INFO: the degraded-commands warning), ready, Redis killed, SIGTERM: every line
    has ``event``; a line about a check has ``check``."""
    redis_proc.add_user("probe", "probe-pass", "+@all", "-info")
    url = f"redis://probe:probe-pass@127.0.0.1:{redis_proc.port}/0"
    with AgentProcess("--redis-url", url, "--log-format", fmt, "--drain-seconds", "0.2", "--window", "0.2",
                      "--interval", "0.5", "--retry-interval", "0.1", "--timeout", "0.3") as agent:
        agent.wait_status("/readyz", 200, 10)
        redis_proc.kill()
        agent.wait_status("/readyz", 503, 5)
        agent.signal(signal.SIGTERM)
        assert agent.wait(10) == 0
        out = agent.stdout()
    records = json_records(out) if fmt == "json" else text_records(out)
    events = [labels.get("event") for _, labels in records]
    assert None not in events, [m for m, labels in records if "event" not in labels]
    assert {"degraded_commands", "transition", "draining"} <= set(events)
    for message, labels in records:
        about = ABOUT_A_CHECK.match(message)
        if about:
            assert labels.get("check") == about.group(1), (message, labels)
    degraded = [labels for _, labels in records if labels["event"] == "degraded_commands"]
    assert degraded == [{**({"component": "readiness-agent"} if fmt == "json" else {}),
                         "event": "degraded_commands", "check": "redis"}]


def test_static_check_sees_an_unlabelled_call(tmp_path: Path) -> None:
    """The static check finds the old shape (``extra={"check": …}``) and a bare call."""
    source = 'log.warning("check %s: x", n, extra={"check": n, "event": "e"})\nlog.info("y")\n'
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    assert [label_keys(c) for c in calls] == [None, None]


def test_library_records_warnings_and_thread_exceptions_take_the_same_way() -> None:
    """An unretrieved task exception (the ``asyncio`` logger), a Python warning and an exception that ends a
    thread: each one labelled line on the log output, and nothing on stderr."""
    script = """if True:
        import asyncio, gc, sys, threading, warnings
        from agent.logs.setup import setup_logging
        setup_logging("text", "info", sys.stdout)
        async def main():
            task = asyncio.create_task(asyncio.to_thread(int, "x"))
            await asyncio.wait([task])
            del task
            gc.collect()
        asyncio.run(main())
        warnings.warn("a warning")
        thread = threading.Thread(target=int, args=("y",), name="worker")
        thread.start()
        thread.join()
    """
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    records = text_records(proc.stdout)
    assert [labels for _, labels in records] == [
        {"event": "library", "logger": "asyncio"},
        {"event": "library", "logger": "py.warnings"},
        {"event": "thread_exception"},
    ], proc.stdout
