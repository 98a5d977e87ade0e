"""Secrets never appear in any output: stdout, stderr, logs, ``/status``, ``/metrics``, ``check`` output, errors.

Part of the adversarial suite (``test_adversarial.py``). The property test draws passwords of at least 8
characters over the printable range (ASCII and beyond), puts them into a Redis URL raw or percent-encoded, in
every form a URL can carry them (``:pw@``, ``user:pw@``, ``pw@``) and through every source (flag, environment,
``REDIS_URL``, the file, a ``checks:`` entry), valid or not, and runs the real agent code in-process against a
real ``redis-server`` that refuses the password (so the auth failure path runs too). Degenerate passwords are
excluded with ``assume``: fewer than 4 distinct non-space characters, only digits and number punctuation
(``00000123`` turns up in latencies and timestamps), or text that the same configuration prints anyway with a
neutral password (a password such as ``127.0.0.1:`` would match the address, not a leak). The end-to-end
test runs the agent as a process with the issue's passwords, authenticated for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agent.commands import _log_settings, build_agent, check_once
from agent.config.loader import ConfigError, load_settings
from agent.config.settings import Platform, Settings
from agent.logs.verdict_log import VerdictLog
from agent.server.app import make_app
from agent.server.metrics import Metrics
from harness.agent_process import AgentProcess
from harness.hostile_http import AGENT_ROOT, cli, http_request
from harness.redis_server import RedisProcess
from harness.wait import until

SERVER_PASSWORD = "server-side-Only-7261"  # what the test Redis requires: every drawn password is refused
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.characters(
    categories=["L", "N", "P", "S"], min_codepoint=0xA1, max_codepoint=0x2FFF)
FORMS = ("colon", "user", "bare")
SOURCES = ("flag", "env", "REDIS_URL", "file", "checks")
VARIANTS = ("ok", "bad_port", "bad_db")
NUMBERISH = set("0123456789.:-+eE ")


def local(_env: object) -> tuple[Platform, str]:
    return Platform.LOCAL, "test"


def url_for(password: str, form: str, encoded: bool, port: int, variant: str) -> str:
    secret = quote(password, safe="") if encoded else password
    userinfo = {"colon": f":{secret}", "user": f"app:{secret}", "bare": secret}[form]
    tail = {"ok": f"{port}/0", "bad_port": "x9/0", "bad_db": f"{port}/zz"}[variant]
    return f"redis://{userinfo}@127.0.0.1:{tail}"


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the agent's logger and aiohttp's write, as text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(labels)s", defaults={"labels": ""}))
    loggers = [logging.getLogger(name) for name in ("readiness_agent", "aiohttp.server", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def configure(url: str, source: str, tmp: Path) -> Settings:
    flags: dict[str, object] = {}
    env: dict[str, str] = {}
    config_file = None
    if source == "flag":
        flags["redis_url"] = url
    elif source == "env":
        env["READINESS_AGENT_REDIS_URL"] = url
    elif source == "REDIS_URL":
        env["REDIS_URL"] = url
    else:
        config_file = str(tmp / "agent.yaml")
        body = (f"redis_url: {json.dumps(url)}\n" if source == "file"
                else f"checks:\n  - name: cache\n    url: {json.dumps(url)}\n")
        Path(config_file).write_text(body, encoding="utf-8")
    return load_settings(flags, env, local, config_file=config_file)


async def run_outputs(settings: Settings) -> str:
    """What the agent shows for ``settings``: logs, /status, /metrics, /readyz?verbose and ``check`` output,
    after at least one real check against the Redis that refuses the password."""
    registry = CollectorRegistry()
    agent = build_agent(settings)
    agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, settings.window))
    agent.store.subscribe(VerdictLog(agent.clock, serving=True))
    app = make_app(agent, registry)
    _log_settings(settings)
    await agent.start()
    try:
        for _ in range(200):  # every check has reported once (each is refused in about a millisecond)
            if all(c.last is not None for c in agent.snapshot.checks.values()):
                break
            await asyncio.sleep(0.005)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            bodies = [await (await client.get(path)).text() for path in ("/status", "/metrics", "/readyz?verbose")]
    finally:
        await agent.stop()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await check_once(settings)
    return "\n".join([*bodies, out.getvalue(), repr(settings), json.dumps(settings.effective())])


def everything_shown(password: str, form: str, encoded: bool, source: str, variant: str, port: int,
                     tmp: Path) -> str:
    """All output of one configuration: the one-line error, or logs and every endpoint of a running agent."""
    url = url_for(password, form, encoded, port, variant)
    with captured_logs() as logs:
        try:
            settings_ = configure(url, source, tmp)
        except ConfigError as exc:
            return str(exc) + logs.getvalue()
        shown = asyncio.run(run_outputs(settings_))
    return shown + logs.getvalue()


@pytest.fixture(scope="module")
def refusing_redis() -> Iterator[RedisProcess]:
    with RedisProcess(requirepass=SERVER_PASSWORD) as proc:
        yield proc.start()


class TestSecretsProperty:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
    @given(password=st.text(PRINTABLE, min_size=8, max_size=40), form=st.sampled_from(FORMS),
           encoded=st.booleans(), source=st.sampled_from(SOURCES), variant=st.sampled_from(VARIANTS))
    def test_a_password_never_appears_in_any_output(self, refusing_redis: RedisProcess, tmp_path: Path,
                                                    password: str, form: str, encoded: bool, source: str,
                                                    variant: str) -> None:
        """A drawn password, raw or percent-encoded, in any URL form and source, valid or not, appears in no
        error, log line, /status, /metrics, /readyz?verbose or ``check`` output."""
        assume(len(set(password.replace(" ", ""))) >= 4)
        assume(not set(password) <= NUMBERISH)  # "00000123" is a latency or timestamp, not a leak
        port = refusing_redis.port
        neutral = everything_shown("NEUTRALpw", form, encoded, source, variant, port, tmp_path)
        assume(password not in neutral and quote(password, safe="") not in neutral)
        seen = everything_shown(password, form, encoded, source, variant, port, tmp_path)
        assert password not in seen
        if encoded:
            assert quote(password, safe="") not in seen
        assert "Traceback" not in seen


ISSUE_PASSWORDS = [
    "Zq9SEC@RETpw",  # an @ inside: the old regex printed "RETpw@127.0.0.1"
    "Zq9SEC/RETpw",  # a raw /: the old error printed the whole URL
    "aB3/+dE=fG9/hI0=",  # a generated base64 password
    "p#q?r:s@t%zz",  # every character that moves a generic URL parser's idea of the host
]


class TestSecretsEndToEnd:
    def test_real_agent_with_hostile_passwords_shows_none_of_them(self, tmp_path: Path) -> None:
        """One real Redis with an ACL user per password; the agent authenticates with each (raw URL, encoded
        URL, password file, and the bare ``redis://PASSWORD@host`` form) and gets ready, and no password is
        in stdout, stderr, /status, /metrics, /readyz?verbose, ``check`` or ``wait`` output, or errors."""
        with RedisProcess() as redis:
            redis.start()
            checks = []
            for index, password in enumerate(ISSUE_PASSWORDS):
                user = f"u{index}"
                assert redis.cli("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all") == "OK"
                (tmp_path / f"pw{index}").write_text(password + "\n")
                raw = f"redis://{user}:{password}@127.0.0.1:{redis.port}/0"
                encoded = f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{redis.port}/0"
                if not set(password) & set("/?#"):  # unencoded, redis-py misreads them: refused (test_urls.py)
                    checks.append(f"  - {{name: raw{index}, url: {json.dumps(raw)}}}")
                checks.append(f"  - {{name: enc{index}, url: {json.dumps(encoded)}}}")
                checks.append(f"  - {{name: file{index}, url: 'redis://{user}@127.0.0.1:{redis.port}/0', "
                              f"password_file: {json.dumps(str(tmp_path / f'pw{index}'))}}}")
                if ":" not in password and not set(password) & set("/?#"):  # redis://SECRET@host: the user
                    # name is the secret (default user)
                    checks.append(f"  - {{name: bare{index}, required: false, "
                                  f"url: {json.dumps(f'redis://{password}@127.0.0.1:{redis.port}/0')}}}")
            config = tmp_path / "agent.yaml"
            config.write_text("window: 0\nchecks:\n" + "\n".join(checks) + "\n")
            seen = []
            with AgentProcess("--config", str(config), "--log-level", "debug", root=AGENT_ROOT) as agent:
                until(lambda: http_request(agent.port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")[0] == 200, 10, "/readyz 200", period=0.02)
                for path in ("/status", "/metrics", "/readyz?verbose"):
                    seen.append(http_request(agent.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                                             "Connection: close\r\n\r\n".encode())[1].decode(errors="replace"))
                seen.append(agent.output())
            for args in (["check", "--config", str(config)], ["wait", "--max-wait", "5", "--config", str(config)]):
                code, out, err, _wall = cli(*args)
                assert code == 0, out + err
                seen.append(out + err)
            for index, password in enumerate(ISSUE_PASSWORDS):  # error paths: bad port or db, flag or REDIS_URL
                url = f"redis://:{password}@127.0.0.1:x9/0" if index % 2 else f"redis://{password}@h/zz"
                code, out, err, _wall = cli("check", "--redis-url", url) if index < 2 else cli(
                    "check", env={"REDIS_URL": url})
                assert code == 2 and len(err.splitlines()) == 1, err
                seen.append(out + err)
        text = "\n".join(seen)
        assert re.search(r"\bready\b", text)
        for password in ISSUE_PASSWORDS:
            assert password not in text
            assert quote(password, safe="") not in text
        assert "***" in text
