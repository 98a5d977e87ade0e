"""TLS material for connections to a Redis (and any TLS dependency): files checked at start, re-read on change.

Why its own module: Memorystore hands out an IP address and a server CA. A certificate verified against an IP
fails unless it carries that IP, so the name to verify can be given (``tls_server_name``), or host-name
checking turned off explicitly (``redis_tls_skip_hostname_check``) while the chain is still verified against
the CA: anyone could present *a* certificate, only the CA's holder one that chains to it. During a CA rotation
Memorystore serves certificates from the new CA while clients still hold the old one, so a bundle with both
must work (OpenSSL loads every certificate of a PEM bundle), and a mounted bundle that changes must be picked
up without a restart: the SSL context is rebuilt when a file's identity, size or modification time changes.

A missing or unreadable CA, certificate or key file is a configuration error at start (:meth:`TlsMaterial.
validate`, one line, exit 2), not ``refused (connection failed)`` at every check; a file that disappears later
is a ``tls`` failure of the next new connection (:class:`TlsFileError`), while held connections carry on.
File *paths* are configuration and may be shown; their content never is.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass, field

from agent.core.model import Reason, ReasonedError

MAX_PEM_BYTES = 1024 * 1024  # a CA bundle of a few hundred certificates; anything larger is not one


class TlsFileError(ReasonedError):
    """A TLS file is missing, unreadable or not what it should be; ``detail`` names the file and the problem."""

    reason = Reason.TLS


Stamp = tuple[int, int, int, int] | None


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_pem(role: str, path: str, marker: bytes, what: str) -> None:
    """Raise :class:`TlsFileError` unless ``path`` is a readable regular file holding ``marker``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TlsFileError(f"{role} {path}: does not exist") from None
    except OSError as exc:
        raise TlsFileError(f"{role} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TlsFileError(f"{role} {path}: is not a regular file")
        data = os.read(fd, MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsFileError(f"{role} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_PEM_BYTES:
        raise TlsFileError(f"{role} {path}: larger than {MAX_PEM_BYTES // 1024} KiB")
    if marker not in data:
        raise TlsFileError(f"{role} {path}: holds no PEM {what}")


@dataclass
class TlsMaterial:
    """The CA bundle, client certificate and key, and how the server's name is verified."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    check_hostname: bool = True
    _context: ssl.SSLContext | None = field(default=None, init=False, repr=False)
    _stamps: tuple[Stamp, ...] = field(default=(), init=False, repr=False)

    def _files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.ca_file, self.cert_file, self.key_file) if p)

    def validate(self) -> None:
        """Check every file now and build the context; :class:`TlsFileError` names the first problem."""
        if self.key_file and not self.cert_file:
            raise TlsFileError(f"client key {self.key_file}: given without a client certificate")
        if self.ca_file:
            _read_pem("CA file", self.ca_file, b"-----BEGIN CERTIFICATE-----", "certificate")
        if self.cert_file:
            _read_pem("client certificate", self.cert_file, b"-----BEGIN CERTIFICATE-----", "certificate")
        if self.key_file:
            _read_pem("client key", self.key_file, b"PRIVATE KEY-----", "private key")
        self._context = self._build()
        self._stamps = tuple(_stamp(p) for p in self._files())

    def _build(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsFileError(f"CA file {self.ca_file}: not a usable CA bundle ({_why(exc)})") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as exc:
                raise TlsFileError(f"client certificate {self.cert_file}: cannot be used with its key "
                                   f"({_why(exc)})") from None
        # Host-name checking off still verifies the chain (CERT_REQUIRED stays): see the module docstring.
        context.check_hostname = self.check_hostname
        return context

    def context(self) -> ssl.SSLContext:
        """The SSL context for a new connection, rebuilt when a file changed; :class:`TlsFileError` if unusable."""
        stamps = tuple(_stamp(p) for p in self._files())
        if self._context is None or stamps != self._stamps:
            for path, stamp in zip(self._files(), stamps, strict=True):
                if stamp is None:
                    raise TlsFileError(f"{self._role(path)} {path}: no longer exists or cannot be read")
            self.validate()
        assert self._context is not None
        return self._context

    def _role(self, path: str) -> str:
        if path == self.ca_file:
            return "CA file"
        return "client certificate" if path == self.cert_file else "client key"

    def server_hostname(self, host: str) -> str | None:
        """The name to send (SNI) and verify: ``server_name`` when set, else the host (an IP sends no SNI)."""
        return self.server_name or host


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__).lower().replace("_", " ")
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__
