"""A secret mounted as a file (a Redis password, a drain token): re-read when its content may have changed.

Kubernetes rotates mounted Secrets by swapping a symlink, and ``cp -p`` or ``tar`` can rewrite a file with the
same size and modification time; so the file is re-read when its identity (device, inode), size, or change
time differs, and the content itself decides whether it changed. The value is never logged.

The path is configuration, not trusted: only a regular file is read (a FIFO would block the reader for good,
``/dev/zero`` would never end), opened without blocking and read up to ``MAX_BYTES``; what is wrong with it is
kept in ``problem`` (a secret-free sentence) for the caller to log.
"""

from __future__ import annotations

import os
import stat

MAX_BYTES = 64 * 1024


class SecretFile:
    """The current content of ``path`` (trailing newline stripped), or None when it cannot be read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int, int] | None = None
        self._value: str | None = None
        self._seen: str | None = None
        self.problem: str | None = None

    def _current_stamp(self) -> tuple[int, int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self) -> str | None:
        """The file's text, or None with ``problem`` set; never blocks on a FIFO or reads a device."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self.problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.problem = "is not a regular file"
                return None
            data = os.read(fd, MAX_BYTES + 1)
        except OSError as exc:
            self.problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
            return None
        finally:
            os.close(fd)
        if len(data) > MAX_BYTES:
            self.problem = f"is larger than {MAX_BYTES // 1024} KiB"
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problem = "is not UTF-8 text"
            return None
        self.problem = None
        return text.rstrip("\r\n")

    def read(self) -> str | None:
        """The value, re-read if the file may have changed since the last read."""
        stamp = self._current_stamp()
        if stamp != self._stamp or self._value is None:
            self._value = self._load()
            self._stamp = stamp
        self._seen = self._value
        return self._value

    def changed(self) -> bool:
        """True when the content differs from what the last ``read`` returned."""
        if self._current_stamp() == self._stamp:
            return False
        previous = self._seen
        return self.read() != previous
