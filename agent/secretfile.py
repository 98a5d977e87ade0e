"""A secret mounted as a file (a Redis password, a drain token): re-read when its content may have changed.

Kubernetes rotates mounted Secrets by swapping a symlink, and ``cp -p`` or ``tar`` can rewrite a file with the
same size and modification time; so the file is re-read when its identity (device, inode), size, or change
time differs, and the content itself decides whether it changed. The value is never logged.
"""

from __future__ import annotations

import os


class SecretFile:
    """The current content of ``path`` (trailing newline stripped), or None when it cannot be read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int, int] | None = None
        self._value: str | None = None
        self._seen: str | None = None

    def _current_stamp(self) -> tuple[int, int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self) -> str | None:
        """The value, re-read if the file may have changed since the last read."""
        stamp = self._current_stamp()
        if stamp != self._stamp or self._value is None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    self._value = handle.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError):
                self._value = None
            self._stamp = stamp
        self._seen = self._value
        return self._value

    def changed(self) -> bool:
        """True when the content differs from what the last ``read`` returned."""
        if self._current_stamp() == self._stamp:
            return False
        previous = self._seen
        return self.read() != previous
