"""``registryd health`` against real daemons (issue 14): exit 0 for ``200 ok`` over TLS and
mTLS, exit 1 with one line saying why for anything else."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from registryd.certs import DevCerts
from registryd.cli import main
from registryd.cli.health import health_url
from tests.helpers import Daemon, config_text, daemon, tls_table, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_daemon(certs: DevCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    path = tmp_path_factory.mktemp("health-tls") / "registry.toml"
    with daemon(write_config(path, config_text(mode="tls", tls=tls_table(certs)))) as d:
        yield d


@pytest.fixture(scope="module")
def mtls_daemon(certs: DevCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    path = tmp_path_factory.mktemp("health-mtls") / "registry.toml"
    text = config_text(mode="tls", tls=tls_table(certs, mtls=True))
    with daemon(write_config(path, text)) as d:
        yield d


def health(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main(["health", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_health_url_takes_a_base_url_or_a_full_one() -> None:
    assert health_url("https://127.0.0.1:8443") == "https://127.0.0.1:8443/health"
    assert health_url("https://127.0.0.1:8443/") == "https://127.0.0.1:8443/health"
    assert health_url("http://[::1]:80/health") == "http://[::1]:80/health"
    with pytest.raises(ValueError, match="http:// or https://"):
        health_url("127.0.0.1:8443")


def test_healthy_over_tls_with_the_ca(
    tls_daemon: Daemon, certs: DevCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = health(capsys, "--url", tls_daemon.url, "--cafile", certs.ca)
    assert (code, err) == (0, "")
    assert (
        out.startswith(f"ok: {tls_daemon.url}/health: 200 ok (active kid ") and out.count("\n") == 1
    )


def test_unhealthy_when_the_certificate_is_not_trusted(
    tls_daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = health(capsys, "--url", tls_daemon.url)  # the system store, not the dev CA
    assert (code, out) == (1, "")
    assert err.startswith("unhealthy: ") and "CERTIFICATE_VERIFY_FAILED" in err
    assert err.count("\n") == 1


def test_mtls_needs_the_client_certificate(
    mtls_daemon: Daemon, certs: DevCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    url, ca = mtls_daemon.url, certs.ca
    code, _, err = health(capsys, "--url", url, "--cafile", ca)
    assert code == 1 and err.startswith(f"unhealthy: {url}/health: ")
    client = ("--cert", certs.client_cert, "--key", certs.client_key)
    code, out, _ = health(capsys, "--url", url, "--cafile", ca, *client)
    assert code == 0 and out.startswith("ok: ")


def test_unhealthy_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = health(capsys, "--url", f"http://127.0.0.1:{port}", "--timeout", "5")
    assert code == 1 and err.startswith(f"unhealthy: http://127.0.0.1:{port}/health: ")


def test_unhealthy_when_degraded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An expired envelope key: the daemon serves, /health answers 503 degraded."""
    text = config_text().replace("active = true\n", "active = true\nnot_after_epoch_ms = 1\n")
    with daemon(write_config(tmp_path / "registry.toml", text)) as d:
        code, _, err = health(capsys, "--url", d.url)
    assert code == 1
    assert err == f"unhealthy: {d.url}/health: 503 degraded: no valid active envelope key\n"


def test_bad_arguments_are_unhealthy_too(
    certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://127.0.0.1:1"
    code, _, err = health(capsys, "--url", url, "--key", certs.client_key)
    assert (code, err) == (1, "unhealthy: cannot check: --key goes with --cert\n")
    code, _, err = health(capsys, "--url", url, "--cafile", tmp_path / "missing.pem")
    assert code == 1 and err.startswith("unhealthy: cannot check: ")
    with pytest.raises(SystemExit) as usage:
        main(["health", "--url", url, "--timeout", "0"])
    assert usage.value.code == 2


def test_the_servername_is_what_the_certificate_must_name(
    tls_daemon: Daemon, certs: DevCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    """A container checks https://127.0.0.1:8443 while its certificate names the public host."""
    base = ("--url", tls_daemon.url, "--cafile", certs.ca)
    code, out, _ = health(capsys, *base, "--servername", "localhost")
    assert code == 0 and out.startswith("ok: ")
    code, _, err = health(capsys, *base, "--servername", "registry.example.org")
    assert code == 1 and "registry.example.org" in err  # hostname mismatch


def test_options_come_from_the_environment_for_a_healthcheck(
    tls_daemon: Daemon,
    certs: DevCerts,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("URL", "CAFILE", "CERT", "KEY", "SERVERNAME"):
        monkeypatch.delenv(f"REGISTRYD_HEALTH_{name}", raising=False)
    code, _, err = health(capsys)
    assert (code, err) == (1, "unhealthy: cannot check: no --url (or REGISTRYD_HEALTH_URL)\n")
    monkeypatch.setenv("REGISTRYD_HEALTH_URL", tls_daemon.url)
    monkeypatch.setenv("REGISTRYD_HEALTH_CAFILE", str(certs.ca))
    code, out, _ = health(capsys)
    assert code == 0 and out.startswith(f"ok: {tls_daemon.url}/health: 200 ok")
