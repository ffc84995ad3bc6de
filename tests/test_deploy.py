"""Deployment files (issue 14): the Docker build context holds only what the image needs, the
Dockerfile's health check and paths agree with the CLI, and the systemd unit is valid and
hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.docker_context import build_context
from registryd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "registryd.service"
IMAGE_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "registryd/")

# What a developer's checkout holds after `make install`, `make run` and a benchmark.
LEFT_BEHIND = {
    ".venv/bin/python": b"\x7fELF",
    ".venv/lib/site.py": b"x" * 4096,
    ".git/HEAD": b"ref: refs/heads/main\n",
    "data/db/000003.log": b"leveldb",
    "data/keys.json": b'{"keys": []}',
    "data/registryd.pid": b"4242\n",
    "certs/server-key.pem": b"-----BEGIN PRIVATE KEY-----",
    "certs/client-key.pem": b"-----BEGIN PRIVATE KEY-----",
    "certs/ca.pem": b"-----BEGIN CERTIFICATE-----",
    "registry.toml": b'pepper_hex = "..."',
    "client.toml": b'pepper_hex = "..."',
    "bench/results/run.json": b"{}",
    "registryd/__pycache__/app.cpython-311.pyc": b"\x00",
    "build/lib/registryd/app.py": b"",
    "registryd.egg-info/PKG-INFO": b"",
    ".mypy_cache/3.11/x.json": b"{}",
}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of this repository plus :data:`LEFT_BEHIND`."""
    root = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    for name, data in LEFT_BEHIND.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_the_build_context_holds_only_what_the_image_needs(checkout: Path) -> None:
    everything = build_context(checkout, ignore=False).files
    assert set(LEFT_BEHIND) <= set(everything)  # without .dockerignore, all of it goes
    sent = build_context(checkout).files
    docker_own = {"Dockerfile", ".dockerignore"}  # the engine needs these two
    assert {n for n in sent if not n.startswith(IMAGE_SOURCES)} <= docker_own
    assert not set(LEFT_BEHIND) & set(sent)
    package = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "registryd").rglob("*.py"))
    assert sorted(n for n in sent if n.endswith(".py")) == package
    assert {"registryd/py.typed", "pyproject.toml", "LICENSE"} <= set(sent)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_every_copy_in_the_dockerfile_is_in_the_context(checkout: Path) -> None:
    sent = set(build_context(checkout).files)
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile(), re.M)
    sources = [source for line in copies for source in line.split()]
    assert sources == ["pyproject.toml", "README.md", "LICENSE", "registryd"]
    for source in sources:
        assert source in sent or any(n.startswith(source + "/") for n in sent), source


def test_the_image_runs_unprivileged_with_a_health_check_the_cli_accepts() -> None:
    text = dockerfile()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.12-slim"] * 2
    assert re.search(r"^USER registryd$", text, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*\\\n\s+CMD \[(.+)\]$", text, re.M)
    assert healthcheck is not None
    argv = [arg.strip().strip('"') for arg in healthcheck.group(1).split(",")]
    assert argv[:2] == ["registryd", "health"]
    env = dict(re.findall(r"(REGISTRYD_\w+)=(\S+)", text))
    assert env["REGISTRYD_CONFIG"] == "/etc/registryd/registry.toml"
    assert set(env) == {f"REGISTRYD_HEALTH_{n}" for n in ("URL", "CAFILE", "SERVERNAME")} | {
        "REGISTRYD_CONFIG"
    }
    args = build_parser().parse_args(argv[1:])  # the image's command parses as the CLI's
    assert args.timeout == 5.0
    assert re.search(r'^CMD \["serve"\]$', text, re.M)  # the config from $REGISTRYD_CONFIG


# -- systemd -------------------------------------------------------------------------------


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment of a unit file, in order."""
    entries, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def test_the_unit_is_hardened_and_reloads_with_sighup() -> None:
    service = {k: v for s, k, v in unit_entries(UNIT.read_text()) if s == "Service"}
    expected = {
        "Type": "notify",
        "User": "registryd",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Environment": "REGISTRYD_CONFIG=/etc/registryd/registry.toml",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/registryd",
        "StateDirectory": "registryd",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "UMask": "0077",
    }
    assert {k: service.get(k) for k in expected} == expected
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/bin/registryd") and exec_start[1:] == ["serve"]
    # sd_notify: Type=notify needs READY=1 from the main process, which serve() sends
    assert "notify(" in (ROOT / "registryd" / "server.py").read_text()
    sysusers = (ROOT / "deploy" / "systemd" / "registryd.sysusers.conf").read_text()
    assert re.search(r"^u registryd - .+ /var/lib/registryd$", sysusers, re.M)


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    """systemd's own parser (Debian's systemd package): unknown keys, bad values and a missing
    executable are all reported. ExecStart points at this environment's registryd."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: apt-get install systemd (.ci/run installs it)"
    here = Path(sys.executable).with_name("registryd")
    unit = tmp_path / "registryd.service"
    unit.write_text(UNIT.read_text().replace("/opt/registryd/venv/bin/registryd", str(here)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if "registryd.service" in line] == []
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomee=yes"))
    check = subprocess.run(
        [analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert "Unknown key 'ProtectHomee'" in check.stderr  # the check above could fail


# -- docker compose (issue 13) ---------------------------------------------------------------


def test_the_compose_file_runs_registryd_on_a_durable_redis_with_health_checks() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "registryd"}
    redis, registryd = services["redis"], services["registryd"]
    command = redis["command"]
    for option, value in (("--appendonly", "yes"), ("--appendfsync", "always")):
        assert command[command.index(option) + 1] == value  # what the README asks of Redis
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the AOF outlives the container
    assert registryd["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert registryd["build"] == "."
    test = registryd["healthcheck"]["test"]
    assert test[:3] == ["CMD", "registryd", "health"]
    assert build_parser().parse_args(test[2:]).timeout == 5.0  # the CLI accepts it
    assert registryd["environment"]["REGISTRYD_CONFIG"] == "/etc/registryd/registry.toml"
    mounts = {v.split(":")[1] for v in registryd["volumes"]}
    assert {"/etc/registryd/registry.toml", "/etc/registryd/tls", "/var/lib/registryd"} <= mounts
    assert set(compose["volumes"]) == {"redis-data", "registryd-data"}
    # the workers the header asks for are refused unless storage and limits are in Redis
    header = (ROOT / "docker-compose.yml").read_text()
    for line in ('kind = "redis"', 'storage_uri = "redis://redis:6379/0"', "workers = 2"):
        assert line in header
    assert "redis" in re.findall(r'"registryd\[([\w,]+)\]"', dockerfile())[0].split(",")
