"""``[directory]`` (extensions spec §3): its defaults, and every bad value stops the daemon with
one ConfigError naming the key."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from registryd import cli, config
from registryd.config import DirectoryConfig
from registryd.errors import ConfigError
from tests.config_support import error_of, parse, toml


def test_defaults_are_the_specs() -> None:
    directory = parse(toml()).directory
    assert directory == DirectoryConfig(
        challenge_ttl_seconds=300,
        probe_interval_seconds=60,
        probe_concurrency=16,
        probe_timeout_ms=3000,
        probe_allow_cidrs=(),
        uptime_window=100,
        geoip_db_path=None,
        prune_after_days=30,
    )


def test_the_example_config_documents_the_defaults() -> None:
    example = Path(__file__).parent.parent / "config" / "registry.example.toml"
    text = example.read_text()
    assert "[directory]" in text
    while "0" * 64 in text:  # its placeholder secrets are refused (test_cli); real ones parse
        text = text.replace("0" * 64, secrets.token_hex(32), 1)
    assert config.parse(text).directory == DirectoryConfig()


def test_every_key_is_read() -> None:
    directory = parse(
        toml(
            "",
            "[directory]\nchallenge_ttl_seconds = 60\nprobe_interval_seconds = 5\n"
            "probe_concurrency = 64\nprobe_timeout_ms = 250\n"
            'probe_allow_cidrs = ["127.0.0.0/8", "::1", "fd00::/8"]\nuptime_window = 10\n'
            'geoip_db_path = "/var/lib/GeoLite2-Country.mmdb"\nprune_after_days = 0\n',
        )
    ).directory
    assert directory.probe_allow_cidrs == ("127.0.0.0/8", "::1", "fd00::/8")
    assert (directory.probe_timeout_ms, directory.prune_after_days) == (250, 0)
    assert directory.geoip_db_path == "/var/lib/GeoLite2-Country.mmdb"


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ("challenge_ttl_seconds = 0", "directory.challenge_ttl_seconds", ">= 1"),
        ("challenge_ttl_seconds = 86401", "directory.challenge_ttl_seconds", "<= 86400"),
        ("probe_interval_seconds = 0", "directory.probe_interval_seconds", ">= 1"),
        ("probe_interval_seconds = 1.5", "directory.probe_interval_seconds", "int"),
        ("probe_concurrency = 0", "directory.probe_concurrency", ">= 1"),
        ("probe_concurrency = 5000", "directory.probe_concurrency", "<= 1024"),
        ("probe_timeout_ms = -1", "directory.probe_timeout_ms", ">= 1"),
        ("probe_timeout_ms = 60001", "directory.probe_timeout_ms", "<= 60000"),
        ('probe_allow_cidrs = "127.0.0.0/8"', "directory.probe_allow_cidrs", "array"),
        ('probe_allow_cidrs = ["127.0.0.0/8", "localhost"]', "directory.probe_allow_cidrs[1]",
         "IP address or CIDR"),
        ('probe_allow_cidrs = ["10.0.0.0/33"]', "directory.probe_allow_cidrs[0]", "CIDR"),
        ("uptime_window = 0", "directory.uptime_window", ">= 1"),
        ('geoip_db_path = "  "', "directory.geoip_db_path", "must not be empty"),
        ("geoip_db_path = 3", "directory.geoip_db_path", "str"),
        ("prune_after_days = -1", "directory.prune_after_days", ">= 0"),
        ("probe_interval = 5", "directory.probe_interval", "unknown key"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(table: str, path: str, message: str) -> None:
    exc = error_of(toml("", f"[directory]\n{table}\n"))
    assert exc.path == path
    assert message in exc.message


def test_a_bad_directory_table_stops_the_daemon_before_it_binds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(toml("", '[directory]\nprobe_allow_cidrs = ["nope"]\n'))
    assert cli.main(["check-config", str(path)]) == 1
    assert "directory.probe_allow_cidrs[0]" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        config.load(path)
