"""TLS material made at test time, and a real TLS ``redis-server``: no certificate is ever checked in.

Why: Memorystore hands out an IP address and a server CA, rotates that CA by publishing two for a while, and a
certificate may or may not carry the IP. Each of those cases needs its own CA and certificates, generated
here with the ``cryptography`` package (EC P-256, valid one hour):

- :class:`Authority` — a CA; ``issue`` signs a server (or client) certificate for the IPs and names given.
- :func:`bundle` — several CAs in one PEM file (the rotation case).
- :class:`TlsRedis` — a real ``redis-server`` speaking TLS on ``tls_port`` (server authentication only, as
  Memorystore does: ``--tls-auth-clients no`` unless asked), with its plain port kept for the harness.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from harness.redis_server import RedisProcess, free_port

HOUR = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files."""

    cert: Path
    key: Path


class Authority:
    """A self-signed CA written to ``<directory>/<name>.crt``; it signs certificates with :meth:`issue`."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.name = name
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder().subject_name(self._subject).issuer_name(self._subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + HOUR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.path = directory / f"{name}.crt"
        self.path.write_bytes(self.pem)

    @property
    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, stem: str, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              client: bool = False) -> Issued:
        """A certificate signed by this CA for ``ips`` and ``dns`` names (none: no SAN at all)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self._subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + HOUR)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(name) for name in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        return issued


def bundle(path: Path, *authorities: Authority) -> Path:
    """One PEM file holding every CA given, in order (a CA bundle during rotation)."""
    path.write_bytes(b"".join(ca.pem for ca in authorities))
    return path


class TlsRedis(RedisProcess):
    """A ``redis-server`` with TLS on ``tls_port`` (certificate ``server``), plain TCP on ``port`` for the harness.

    ``client_ca`` turns on client-certificate authentication (``--tls-auth-clients yes``) against that CA file.
    """

    def __init__(self, server: Issued, ca: Path, *, client_ca: Path | None = None, extra_args: tuple[str, ...] = (),
                 requirepass: str | None = None) -> None:
        self.tls_port = free_port()
        args = ["--tls-port", str(self.tls_port), "--tls-cert-file", str(server.cert),
                "--tls-key-file", str(server.key), "--tls-ca-cert-file", str(client_ca or ca),
                "--tls-auth-clients", "yes" if client_ca else "no", *extra_args]
        super().__init__(args, requirepass=requirepass)

    @property
    def tls_url(self) -> str:
        """``rediss://127.0.0.1:<tls_port>/0`` (no credentials)."""
        return f"rediss://127.0.0.1:{self.tls_port}/0"
