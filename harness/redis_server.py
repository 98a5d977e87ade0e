"""Real ``redis-server`` processes for tests and benchmarks, and the faults they can be put in.

Why: the agent must tell a *usable* Redis from one that answers but refuses (``-LOADING``, ``-BUSY``,
``-MASTERDOWN``, ``-MISCONF``, ``-NOAUTH``, a full server) or one that does not answer at all. Fakes get those
replies subtly wrong, so every fault here is produced by a real server, following the recipes in
``docs/design.md`` ("Testing recipes").

The harness talks to Redis through its own tiny RESP client (``RespConnection``), never through redis-py, so a
bug in the code under test (or in redis-py's retries) cannot hide a bug in the harness. Every operation is
bounded in time, readiness is detected by polling a raw-socket ``PING``, and ``close()`` (also run by the
context manager and at interpreter exit) kills every process it started and removes its temp directory.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from harness.wait import until

HOST = "127.0.0.1"
REDIS_SERVER = "redis-server"

# ---------------------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------------------

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _port_candidates() -> range:
    """Ports below the kernel's ephemeral range (or above it), so outgoing connections never take them."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low > 20_000 + 1000:
        return range(20_000, min(low, 32_000))
    return range(high + 1, 65_000)


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a listener could bind ``host:port`` now (SO_REUSEADDR, as redis-server and asyncio bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A free TCP port outside ``ip_local_port_range``, never handed out twice by this process.

    Outside the ephemeral range so that a server restarted on the same port does not find it taken by an
    outgoing connection; still racy against other processes, so callers that spawn a server retry.
    """
    candidates = _port_candidates()
    with _ports_lock:
        for _ in range(200):
            port = random.choice(candidates)
            if port not in _handed_out and port_is_free(port, host):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port found in {candidates}")


# ---------------------------------------------------------------------------------------------------------
# A tiny RESP2 client
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RespError:
    """An error reply (``-LOADING ...``), returned as a value so tests can assert on it."""

    message: str

    @property
    def code(self) -> str:
        """The error's first word, e.g. ``LOADING``, ``BUSY``, ``ERR``."""
        return self.message.split(" ", 1)[0]

    def __str__(self) -> str:
        return self.message


Reply = str | int | None | RespError | list["Reply"]


class ConnectionClosedError(ConnectionError):
    """The server closed the connection cleanly (EOF), as opposed to a reset (``ConnectionResetError``)."""


def encode_command(*args: str | bytes | int | float) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespConnection:
    """One raw TCP connection speaking RESP2; every read and write is bounded by ``timeout``.

    Socket errors and timeouts raise (``OSError``, ``TimeoutError``); error *replies* are returned as
    ``RespError`` values.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._buf = bytearray()

    def send(self, *args: str | bytes | int | float) -> None:
        """Send one command without reading its reply (for commands that block the server)."""
        self.sock.sendall(encode_command(*args))

    def command(self, *args: str | bytes | int | float) -> Reply:
        """Send one command and return its reply."""
        self.send(*args)
        return self.read_reply()

    def read_reply(self) -> Reply:
        """Read and decode one reply; ``ConnectionClosedError`` on EOF, ``ConnectionResetError`` on RST."""
        line = self._read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            return self._read_exact(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self.read_reply() for _ in range(count)]
        raise ValueError(f"not a RESP reply: {line!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosedError("connection closed by server")
        self._buf += chunk

    def _read_line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _read_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BackgroundCommand:
    """A command sent on its own connection whose reply is not awaited (it blocks the server).

    ``wait()`` reads the reply when it finally comes; ``close()`` drops the connection.
    """

    def __init__(self, conn: RespConnection, args: Sequence[str | int | float]) -> None:
        self.conn = conn
        self.args = tuple(args)

    def wait(self, timeout: float = 10.0) -> Reply:
        """Block until the command's reply arrives (at most ``timeout`` s) and return it."""
        self.conn.sock.settimeout(timeout)
        return self.conn.read_reply()

    def close(self) -> None:
        """Close the connection (the server may still be running the command)."""
        self.conn.close()


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` output as a flat ``field -> value`` dict (section headers dropped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value
    return fields


def command_calls(info: dict[str, str]) -> dict[str, int]:
    """``{command: calls}`` from a parsed ``INFO commandstats`` (``cmdstat_ping:calls=3,usec=…``)."""
    return {key.removeprefix("cmdstat_"): int(dict(part.split("=", 1) for part in value.split(","))["calls"])
            for key, value in info.items() if key.startswith("cmdstat_")}


# ---------------------------------------------------------------------------------------------------------
# The process
# ---------------------------------------------------------------------------------------------------------


class _Owned:
    """What a ``RedisProcess`` must release, kept apart from it so a finalizer can run without it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def release(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # SIGKILL works on a SIGSTOPped process too
                proc.wait(5)
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


# `setpriv --pdeathsig KILL` makes the kernel kill redis-server if the thread that spawned it dies (e.g. the
# test runner is SIGKILLed); only safe from the main thread, whose death is the process's death.
_SETPRIV = shutil.which("setpriv")

# A slow but responsive load (docs/design.md): ~68 us per key, and -LOADING answered promptly meanwhile.
SLOW_LOAD_ARGS = ("--key-load-delay", "10", "--loading-process-events-interval-bytes", "1024")
# Locked-down servers, as managed services ship them: INFO renamed away; a RESP2-only server (Redis 5 has no
# HELLO: removing it makes a Redis 7 answer HELLO with "unknown command", exactly as Redis 5 does).
NO_INFO_ARGS = ("--rename-command", "INFO", "")
RESP2_ONLY_ARGS = ("--rename-command", "HELLO", "")


class RedisProcess:
    """A ``redis-server`` on ``127.0.0.1:<free port>`` in its own temp dir, and recipes for its faults.

    Defaults: ``--save "" --appendonly no`` (no persistence unless asked), ``--enable-debug-command local``
    and ``--enable-protected-configs local`` (the recipes use ``DEBUG`` and ``CONFIG SET dir``).
    ``extra_args`` are appended, so they override. Use as a context manager or call ``close()``;
    ``start()`` returns ``self`` for chaining.
    """

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        requirepass: str | None = None,
        save: str = "",
        port: int | None = None,
        binary: str = REDIS_SERVER,
        start_timeout: float = 5.0,
    ) -> None:
        self.extra_args: list[str] = list(extra_args)
        self.password = requirepass
        self.save = save
        self.binary = binary
        self.start_timeout = start_timeout
        # Once a caller has seen the port (e.g. handed it to an agent before start()), it must not change.
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port()
        self.root = Path(tempfile.mkdtemp(prefix="redisproc-"))
        self.dir = self.root / "data"  # --dir; the log lives outside it so MISCONF can remove it
        self.dir.mkdir()
        self.log_path = self.root / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._background: list[BackgroundCommand] = []
        self._held: list[RespConnection] = []
        self._companions: list[RedisProcess] = []
        self._closed = False
        # Last line of defence: a RedisProcess that is garbage-collected, or still alive at interpreter
        # exit, is killed and its dir removed even if nobody called close().
        self._owned = _Owned(self.root)
        self._finalizer = weakref.finalize(self, self._owned.release)

    # -- identity ----------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """The TCP port (kept across ``restart()``; fixed from the moment it is read)."""
        self._port_fixed = True
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, e.g. the target of a ``FaultProxy``."""
        return (HOST, self.port)

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id; ``RuntimeError`` if it is not running."""
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def command_line(self, extra_args: Iterable[str] = ()) -> list[str]:
        """The full ``redis-server`` argv this object would run."""
        args = [
            self.binary,
            "--port", str(self._port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--save", self.save,
            "--appendonly", "no",
            "--enable-debug-command", "local",
            "--enable-protected-configs", "local",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args + self.extra_args + list(extra_args)

    def start(self, *, _transient_args: Sequence[str] = ()) -> RedisProcess:
        """Spawn the server and return once it answers ``PING`` (any reply: PONG, -LOADING, -NOAUTH ...).

        If the port turns out to be taken (another process won the race) a fresh port is chosen, unless the
        port is fixed (passed in, or already read through ``port``/``address``/``url``, or used by an earlier
        start), in which case the bind is retried for up to ``start_timeout``.
        """
        if self._closed:
            raise RuntimeError("RedisProcess is closed")
        if self.running:
            raise RuntimeError("redis-server is already running")
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._spawn(_transient_args)
            failure = self._wait_answering(deadline)
            if failure is None:
                self._port_fixed = True  # restarts must come back on the same port
                return self
            self._reap(kill=True)
            if time.monotonic() >= deadline or "in use" not in failure:
                raise RuntimeError(f"redis-server on port {self._port} did not start: {failure}")
            if not self._port_fixed:
                self._port = free_port()
            else:
                time.sleep(0.05)  # the same port is needed: give its holder a moment, then retry

    def _spawn(self, extra: Sequence[str]) -> None:
        argv = self.command_line(extra)
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._owned.procs = [p for p in self._owned.procs if p.poll() is None] + [self._proc]
        self._paused = False

    def _wait_answering(self, deadline: float) -> str | None:
        """Poll a raw PING until *our* process answers; return a failure description instead of raising."""
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                return f"exited with {self._proc.returncode}: {self.log_tail()}"
            try:
                # Short per-attempt timeout: a squatter that accepts but never answers must not stall us.
                with RespConnection(HOST, self._port, timeout=0.25) as conn:
                    conn.command("PING")
                    # A reply proves *a* server; make sure it is ours and not a neighbour's on a raced port.
                    if self.password is not None:
                        conn.command("AUTH", self.password)
                    info = conn.command("INFO", "server")
                    if isinstance(info, str) and parse_info(info).get("process_id") == str(self._proc.pid):
                        return None
                    if isinstance(info, str):
                        return "port in use by another redis-server"
                    if self._proc.poll() is None:
                        return None  # INFO refused (e.g. --requirepass in extra_args): trust the live pid
            except OSError:
                pass
            if time.monotonic() >= deadline:
                return f"no PING reply before the deadline: {self.log_tail()}"
            time.sleep(0.005)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _reap(self, *, kill: bool, timeout: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        self._drop_connections()
        if proc is None or proc.poll() is not None:
            return
        if self._paused:
            proc.send_signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM
            self._paused = False
        if not kill:
            proc.terminate()
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                pass  # e.g. a shutdown save that fails keeps redis alive: fall through to SIGKILL
        proc.kill()
        proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the server and reap it: the crash case (clients see RST/EOF, nothing is saved)."""
        self._reap(kill=True)

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM (graceful shutdown), SIGKILL if it has not exited after ``timeout`` s."""
        self._reap(kill=False, timeout=timeout)

    def restart(self, extra_args: Sequence[str] | None = None, *, kill: bool = False) -> RedisProcess:
        """Stop (or kill) and start again on the same port and dir; ``extra_args`` replaces the old ones."""
        if kill:
            self.kill()
        else:
            self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the kernel still completes TCP handshakes from the backlog, but nothing answers."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self._proc is not None
        self._proc.send_signal(sig)

    def _drop_connections(self) -> None:
        for bg in self._background:
            bg.close()
        for conn in self._held:
            conn.close()
        self._background.clear()
        self._held.clear()

    def close(self) -> None:
        """Kill the server and any helper servers, close helper connections, remove the temp dir."""
        if self._closed:
            return
        self._closed = True
        try:
            self.kill()
            for other in self._companions:
                other.close()
        finally:
            self._finalizer()  # kills anything left and removes the dir, once

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- talking to it -----------------------------------------------------------------------------------

    def connect(self, *, timeout: float = 2.0, auth: bool = False) -> RespConnection:
        """A new raw connection (unauthenticated unless ``auth``); the caller closes it."""
        conn = RespConnection(HOST, self._port, timeout=timeout)
        if auth and self.password is not None:
            reply = conn.command("AUTH", self.password)
            if isinstance(reply, RespError):
                conn.close()
                raise ConnectionError(f"AUTH failed: {reply}")
        return conn

    def cli(self, *args: str | int | float, timeout: float = 2.0, auth: str | None = None) -> Reply:
        """Run one command on a fresh connection and return its reply (errors as ``RespError`` values).

        The connection first authenticates with ``auth`` if given, else with the known password if any; a
        failed AUTH is returned as the reply.
        """
        password = auth if auth is not None else self.password
        with self.connect(timeout=timeout) as conn:
            if password is not None:
                reply = conn.command("AUTH", password)
                if isinstance(reply, RespError):
                    return reply
            return conn.command(*args)

    def set_password(self, password: str | None) -> None:
        """Change ``requirepass`` at runtime (``None`` removes it); connections already open stay logged in."""
        self._expect_ok(self.cli("CONFIG", "SET", "requirepass", password or ""), "CONFIG SET requirepass")
        self.password = password

    def ping(self, timeout: float = 1.0, *, auth: bool = False) -> Reply:
        """``PING`` on a fresh connection, unauthenticated unless ``auth``: what a probe sees."""
        with self.connect(timeout=timeout, auth=auth) as conn:
            return conn.command("PING")

    def info(self, section: str = "everything", *, timeout: float = 2.0) -> dict[str, str]:
        """``INFO <section>`` parsed into a dict (INFO answers even while loading or stale)."""
        reply = self.cli("INFO", section, timeout=timeout)
        if not isinstance(reply, str):
            raise RuntimeError(f"INFO failed: {reply}")
        return parse_info(reply)

    def wait_for_ping(self, predicate: Callable[[Reply], bool], timeout: float = 5.0, what: str = "") -> Reply:
        """Poll an authenticated ``ping()`` until ``predicate(reply)``; connection errors mean "not yet".

        Authenticated because Redis checks auth before LOADING/BUSY/MASTERDOWN: an anonymous PING to a
        password-protected server would only ever say NOAUTH.
        """

        def probe() -> tuple[Reply] | None:
            try:
                reply = self.ping(timeout=0.5, auth=True)
            except OSError:
                return None
            return (reply,) if predicate(reply) else None

        return until(probe, timeout, what=what or "PING reply")[0]

    def background(self, *args: str | int | float) -> BackgroundCommand:
        """Send a command on a new connection without waiting for its reply; closed by ``close()``."""
        conn = self.connect(auth=True)
        try:
            conn.send(*args)
        except OSError:
            conn.close()
            raise
        bg = BackgroundCommand(conn, [str(a) for a in args])
        self._background.append(bg)
        return bg

    # -- fault recipes -----------------------------------------------------------------------------------

    def start_loading(self, seconds: float = 3.0, *, timeout: float = 30.0) -> None:
        """Restart into a real ``-LOADING`` phase of roughly ``seconds`` and return once PING says LOADING.

        Recipe (docs/design.md): ``DEBUG POPULATE``, ``SAVE``, restart on the same dir with ``--key-load-delay 10
        --loading-process-events-interval-bytes 1024`` (without the latter, PING is answered only every few
        seconds while loading). Measured here: ~68 us per key, hence ~14 000 keys per second. The slow-load
        options apply to this start only: a later ``restart()`` loads the same dump at full speed.
        """
        keys = max(1000, int(seconds * 14_000))
        self.cli("FLUSHALL", timeout=timeout)
        self._expect_ok(self.cli("DEBUG", "POPULATE", keys, timeout=timeout), "DEBUG POPULATE")
        self._expect_ok(self.cli("SAVE", timeout=timeout), "SAVE")
        self.kill()  # the dump is complete once SAVE returns; no need for a graceful stop
        self.start(_transient_args=SLOW_LOAD_ARGS)
        self.wait_for_ping(lambda r: isinstance(r, RespError) and r.code == "LOADING", timeout=2.0, what="-LOADING")

    def wait_loaded(self, timeout: float = 30.0) -> None:
        """Wait until loading has finished (an authenticated PING answers PONG again)."""
        self.wait_for_ping(lambda r: r == "PONG", timeout, what="end of loading")

    def become_orphan_replica(self, *, serve_stale_data: bool = False, timeout: float = 10.0) -> None:
        """Make this server a replica whose master is gone (``master_link_status:down``).

        A helper master is started, this server syncs from it (link ``up``), then the master is killed, so
        the replica really lost its master rather than never having one. With ``serve_stale_data=False``
        (``replica-serve-stale-data no``) PING answers ``-MASTERDOWN``; INFO still answers.
        """
        master = RedisProcess(["--repl-diskless-sync-delay", "0"])  # the default 5 s delays the first sync
        self._companions.append(master)
        master.start()
        self.cli("CONFIG", "SET", "replica-serve-stale-data", "yes" if serve_stale_data else "no")
        self._expect_ok(self.cli("REPLICAOF", HOST, master.port), "REPLICAOF")
        until(lambda: self.info("replication").get("master_link_status") == "up", timeout, what="replica link up")
        master.kill()
        until(
            lambda: self.info("replication").get("master_link_status") == "down", timeout, what="replica link down"
        )

    def start_busy_script(self, *, threshold_ms: int = 100, timeout: float = 5.0) -> BackgroundCommand:
        """Run ``EVAL "while true do end" 0`` in the background; return once PING answers ``-BUSY``.

        ``busy-reply-threshold`` (alias ``lua-time-limit``) is lowered to ``threshold_ms`` so BUSY starts
        fast. End it with ``end_busy_script()`` (``SCRIPT KILL``).
        """
        self._expect_ok(self.cli("CONFIG", "SET", "busy-reply-threshold", threshold_ms), "CONFIG SET")
        script = self.background("EVAL", "while true do end", 0)
        self.wait_for_ping(lambda r: isinstance(r, RespError) and r.code == "BUSY", timeout, what="-BUSY")
        return script

    def end_busy_script(self, script: BackgroundCommand, timeout: float = 5.0) -> Reply:
        """``SCRIPT KILL`` the busy script, wait for PONG, and return the script's own (error) reply."""
        self._expect_ok(self.cli("SCRIPT", "KILL", timeout=timeout), "SCRIPT KILL")
        reply = script.wait(timeout)
        self.wait_for_ping(lambda r: r == "PONG", timeout, what="PONG after SCRIPT KILL")
        return reply

    def debug_sleep(self, seconds: float) -> BackgroundCommand:
        """``DEBUG SLEEP seconds`` on a background connection; return once the server is really blocked.

        A blocked server accepts connections but answers nothing (the agent's reason is ``timeout``, not
        ``busy``). "Blocked" is confirmed by a probe PING that gets no reply within 50 ms; ``wait()`` on the
        returned handle reads the ``+OK`` when the sleep ends.
        """
        if seconds < 0.2:
            raise ValueError("DEBUG SLEEP shorter than 0.2 s cannot be confirmed reliably")
        sleeper = self.background("DEBUG", "SLEEP", seconds)

        def blocked() -> bool:
            try:
                with self.connect(timeout=0.05) as probe:
                    probe.command("PING")
            except TimeoutError:
                return True
            return False

        until(blocked, min(seconds, 2.0), what="server blocked by DEBUG SLEEP")
        return sleeper

    def break_persistence(self, timeout: float = 5.0) -> None:
        """Make the server refuse PING with ``-MISCONF``: persistence on, data dir removed, a failed BGSAVE.

        MISCONF needs save points (with ``--save ""`` there is none), so ``save`` is set to ``3600 1`` (a
        rare one, so Redis does not retry on its own). ``chmod`` would not stop root: the dir is removed.
        """
        self._expect_ok(self.cli("CONFIG", "SET", "save", "3600 1"), "CONFIG SET save")
        shutil.rmtree(self.dir)
        self.cli("BGSAVE")
        self.wait_for_ping(lambda r: isinstance(r, RespError) and r.code == "MISCONF", timeout, what="-MISCONF")

    def repair_persistence(self, timeout: float = 5.0) -> None:
        """Undo ``break_persistence()``: recreate the dir, point Redis at it again, BGSAVE, wait for PONG."""
        self.dir.mkdir(exist_ok=True)
        # Redis chdir'ed into the removed dir; CONFIG SET dir makes it chdir into the new one.
        self._expect_ok(self.cli("CONFIG", "SET", "dir", str(self.dir)), "CONFIG SET dir")
        self.cli("BGSAVE")
        self.wait_for_ping(lambda r: r == "PONG", timeout, what="PONG after repair")

    def exhaust_clients(self, maxclients: int = 3, timeout: float = 5.0, settle: float = 0.2) -> int:
        """Set ``maxclients`` and hold connections until it is reached; return how many are held.

        Afterwards a new connection is greeted with ``-ERR max number of clients reached`` and closed (a
        client that writes before reading may see a reset instead). ``release_clients()`` frees them.
        """
        self._expect_ok(self.cli("CONFIG", "SET", "maxclients", maxclients), "CONFIG SET maxclients")
        deadline = time.monotonic() + timeout
        full_since: float | None = None
        while time.monotonic() < deadline:
            conn = self.connect(timeout=1.0)
            try:
                # Read-free first command: AUTH if needed (also proves the connection was accepted).
                reply = conn.command("AUTH", self.password) if self.password else conn.command("PING")
            except OSError:  # rejected: the error line was lost to the reset our write provoked
                reply = RespError("ERR max number of clients reached (connection reset)")
            if reply in ("PONG", "OK"):
                self._held.append(conn)
                full_since = None
                continue
            conn.close()
            if not (isinstance(reply, RespError) and "max number of clients" in reply.message):
                raise RuntimeError(f"unexpected reply while filling the server: {reply}")
            if full_since is None:
                full_since = time.monotonic()
            if time.monotonic() - full_since >= settle:
                return len(self._held)
            # Full for now; a slot freed by a connection still closing (our own CONFIG SET's, the clients the
            # proxy just reset) would let the next client in: keep probing until it stays full for ``settle``.
            time.sleep(0.02)
        raise TimeoutError("maxclients was not reached")

    def add_user(self, name: str, password: str, *rules: str) -> None:
        """``ACL SETUSER name reset on >password ~* <rules>``: a user with every key and the given rules only.

        ``reset`` leaves the user with no commands and, as Redis 7 creates users by default, no pub/sub
        channels (``resetchannels``); add ``+@all``, ``-info``, ``allchannels``… as the test needs.
        """
        self._expect_ok(self.cli("ACL", "SETUSER", name, "reset", "on", f">{password}", "~*", *rules),
                        "ACL SETUSER")

    def release_clients(self) -> None:
        """Close the connections held by ``exhaust_clients()``."""
        for conn in self._held:
            conn.close()
        self._held.clear()

    @staticmethod
    def _expect_ok(reply: Reply, what: str) -> None:
        if reply != "OK":
            raise RuntimeError(f"{what} failed: {reply!r}")
