"""TLS to an IP address against a real TLS redis-server: server name, the host-name opt-out, CA rotation, files."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.tls import TlsFileError, TlsMaterial
from harness.tls import Authority, TlsRedis, bundle

HOST = "127.0.0.1"


async def ping(material: TlsMaterial, port: int) -> bytes:
    """One TLS connection with the material's context and server name, and a PING."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            HOST, port, ssl=material.context(), server_hostname=material.server_hostname(HOST)), 2.0)
    except ssl.SSLError:
        # asyncio closes a failed handshake's socket in a callback it schedules: let it run before the
        # test's loop is closed (not a wait for a fact; a few passes of the loop).
        for _ in range(3):
            await asyncio.sleep(0)
        raise
    try:
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        return await asyncio.wait_for(reader.readline(), 2.0)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


@pytest.fixture
def tls_servers() -> Iterator[list[TlsRedis]]:
    made: list[TlsRedis] = []
    yield made
    for server in made:
        server.close()


def start(made: list[TlsRedis], server: TlsRedis) -> TlsRedis:
    made.append(server)
    return server.start()


class TestServerName:
    async def test_certificate_with_the_ip(self, tmp_path: Path, tls_servers: list[TlsRedis]) -> None:
        """A certificate carrying 127.0.0.1 verifies when connecting to the IP, with no server name."""
        ca = Authority(tmp_path)
        server = start(tls_servers, TlsRedis(ca.issue("server", ips=(HOST,)), ca.path))
        assert await ping(TlsMaterial(ca_file=str(ca.path)), server.tls_port) == b"+PONG\r\n"

    async def test_certificate_without_the_ip_fails_by_default(self, tmp_path: Path,
                                                               tls_servers: list[TlsRedis]) -> None:
        """Host-name verification is on by default: a certificate without the IP is refused."""
        ca = Authority(tmp_path)
        server = start(tls_servers, TlsRedis(ca.issue("server", dns=("redis.internal",)), ca.path))
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            await ping(TlsMaterial(ca_file=str(ca.path)), server.tls_port)

    async def test_server_name_verifies_the_name_in_the_certificate(self, tmp_path: Path,
                                                                    tls_servers: list[TlsRedis]) -> None:
        """tls_server_name: the certificate's DNS name is verified while connecting to the IP; another fails."""
        ca = Authority(tmp_path)
        server = start(tls_servers, TlsRedis(ca.issue("server", dns=("redis.internal",)), ca.path))
        named = TlsMaterial(ca_file=str(ca.path), server_name="redis.internal")
        assert await ping(named, server.tls_port) == b"+PONG\r\n"
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await ping(TlsMaterial(ca_file=str(ca.path), server_name="other.internal"), server.tls_port)

    async def test_skip_hostname_check_still_verifies_the_chain(self, tmp_path: Path,
                                                                tls_servers: list[TlsRedis]) -> None:
        """The opt-out accepts a certificate without the IP, but not one from another CA."""
        ca, rogue = Authority(tmp_path, "ca"), Authority(tmp_path, "rogue")
        server = start(tls_servers, TlsRedis(ca.issue("server", dns=("redis.internal",)), ca.path))
        impostor = start(tls_servers, TlsRedis(rogue.issue("impostor", ips=(HOST,)), rogue.path))
        skip = TlsMaterial(ca_file=str(ca.path), check_hostname=False)
        assert await ping(skip, server.tls_port) == b"+PONG\r\n"
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await ping(skip, impostor.tls_port)


class TestCaRotation:
    async def test_bundle_with_two_cas_accepts_both(self, tmp_path: Path, tls_servers: list[TlsRedis]) -> None:
        """During a rotation a bundle of the old and the new CA verifies servers of either."""
        old, new = Authority(tmp_path, "old"), Authority(tmp_path, "new")
        material = TlsMaterial(ca_file=str(bundle(tmp_path / "bundle.pem", old, new)))
        for ca in (old, new):
            server = start(tls_servers, TlsRedis(ca.issue(f"server-{ca.name}", ips=(HOST,)), ca.path))
            assert await ping(material, server.tls_port) == b"+PONG\r\n"

    async def test_changed_bundle_is_picked_up_without_restart(self, tmp_path: Path,
                                                               tls_servers: list[TlsRedis]) -> None:
        """Old CA → old + new → new: a server switched to the new CA is verified once the bundle changed."""
        old, new = Authority(tmp_path, "old"), Authority(tmp_path, "new")
        path = bundle(tmp_path / "ca.pem", old)
        material = TlsMaterial(ca_file=str(path))
        material.validate()
        server = start(tls_servers, TlsRedis(old.issue("server-old", ips=(HOST,)), old.path))
        assert await ping(material, server.tls_port) == b"+PONG\r\n"
        renewed = new.issue("server-new", ips=(HOST,))
        assert server.cli("CONFIG", "SET", "tls-cert-file", str(renewed.cert), "tls-key-file",
                          str(renewed.key)) == "OK"
        with pytest.raises(ssl.SSLCertVerificationError):
            await ping(material, server.tls_port)
        bundle(tmp_path / "next.pem", old, new).replace(path)  # an atomic swap, as a mounted Secret changes
        assert await ping(material, server.tls_port) == b"+PONG\r\n"
        bundle(tmp_path / "last.pem", new).replace(path)
        assert await ping(material, server.tls_port) == b"+PONG\r\n"


class TestClientCertificate:
    async def test_client_certificate_is_presented(self, tmp_path: Path, tls_servers: list[TlsRedis]) -> None:
        """With --tls-auth-clients yes the client certificate and key are presented and accepted."""
        ca = Authority(tmp_path)
        client = ca.issue("client", client=True)
        server = start(tls_servers, TlsRedis(ca.issue("server", ips=(HOST,)), ca.path, client_ca=ca.path))
        material = TlsMaterial(ca_file=str(ca.path), cert_file=str(client.cert), key_file=str(client.key))
        assert await ping(material, server.tls_port) == b"+PONG\r\n"


class TestFiles:
    def test_missing_files_are_named_at_start(self, tmp_path: Path) -> None:
        """Each missing file is reported with its role and path, in one line."""
        ca = Authority(tmp_path)
        client = ca.issue("client", client=True)
        cases = [
            (TlsMaterial(ca_file=str(tmp_path / "nope.pem")), f"CA file {tmp_path / 'nope.pem'}: does not exist"),
            (TlsMaterial(cert_file=str(tmp_path / "c.pem"), key_file=str(client.key)),
             f"client certificate {tmp_path / 'c.pem'}: does not exist"),
            (TlsMaterial(cert_file=str(client.cert), key_file=str(tmp_path / "k.pem")),
             f"client key {tmp_path / 'k.pem'}: does not exist"),
        ]
        for material, message in cases:
            with pytest.raises(TlsFileError) as error:
                material.validate()
            assert error.value.detail == message and "\n" not in message

    def test_wrong_content_is_named(self, tmp_path: Path) -> None:
        """A CA file without a certificate, a directory, and a key that does not match are each refused."""
        ca, other = Authority(tmp_path, "ca"), Authority(tmp_path, "other")
        mine, theirs = ca.issue("mine", client=True), other.issue("theirs", client=True)
        text = tmp_path / "notes.txt"
        text.write_text("not a certificate\n")
        with pytest.raises(TlsFileError, match="holds no PEM certificate"):
            TlsMaterial(ca_file=str(text)).validate()
        with pytest.raises(TlsFileError, match="is not a regular file"):
            TlsMaterial(ca_file=str(tmp_path)).validate()
        with pytest.raises(TlsFileError, match="cannot be used with its key"):
            TlsMaterial(cert_file=str(mine.cert), key_file=str(theirs.key)).validate()
        with pytest.raises(TlsFileError, match="without a client certificate"):
            TlsMaterial(key_file=str(mine.key)).validate()

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A path that cannot be opened (a file used as a directory: the tests run as root, chmod is moot)."""
        ca = Authority(tmp_path)
        with pytest.raises(TlsFileError, match=r"cannot be read \(Not a directory\)"):
            TlsMaterial(ca_file=str(ca.path / "ca.pem")).validate()

    def test_disappearance_after_start_fails_new_connections(self, tmp_path: Path) -> None:
        """A CA file removed after start makes the next context() fail, naming the file."""
        ca = Authority(tmp_path)
        material = TlsMaterial(ca_file=str(ca.path))
        material.validate()
        material.context()
        ca.path.unlink()
        with pytest.raises(TlsFileError, match="no longer exists or cannot be read"):
            material.context()
