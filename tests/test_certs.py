"""Development certificates (registryd.certs): files, modes, refusal to overwrite, and real
TLS / mTLS handshakes with Python's ssl module on 127.0.0.1 port 0."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import ssl
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registryd.certs import CLIENT_IDENTITY, DevCerts, write_dev_certs

TIMEOUT = 10.0
FILES = ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return write_dev_certs(tmp_path_factory.mktemp("devcerts") / "certs")


# --- files ----------------------------------------------------------------------------------


def test_writes_the_five_files_and_returns_their_paths(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = write_dev_certs(out)
    assert made == DevCerts(
        ca=out / "ca.pem",
        server_cert=out / "server.pem",
        server_key=out / "server-key.pem",
        client_cert=out / "client.pem",
        client_key=out / "client-key.pem",
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    with pytest.raises(AttributeError):
        made.ca = out  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_modes_keys_0600_new_dir_0700(tmp_path: Path, mask: int) -> None:
    out = tmp_path / "a" / "certs"
    with umask(mask):
        made = write_dev_certs(out)
    assert mode_of(out) == 0o700
    assert mode_of(made.server_key) == 0o600
    assert mode_of(made.client_key) == 0o600
    for cert in (made.ca, made.server_cert, made.client_cert):
        assert mode_of(cert) == 0o644 & ~mask


def test_certificate_files_hold_no_private_key(certs: DevCerts) -> None:
    for path in (certs.ca, certs.server_cert, certs.client_cert):
        text = path.read_text()
        assert "PRIVATE KEY" not in text
        assert text.count("BEGIN CERTIFICATE") == 1  # leaf (or CA) only: the root is ca.pem


def test_keys_are_pkcs8_and_match_their_certificates(certs: DevCerts) -> None:
    for key_path, cert_path in (
        (certs.server_key, certs.server_cert),
        (certs.client_key, certs.client_cert),
    ):
        pem = key_path.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not SEC1
        key = load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        spki = (Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def _ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_certificate_contents(certs: DevCerts) -> None:
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(certs.client_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for leaf in (server, client):
        assert leaf.issuer == ca.subject
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        leaf.verify_directly_issued_by(ca)
    assert ExtendedKeyUsageOID.SERVER_AUTH in _ekus(server)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in _ekus(client)
    assert _sans(server).get_values_for_type(x509.DNSName) == ["localhost"]
    assert _sans(server).get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert _sans(client).get_values_for_type(x509.DNSName) == [CLIENT_IDENTITY]
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attr.value for attr in cn] == [CLIENT_IDENTITY]


def test_validity_is_long_enough_for_development(certs: DevCerts) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for path in (certs.server_cert, certs.client_cert):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert cert.not_valid_before_utc <= now
        assert cert.not_valid_after_utc >= now + datetime.timedelta(days=365)
        # Apple platforms refuse TLS server certificates valid for more than 825 days.
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime <= datetime.timedelta(days=825, hours=1)


def test_custom_hosts_and_validity(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path, hosts=("registry.test", "10.1.2.3"), valid_days=30)
    server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    assert _sans(server).get_values_for_type(x509.DNSName) == ["registry.test"]
    assert [str(ip) for ip in _sans(server).get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30, hours=1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"hosts": "localhost"}, TypeError),
        ({"hosts": ()}, ValueError),
        ({"valid_days": 0}, ValueError),
    ],
)
def test_bad_arguments_write_nothing(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception]
) -> None:
    out = tmp_path / "certs"
    with pytest.raises(error):
        write_dev_certs(out, **kwargs)  # type: ignore[arg-type]
    assert not out.exists()


# --- refusing to overwrite ----------------------------------------------------------------


def _snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in FILES}


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    write_dev_certs(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="refusing to overwrite") as info:
        write_dev_certs(tmp_path)
    assert "server-key.pem" in str(info.value)
    assert "force" in str(info.value)
    assert _snapshot(tmp_path) == before


def test_one_existing_file_blocks_all_writes(tmp_path: Path) -> None:
    (tmp_path / "client-key.pem").write_text("mine")
    with pytest.raises(FileExistsError, match=re.escape("client-key.pem")):
        write_dev_certs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client-key.pem"]
    assert (tmp_path / "client-key.pem").read_text() == "mine"


def test_force_replaces_everything_with_fresh_material(tmp_path: Path) -> None:
    write_dev_certs(tmp_path)
    before = _snapshot(tmp_path)
    (tmp_path / "server-key.pem").chmod(0o644)
    write_dev_certs(tmp_path, force=True)
    after = _snapshot(tmp_path)
    assert all(after[name] != before[name] for name in FILES)
    assert mode_of(tmp_path / "server-key.pem") == 0o600


def test_planted_symlink_is_refused_and_never_followed(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    (out / "server-key.pem").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_dev_certs(out)
    write_dev_certs(out, force=True)
    assert victim.read_text() == "do not touch"
    assert not (out / "server-key.pem").is_symlink()
    assert (out / "server-key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


# --- real handshakes ------------------------------------------------------------------------


def server_context(certs: DevCerts) -> ssl.SSLContext:
    """What a registryd server with ``[tls] client_ca_pem_path = "certs/ca.pem"`` does."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    ctx.load_verify_locations(cafile=certs.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cafile: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def _serve_one(listener: socket.socket, ctx: ssl.SSLContext) -> str:
    """Accept one connection, handshake, answer ``ok:<client common name>``."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(TIMEOUT)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
            der = tls.getpeercert(binary_form=True)
            if der is None:  # CERT_REQUIRED makes this unreachable; kept for type narrowing
                raise ssl.SSLError("no peer certificate")
            subject = x509.load_der_x509_certificate(der).subject
            name = ",".join(
                str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            )
            tls.sendall(b"ok:" + name.encode())
            return name


@contextmanager
def tls_server(ctx: ssl.SSLContext, host: str = "127.0.0.1") -> Iterator[tuple[int, Future[str]]]:
    """A one-connection TLS server on ``host`` port 0, in a thread; yields (port, outcome)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, 0), family=family) as listener:
        listener.settimeout(TIMEOUT)
        with ThreadPoolExecutor(max_workers=1) as pool:
            outcome = pool.submit(_serve_one, listener, ctx)
            yield listener.getsockname()[1], outcome
            outcome.exception(timeout=TIMEOUT)  # bounded: never leave the thread behind


def exchange(
    ctx: ssl.SSLContext, port: int, server_hostname: str, host: str = "127.0.0.1"
) -> bytes:
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(b"?")
            return tls.recv(64)


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_mtls_handshake_succeeds(certs: DevCerts, name: str) -> None:
    client = client_context(certs.ca, (certs.client_cert, certs.client_key))
    with tls_server(server_context(certs)) as (port, outcome):
        reply = exchange(client, port, name)
    assert reply == f"ok:{CLIENT_IDENTITY}".encode()
    assert outcome.result(timeout=TIMEOUT) == CLIENT_IDENTITY


def _has_ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


def test_mtls_handshake_over_ipv6_loopback(certs: DevCerts) -> None:
    if not _has_ipv6_loopback():
        pytest.fail("this host cannot bind ::1; the IPv6 certificate name is untested")
    client = client_context(certs.ca, (certs.client_cert, certs.client_key))
    with tls_server(server_context(certs), host="::1") as (port, outcome):
        reply = exchange(client, port, "::1", host="::1")
    assert reply == f"ok:{CLIENT_IDENTITY}".encode()
    assert outcome.result(timeout=TIMEOUT) == CLIENT_IDENTITY


def test_client_without_certificate_is_refused(certs: DevCerts) -> None:
    client = client_context(certs.ca)  # trusts the server, presents nothing
    with tls_server(server_context(certs)) as (port, outcome):
        try:
            reply = exchange(client, port, "localhost")
        except (ssl.SSLError, ConnectionError):
            reply = b""  # TLS 1.3: the refusal arrives as an alert after the client's handshake
        assert not reply.startswith(b"ok")
        with pytest.raises(ssl.SSLError, match="peer did not return a certificate"):
            outcome.result(timeout=TIMEOUT)


def test_client_with_certificate_from_another_ca_is_refused(certs: DevCerts) -> None:
    other = trustme.CA().issue_cert(CLIENT_IDENTITY)
    client = client_context(certs.ca)
    other.configure_cert(client)
    with tls_server(server_context(certs)) as (port, outcome):
        try:
            reply = exchange(client, port, "localhost")
        except (ssl.SSLError, ConnectionError):
            reply = b""
        assert not reply.startswith(b"ok")
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            outcome.result(timeout=TIMEOUT)


def test_client_not_trusting_the_dev_ca_fails_verification(certs: DevCerts, tmp_path: Path) -> None:
    stranger_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger_ca))
    client = client_context(stranger_ca, (certs.client_cert, certs.client_key))
    with tls_server(server_context(certs)) as (port, outcome):
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            exchange(client, port, "localhost")
        with pytest.raises(ssl.SSLError):
            outcome.result(timeout=TIMEOUT)


def test_hostname_not_in_the_certificate_fails_verification(certs: DevCerts) -> None:
    client = client_context(certs.ca, (certs.client_cert, certs.client_key))
    with tls_server(server_context(certs)) as (port, outcome):
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            exchange(client, port, "registry.example.com")
        with pytest.raises(ssl.SSLError):
            outcome.result(timeout=TIMEOUT)
