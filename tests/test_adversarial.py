"""The adversarial suite: the agent as an attacker on the pod network and a careless operator would meet it.

Each test is one item of the hostile-input issue, against the real agent (a child process, loopback only,
bounded in count and time: a few hundred connections, not twelve thousand). Secrets have their own module,
``test_secrets.py``. To see which of these failed before the renovation, run the suite against that checkout:

    git worktree add /tmp/oldmain 1f1ab78
    ADVERSARIAL_AGENT_ROOT=/tmp/oldmain .venv/bin/pytest tests/test_adversarial.py

(the in-process tests of http_limits then still test this tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from harness.agent_process import AgentProcess
from harness.hostile_http import (
    AGENT_ROOT,
    closed_by_peer,
    half_open,
    http_request,
    http_status,
    one_error_line,
)
from harness.wait import until

CLOSED = ["--redis-url", "redis://127.0.0.1:1/0"]  # nothing listens on port 1: the checks fail fast
TOKEN = "s3cret-Drain-Token_42"


def drain_request(port: int, authorization: bytes | None) -> int:
    head = b"POST /drain HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    return http_request(port, head + b"\r\n")[0]


@contextlib.contextmanager
def agent_records() -> Iterator[list[logging.LogRecord]]:
    """The records the agent's logger emits inside the block."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("readiness_agent")
    keep = Keep()
    logger.addHandler(keep)
    try:
        yield records
    finally:
        logger.removeHandler(keep)


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _tiny_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/livez", _ok)
    return app


class TestConnectionFlood:
    def test_half_sent_requests_do_not_starve_the_probes_under_a_low_file_limit(self) -> None:
        """400 half-sent requests under a 256-file limit: /livez and /readyz still answer, fds stay under the
        limit, and nothing is logged as a traceback."""
        with AgentProcess(*CLOSED, nofile=(256, 256), root=AGENT_ROOT) as agent:
            with half_open(agent.port, 400) as socks:
                assert len(socks) >= 300  # the kernel accepted them: the agent had to deal with each
                started = time.monotonic()
                assert http_status(agent.port, "/livez", timeout=1.0) == 200
                assert http_status(agent.port, "/readyz", timeout=1.0) == 503  # answered: Redis is closed
                assert time.monotonic() - started < 2 * 1.0 + 1
                assert agent.open_fds() < 256
            assert "Traceback" not in agent.output() and "out of system resource" not in agent.output()
            assert len(agent.stderr().splitlines()) <= 5, agent.stderr()[-2000:]

    def test_soft_file_limit_is_raised_to_the_hard_limit(self) -> None:
        """Started with a soft limit of 256 under a hard 4096, the agent runs with 4096."""
        with AgentProcess(*CLOSED, nofile=(256, 4096), root=AGENT_ROOT) as agent:
            assert agent.soft_nofile() == 4096


class TestIdleTimeout:
    async def test_a_request_never_finished_is_closed_after_the_idle_timeout(self) -> None:
        """A connection that sent half a request header is closed by the server after idle_timeout, even while
        it trickles more header bytes (the timer runs from the connection's start)."""
        from agent.server.app import serve

        app = _tiny_app()
        async with serve(app, "127.0.0.1", 0, idle_timeout=0.5) as listening:
            port = listening.server.sockets[0].getsockname()[1]
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /livez HTTP/1.1\r\n")
            opened = time.monotonic()
            try:
                while not closed_by_peer(sock):
                    assert time.monotonic() - opened < 0.5 * 2 + 1
                    sock.sendall(b"X: y\r\n")  # slowloris: more header, never the end
                    await asyncio.sleep(0.05)
                assert time.monotonic() - opened >= 0.45  # the timeout, not at once (loop timers round down)
            finally:
                sock.close()

    async def test_connections_beyond_the_cap_close_the_oldest(self) -> None:
        """At the cap, a new connection closes the oldest: a flood of idle connections cannot lock a probe out."""
        from agent.server.app import serve

        app = _tiny_app()
        async with serve(app, "127.0.0.1", 0, max_connections=20) as listening:
            port = listening.server.sockets[0].getsockname()[1]
            with half_open(port, 60) as socks:
                await asyncio.sleep(0.1)
                assert len(listening.limiter.open) <= 20
                status = await asyncio.to_thread(http_status, port, "/livez", 1.0)
                assert status == 200
                assert listening.limiter.evicted >= 40
                assert closed_by_peer(socks[0]) and not closed_by_peer(socks[-1])


class TestErrorLogging:
    def test_malformed_requests_are_one_line_each_at_most_and_never_a_traceback(self) -> None:
        """200 requests with a 9,000-byte request line: 400 each, no traceback, a handful of lines in all."""
        with AgentProcess(*CLOSED, root=AGENT_ROOT) as agent:
            before = len(agent.output().splitlines())
            line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            statuses = {http_request(agent.port, line)[0] for _ in range(200)}
            assert statuses <= {400, 0}
            assert http_status(agent.port, "/livez") == 200
            output = agent.output()
            assert "Traceback" not in output
            assert len(output.splitlines()) - before <= 5, output[-3000:]

    def test_accept_errors_are_rate_limited(self) -> None:
        """10,000 failed accept() reports from the event loop become one log line, not 10,000 tracebacks."""
        from agent.server.limits import RateLimitedLog, loop_exception_handler

        with agent_records() as records:
            handle = loop_exception_handler(RateLimitedLog(period=60.0))
            loop = asyncio.new_event_loop()
            try:
                for _ in range(10_000):
                    handle(loop, {"message": "socket.accept() out of system resource",
                                  "exception": OSError(24, "Too many open files")})
            finally:
                loop.close()
        assert len(records) == 1
        assert "Too many open files" in records[0].getMessage() and records[0].exc_info is None


    def test_client_errors_never_quote_what_the_client_sent(self) -> None:
        """aiohttp's "Error handling request" record keeps only the exception class (the text may quote a
        token); a failing handler of ours keeps its message; both are one line without a traceback."""
        import sys

        from agent.server.limits import ClientErrorHandler, RateLimitedLog

        with agent_records() as lines:
            handler = ClientErrorHandler(RateLimitedLog(period=0.0))
            try:
                raise ValueError("Bad status line 'Authorization: Bearer s3cret-Drain-Token_42'")
            except ValueError:
                handler.emit(logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                                               "Error handling request from %s", ("10.0.0.9",), sys.exc_info()))
            try:
                raise KeyError("no-such-check")
            except KeyError:
                handler.emit(logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                                               "Unhandled exception", (), sys.exc_info()))
        texts = [r.getMessage() for r in lines]
        assert texts[0] == "HTTP: rejected a request from 10.0.0.9 (ValueError)"
        assert "no-such-check" in texts[1] and "KeyError" in texts[1]
        assert all(r.exc_info is None for r in lines) and "s3cret" not in " ".join(texts)


class TestDrainToken:
    def test_non_utf8_authorization_is_401(self, tmp_path: Path) -> None:
        """``Authorization: Bearer \\xff\\xfe`` is a 401, not a 500, and the right token still drains."""
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        with AgentProcess(*CLOSED, "--drain-token-file", str(token), root=AGENT_ROOT) as agent:
            assert drain_request(agent.port, b"Bearer \xff\xfe") == 401
            assert drain_request(agent.port, b"Bearer " + "é".encode() * 3) == 401
            assert drain_request(agent.port, None) == 401
            assert drain_request(agent.port, b"Bearer " + TOKEN.encode()) == 202
            assert "Traceback" not in agent.output()

    def test_non_utf8_token_file_is_401_and_a_warning(self, tmp_path: Path) -> None:
        """A token file that is not UTF-8 gives a warning at start and 401s, never a 500."""
        token = tmp_path / "token"
        token.write_bytes(b"\xff\xfe\xfd-token")
        with AgentProcess(*CLOSED, "--drain-token-file", str(token), root=AGENT_ROOT) as agent:
            assert drain_request(agent.port, b"Bearer \xff\xfe\xfd-token") == 401
            assert drain_request(agent.port, b"Bearer x") == 401
            assert "drain token file" in agent.stdout() and "not UTF-8" in agent.stdout()

    def test_missing_token_file_is_a_warning_at_start(self, tmp_path: Path) -> None:
        """A token file that does not exist is named in a WARNING at start, and the file is picked up once it
        appears."""
        token = tmp_path / "token"
        with AgentProcess(*CLOSED, "--drain-token-file", str(token), root=AGENT_ROOT) as agent:
            assert "drain token file" in agent.stdout() and str(token) in agent.stdout()
            assert drain_request(agent.port, b"Bearer " + TOKEN.encode()) == 401
            token.write_text(TOKEN)
            assert drain_request(agent.port, b"Bearer " + TOKEN.encode()) == 202

    def test_fifo_as_token_file_never_blocks_the_probes(self, tmp_path: Path) -> None:
        """A FIFO at the token path (nobody writing): POST /drain is 401 and /livez keeps answering."""
        fifo = tmp_path / "token"
        os.mkfifo(fifo)
        with AgentProcess(*CLOSED, "--drain-token-file", str(fifo), root=AGENT_ROOT) as agent:
            assert drain_request(agent.port, b"Bearer " + TOKEN.encode()) == 401
            assert http_status(agent.port, "/livez", timeout=1.0) == 200

    def test_rotated_token_with_same_size_and_mtime_is_used(self, tmp_path: Path) -> None:
        """A token file rewritten with the same size and mtime (cp -p) is re-read: the new token drains."""
        token = tmp_path / "token"
        token.write_text("A" * len(TOKEN))
        with AgentProcess(*CLOSED, "--drain-token-file", str(token), root=AGENT_ROOT) as agent:
            assert drain_request(agent.port, b"Bearer wrong") == 401  # the agent has read the first token
            st = token.stat()
            token.write_text(TOKEN)
            os.utime(token, ns=(st.st_atime_ns, st.st_mtime_ns))
            assert drain_request(agent.port, b"Bearer " + b"A" * len(TOKEN)) == 401
            assert drain_request(agent.port, b"Bearer " + TOKEN.encode()) == 202


class TestDrainTokenRules:
    @pytest.mark.parametrize("header", [
        None, "", "Bearer", "Bearer ", "Basic " + TOKEN, "Bearer " + TOKEN + "x", "Bearer " + TOKEN[:-1],
        "Bearer \udcff\udcfe", "Bearer " + "é" * 8, "Bearer " + TOKEN + " extra", "Bearer " + "A" * 5000,
    ])
    async def test_anything_but_the_token_is_refused(self, tmp_path: Path, header: str | None) -> None:
        """Missing, wrong, truncated, non-ASCII (as aiohttp decodes \xff\xfe), oversized or odd headers are
        refused without an exception."""
        from agent.server.drain_token import DrainToken

        path = tmp_path / "token"
        path.write_text(f"  {TOKEN}\n")
        token = DrainToken(str(path))
        assert not await token.authorizes(header)
        assert await token.authorizes(f"bearer {TOKEN}")

    @pytest.mark.parametrize(("content", "problem"), [
        (b"", "is empty"), (b"  \n", "is empty"), (b"\xff\xfe", "is not UTF-8 text"),
        ("tök€n".encode(), "does not hold a token"), (b"two words", "does not hold a token"),
    ])
    async def test_an_unusable_file_is_a_problem_not_a_token(self, tmp_path: Path, content: bytes,
                                                            problem: str) -> None:
        """An empty, non-UTF-8 or non-token file authorizes nothing and says why (never its content)."""
        from agent.server.drain_token import DrainToken

        path = tmp_path / "token"
        path.write_bytes(content)
        token = DrainToken(str(path))
        assert not await token.authorizes("Bearer two")
        assert token.problem is not None and token.problem.startswith(problem)


class TestSignals:
    def test_sigterm_exit_is_bounded_by_the_drain_with_a_body_held_open(self) -> None:
        """SIGTERM with --drain-seconds 0 while a client holds an unfinished request body: exit 0 within a
        second, not after aiohttp's lingering time."""
        with AgentProcess(*CLOSED, "--drain-seconds", "0", root=AGENT_ROOT) as agent:
            sock = socket.create_connection(("127.0.0.1", agent.port))
            try:
                sock.sendall(b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
                time.sleep(0.1)  # let the agent take the request (setup, not an oracle: the bound is below)
                agent.signal(signal.SIGTERM)
                started = time.monotonic()
                assert agent.wait(timeout=15) == 0
                assert time.monotonic() - started < (0 + 0.25) * 2 + 1
            finally:
                sock.close()

    def test_sighup_is_logged_and_ignored(self) -> None:
        """SIGHUP leaves the agent running and says so in one log line."""
        with AgentProcess(*CLOSED, root=AGENT_ROOT) as agent:
            agent.signal(signal.SIGHUP)
            until(lambda: "SIGHUP" in agent.stdout(), 3, "the SIGHUP log line", period=0.02)
            assert agent.alive() and http_status(agent.port, "/livez") == 200


class TestListenErrors:
    @pytest.mark.parametrize("listen", ["no-such-host.invalid:9180", "192.0.2.1:9180"])
    def test_bad_listen_host_is_one_line_on_stderr_exit_2(self, listen: str) -> None:
        """A host that does not resolve or is not ours: exit 2 with one error line on stderr."""
        from harness.hostile_http import cli

        code, _out, err, _wall = cli("run", "--listen", listen, "--platform", "local", *CLOSED)
        assert code == 2
        lines = one_error_line(err)
        assert len(lines) == 1 and "cannot listen" in lines[0], err
        assert "Traceback" not in err


def _config_cases(tmp: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Hostile or careless configuration, each as (arguments, environment) for ``readiness-agent check``."""
    files = {
        "non_utf8": b"window: '\xff\xfe'\n",
        "alias_bomb": b"window:\n  - &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
                      + b"".join(f"  - &{c} [{','.join(['*' + p] * 9)}]\n".encode()
                                 for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
        "big_file": b"checks:\n" + b"".join(f"  - {{name: c{i}, url: 'redis://h{i}:6379/0'}}\n".encode()
                                            for i in range(40_000)),  # 1.6 MB; the 50 MB is the same case
        "duplicate_key": b"interval: 1s\ninterval: 2s\n",
    }
    for name, data in files.items():
        (tmp / f"{name}.yaml").write_bytes(data)
    return {
        "non-UTF-8 byte in the file": (["--config", str(tmp / "non_utf8.yaml")], {}),
        "YAML alias bomb as a value": (["--config", str(tmp / "alias_bomb.yaml")], {}),
        "--config /dev/zero": (["--config", "/dev/zero"], {}),
        "a 1.6 MB file with 40,000 checks": (["--config", str(tmp / "big_file.yaml")], {}),
        "duplicate YAML key": (["--config", str(tmp / "duplicate_key.yaml")], {}),
        "--interval 1e-7": (["--interval", "1e-7", "--retry-interval", "1e-7"], {}),
        "--interval 1ms (meant 1m)": (["--interval", "1ms", "--retry-interval", "1ms"], {}),
        "failure_threshold in Arabic-Indic digits": (["--failure-threshold", "٣"], {}),
        "failure_threshold in full-width digits": (["--failure-threshold", "５"], {}),
        "db index in full-width digits": (["--redis-url", "redis://127.0.0.1:6379/５"], {}),
        "NBSP inside a duration": (["--window", "0\u00a0.5"], {}),
        "NBSP between number and unit": (["--window", "1\u00a0s"], {}),
        "jitter in Arabic-Indic digits": (["--jitter", "٠.٢"], {}),
        "port 0 in the Redis URL": (["--redis-url", "redis://127.0.0.1:0"], {}),
    }


@pytest.fixture(scope="module")
def startup_seconds() -> float:
    """How long ``readiness-agent check --help`` takes here: the interpreter's and the package's start-up."""
    from harness.hostile_http import cli

    return min(cli("check", "--help")[3] for _ in range(2))


class TestConfigRefusals:
    @pytest.mark.parametrize("case", [
        "non-UTF-8 byte in the file", "YAML alias bomb as a value", "--config /dev/zero",
        "a 1.6 MB file with 40,000 checks", "duplicate YAML key", "--interval 1e-7", "--interval 1ms (meant 1m)",
        "failure_threshold in Arabic-Indic digits", "failure_threshold in full-width digits",
        "db index in full-width digits", "NBSP inside a duration", "NBSP between number and unit",
        "jitter in Arabic-Indic digits", "port 0 in the Redis URL",
    ])
    def test_refused_in_one_line_exit_2_within_twice_start_up_plus_a_second(self, tmp_path: Path, case: str,
                                                                            startup_seconds: float) -> None:
        """Each hostile or careless configuration is one error line on stderr, exit 2, no traceback, and the
        process is done within a second of its own start-up time (bound: start-up × 2 + 1 s)."""
        from harness.hostile_http import cli

        args, env = _config_cases(tmp_path)[case]
        code, out, err, wall = cli("check", *args, env=env, timeout=60)
        assert code == 2, (out, err)
        assert len(one_error_line(err)) == 1 and len(err.splitlines()) == 1, err[-2000:]
        assert "Traceback" not in err
        assert wall < startup_seconds * 2 + 1.0, (wall, startup_seconds)

    def test_error_in_redis_url_names_the_variable_actually_set(self) -> None:
        """A bad REDIS_URL is reported as REDIS_URL, not under READINESS_AGENT_REDIS_URL."""
        from harness.hostile_http import cli

        code, _out, err, _wall = cli("check", env={"REDIS_URL": "redis://h:notaport"})
        assert code == 2
        assert "invalid REDIS_URL " in err and "READINESS_AGENT_REDIS_URL" not in err
