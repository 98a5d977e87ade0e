"""The real agent with its stdout a pipe the test holds: read it, stop reading it (a stalled log collector),
fill it, or close it (a collector that is gone).

harness/agent_process.py sends output to files, which never stall; a pod's stdout is a pipe to the runtime's
log shim. The test keeps the read end, and a second, non-blocking description of the write end (opened through
``/proc/self/fd``) to fill the pipe without changing the agent's own description: so an agent that writes with
blocking writes blocks, as in a pod. The agent listens on ``127.0.0.1:0``; its port is read from its start-up
line on the pipe. stderr goes to a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

from harness.agent_process import ROOT, agent_command, agent_env
from harness.wait import until

_PORT_LOG = re.compile(rb"listening on \S+ \(port (\d+)")


class PipedAgent:
    """``readiness-agent run ARGS`` with stdout a pipe; a context manager that always kills it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, root: Path = ROOT) -> None:
        self.args = list(args)
        self.env = agent_env(env)
        self.root = root
        self.port = 0
        self.out = b""  # what the test read from the pipe
        self._dir = tempfile.TemporaryDirectory(prefix="piped-agent-")
        self.stderr_path = Path(self._dir.name) / "stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self._read: int | None = None
        self._fill: int | None = None

    def __enter__(self) -> PipedAgent:
        read, write = os.pipe()
        os.set_blocking(read, False)
        self._read = read
        self._fill = os.open(f"/proc/self/fd/{write}", os.O_WRONLY | os.O_NONBLOCK)  # a description of its own
        cmd = agent_command(*self.args)
        try:
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(cmd, stdout=write, stderr=err, stdin=subprocess.DEVNULL, env=self.env,
                                             cwd=self.root)
        finally:
            os.close(write)
        try:
            self.port = until(self._port, 15, lambda: f"the agent's port ({self.output()})")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _port(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.output()}")
        self.drain()
        match = _PORT_LOG.search(self.out)
        return int(match.group(1)) if match else None

    def drain(self) -> bytes:
        """Read what the pipe holds now (never blocks); also kept in ``out``."""
        chunks = []
        while self._read is not None:
            try:
                chunk = os.read(self._read, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        self.out += data
        return data

    def fill(self) -> int:
        """Fill the pipe to the brim (the collector stopped reading); the bytes written."""
        assert self._fill is not None
        total = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                total += os.write(self._fill, b"f" * 4096)
        return total

    def close_reader(self) -> None:
        """The collector is gone: the agent's next write gets EPIPE."""
        for fd in (self._read, self._fill):
            if fd is not None:
                os.close(fd)
        self._read = self._fill = None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self) -> str:
        return self.out.decode(errors="replace") + self.stderr()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.close_reader()
        self._dir.cleanup()
