"""Mounted secrets are re-read when their content changes, however the file was rewritten."""

from __future__ import annotations

import os
from pathlib import Path

from agent.config.secretfile import SecretFile


class TestSecretFile:
    def test_rewrite_with_same_size_and_mtime_is_seen(self, tmp_path: Path) -> None:
        """A rewrite that keeps size and modification time (cp -p, tar) is still noticed: content decides."""
        path = tmp_path / "password"
        path.write_text("AAAAAAAA\n")
        secret = SecretFile(str(path))
        assert secret.read() == "AAAAAAAA"
        st = path.stat()
        path.write_text("BBBBBBBB\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert secret.changed()
        assert secret.read() == "BBBBBBBB"

    def test_touch_without_new_content_is_not_a_change(self, tmp_path: Path) -> None:
        """A new timestamp alone does not count as a change (no reconnect for nothing)."""
        path = tmp_path / "password"
        path.write_text("same\n")
        secret = SecretFile(str(path))
        secret.read()
        os.utime(path, ns=(1, 1))
        assert not secret.changed()

    def test_unreadable_or_non_utf8_is_none(self, tmp_path: Path) -> None:
        """A missing file or one that is not UTF-8 reads as no value, never an exception."""
        assert SecretFile(str(tmp_path / "missing")).read() is None
        bad = tmp_path / "bad"
        bad.write_bytes(b"\xff\xfe")
        assert SecretFile(str(bad)).read() is None

    def test_symlink_swap_is_seen(self, tmp_path: Path) -> None:
        """Kubernetes rotates a mounted Secret by swapping a symlink: the new target is read."""
        (tmp_path / "v1").write_text("one")
        (tmp_path / "v2").write_text("two")
        link = tmp_path / "password"
        link.symlink_to(tmp_path / "v1")
        secret = SecretFile(str(link))
        assert secret.read() == "one"
        link.unlink()
        link.symlink_to(tmp_path / "v2")
        assert secret.changed() and secret.read() == "two"

    def test_fifo_device_and_oversized_files_are_refused_without_blocking(self, tmp_path: Path) -> None:
        """A FIFO with no writer, /dev/zero and a file over 64 KiB read as no value, with a reason, at once."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        big = tmp_path / "big"
        big.write_text("x" * (64 * 1024 + 1))
        for path, problem in ((fifo, "is not a regular file"), (Path("/dev/zero"), "is not a regular file"),
                              (big, "is larger than 64 KiB")):
            secret = SecretFile(str(path))
            assert secret.read() is None
            assert secret.problem == problem

    def test_problem_is_cleared_when_the_file_becomes_usable(self, tmp_path: Path) -> None:
        """A missing file has a problem; once written, the value is read and the problem is gone."""
        path = tmp_path / "token"
        secret = SecretFile(str(path))
        assert secret.read() is None and secret.problem is not None and "No such file" in secret.problem
        path.write_text("now-here\n")
        assert secret.read() == "now-here" and secret.problem is None
