"""node.toml (extensions spec §4): defaults, strict validation naming the key, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from registryd.errors import ConfigError
from registryd.node import config as node_config
from tests.node_fake import HOST, node_toml


def test_defaults_and_paths_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(node_toml("https://registry.example:8443"))
    cfg = node_config.load(tmp_path / "node.toml")
    assert cfg.heartbeat_interval_seconds == 30
    assert cfg.register_interval_seconds == 120
    assert cfg.max_retry == -1
    assert cfg.cafile is None and cfg.health_listen is None and cfg.health_address is None
    assert cfg.key_path == str(tmp_path / "node.key")
    assert cfg.state_path == str(tmp_path / "node-state.json")
    assert cfg.payload.as_payload() == {
        "name": "node one",
        "host": HOST,
        "api_base_url": f"https://{HOST}",
        "protocol_version": "1.0",
        "features": {"relay": True, "regions": ["eu", "us"], "max_peers": 64},
        "contact_email": "ops@example.net",
    }


def test_absolute_paths_and_options(tmp_path: Path) -> None:
    text = node_toml(
        "https://registry.example",
        key_path="/etc/node/node.key",
        cafile="ca.pem",
        health_listen="[::1]:8080",
        max_retry=5,
        heartbeat_interval_seconds=10,
    )
    cfg = node_config.parse(text, base_dir=tmp_path)
    assert cfg.key_path == "/etc/node/node.key"
    assert cfg.cafile == str(tmp_path / "ca.pem")
    assert cfg.health_address == ("::1", 8080)
    assert (cfg.max_retry, cfg.heartbeat_interval_seconds) == (5, 10)


def test_contact_email_and_features_are_optional() -> None:
    text = (
        'registry_url = "https://r.example"\nkey_path = "k"\nstate_path = "s"\n'
        '[payload]\nname = "n"\nhost = "h"\napi_base_url = "http://h"\nprotocol_version = "1"\n'
    )
    payload = node_config.parse(text).payload.as_payload()
    assert payload["features"] == {} and "contact_email" not in payload


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (node_toml(heartbeat_intervall_seconds=5), "heartbeat_intervall_seconds: unknown key"),
        (node_toml(heartbeat_interval_seconds=0), "heartbeat_interval_seconds: expected int >= 1"),
        (
            node_toml(register_interval_seconds=1.5),
            "register_interval_seconds: expected int, got float",
        ),
        (node_toml(max_retry=0), "max_retry: expected -1 (retry forever) or a positive count"),
        (node_toml(max_retry=-2), "max_retry: expected -1"),
        (node_toml(registry_url="ftp://r.example"), "registry_url: expected an http://"),
        (node_toml(registry_url="registry.example"), "registry_url: expected an http://"),
        (node_toml(registry_url="https://u:p@r.example"), "registry_url: credentials in the URL"),
        (node_toml(registry_url="https://r.example/?a=1"), "registry_url: expected a base URL"),
        (node_toml(health_listen="localhost:8080"), "health_listen: host must be an IP address"),
        (node_toml(health_listen="127.0.0.1"), "health_listen: expected IP:port"),
        (node_toml(key_path=""), "key_path: expected a file path"),
        (node_toml().replace('name = "node one"', 'name = ""'), "payload.name: expected 1 to 256"),
        (node_toml().replace('name = "node one"', f'name = "{"x" * 257}"'), "payload.name"),
        (
            node_toml().replace(f'api_base_url = "https://{HOST}"', 'api_base_url = "ftp://h"'),
            "payload.api_base_url: expected an http:// or https:// URL",
        ),
        (node_toml().replace('name = "node one"\n', ""), "payload.name: required key is missing"),
        (node_toml().replace("max_peers = 64", "ratio = 0.5"), "payload.features.ratio: floats"),
        (
            node_toml().replace("max_peers = 64", "ranks = [1, 2.5]"),
            "payload.features.ranks[1]: floats",
        ),
        (
            node_toml().replace("max_peers = 64", "since = 2026-01-01"),
            "payload.features.since: date has no JSON form",
        ),
        (
            node_toml().replace("max_peers = 64", f'blob = "{"x" * 4100}"'),
            "payload.features: larger than 4096 bytes",
        ),
        (node_toml().replace("[payload]\n", "[payload]\nnick = 1\n"), "payload.nick: unknown key"),
        ("registry_url = ", "invalid TOML"),
    ],
)
def test_bad_configs_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        node_config.parse(text)
    assert message in str(raised.value)


def test_the_template_needs_filling_in(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(node_config.TEMPLATE)
    with pytest.raises(ConfigError, match="registry_url: expected an http:// or https:// URL"):
        node_config.load(path)
    filled = (
        node_config.TEMPLATE.replace('registry_url = ""', 'registry_url = "https://r.example"')
        .replace('name = ""', 'name = "n"')
        .replace('host = ""', 'host = "n.example"')
        .replace('api_base_url = ""', 'api_base_url = "https://n.example"')
    )
    path.write_text(filled)
    cfg = node_config.load(path)
    assert cfg.key_path == str(tmp_path / "node.key") and cfg.payload.features == {}


def test_an_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read node config"):
        node_config.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        node_config.load(tmp_path / "bin.toml")
