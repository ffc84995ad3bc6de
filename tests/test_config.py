"""Config loading and validation (spec 4.11 + DESIGN "Configuration"): every bad value is one
ConfigError naming its key path, and secrets never show in reprs, summaries or errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from registryd import config
from registryd.cli.daemon import summary as summarize
from registryd.config import RateLimitConfig, ServerConfig, StorageConfig
from registryd.errors import ConfigError
from registryd.keystore import load_keyring
from tests.config_support import (
    ENVELOPE,
    INDEX_KEY_HEX,
    KEY,
    NOW_MS,
    SECRETS,
    STORAGE,
    error_of,
    parse,
    toml,
)
from tests.helpers import write_config
from tests.vectors import PEPPER_HEX
from tests.vectors import SERVER_PRIVATE_HEX as PRIVATE_HEX
from tests.vectors import SERVER_PUBLIC_HEX as PUBLIC_HEX


def key_table(kid: str, *, active: bool = True, extra: str = "") -> str:
    return (
        f'[[envelope.keys]]\nkid_hex = "{kid}"\nx25519_private_key_hex = "{PRIVATE_HEX}"\n'
        f"active = {str(active).lower()}\n{extra}"
    )


def test_the_base_config_is_valid() -> None:
    cfg = parse(toml())
    assert cfg.mode == "http"
    assert cfg.host_port == ("127.0.0.1", 8443)
    assert cfg.storage.kind == "memory"
    assert cfg.envelope.pepper_hex.reveal().hex() == PEPPER_HEX
    assert cfg.index_key().reveal().hex() == INDEX_KEY_HEX
    ring = load_keyring(cfg.envelope)
    assert ring.active(NOW_MS).public.hex() == PUBLIC_HEX
    assert ring.pepper.reveal().hex() == PEPPER_HEX


def test_defaults_from_spec_4_11() -> None:
    cfg = parse(toml())
    assert (cfg.rate_limit.enabled, cfg.rate_limit.per_ip_rps, cfg.rate_limit.burst) == (
        True,
        5,
        10,
    )
    assert cfg.rate_limit.ban_seconds == 300
    endpoints = cfg.rate_limit.endpoints
    assert (endpoints.register_rps, endpoints.resolve_rps, endpoints.check_user_rps) == (1, 3, 10)
    assert (cfg.presence.ttl_seconds, cfg.presence.gc_interval_seconds) == (300, 60)
    assert (cfg.pow.enabled, cfg.pow.difficulty, cfg.pow.ttl_seconds) == (False, 18, 120)
    assert cfg.max_nodes == 2048
    assert cfg.trusted_proxies == ()
    assert cfg.allow_sync is False  # DESIGN: hardened default (reference: true)


# --- the validation table ------------------------------------------------------------------

CASES: list[tuple[str, str, str, str]] = [
    # (id, config text, expected path, expected part of the message)
    ("unknown top-level key", toml('adress = "127.0.0.1:1"\n'), "adress", "unknown key"),
    (
        "unknown nested key",
        toml("", "[rate_limit.endpoints]\nresolv_rps = 3\n"),
        "rate_limit.endpoints.resolv_rps",
        "unknown key",
    ),
    (
        "unknown key in a key table",
        toml(envelope=ENVELOPE + "actve = true\n"),
        "envelope.keys[0].actve",
        "unknown key",
    ),
    ("unknown table", toml("", "[metricz]\nenabled = true\n"), "metricz", "unknown key"),
    (
        "unknown key in [metrics]",
        toml("", "[metrics]\nenabled = true\n"),
        "metrics.enabled",
        "unknown key",
    ),
    ("bool as string", toml('allow_sync = "yes"\n'), "allow_sync", "expected bool, got str"),
    (
        "int as string",
        toml("", '[rate_limit]\nburst = "10"\n'),
        "rate_limit.burst",
        "expected int, got str",
    ),
    (
        "int as float",
        toml("", "[rate_limit]\nper_ip_rps = 1.5\n"),
        "rate_limit.per_ip_rps",
        "expected int, got float",
    ),
    ("negative max_nodes", toml("max_nodes = -1\n"), "max_nodes", "expected int >= 0"),
    ("mode not a choice", toml().replace('"http"', '"https"'), "mode", 'expected "tls" or "http"'),
    (
        "trusted_proxies not an array",
        toml('trusted_proxies = "10.0.0.1"\n'),
        "trusted_proxies",
        "expected array, got str",
    ),
    (
        "active as int",
        toml(envelope=ENVELOPE.replace("active = true", "active = 1")),
        "envelope.keys[0].active",
        "expected bool, got int",
    ),
    (
        "keys not an array",
        toml(envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeys = 5\n'),
        "envelope.keys",
        "expected array, got int",
    ),
    (
        "zero per_ip_rps",
        toml("", "[rate_limit]\nper_ip_rps = 0\n"),
        "rate_limit.per_ip_rps",
        ">= 1",
    ),
    ("zero burst", toml("", "[rate_limit]\nburst = 0\n"), "rate_limit.burst", ">= 1"),
    (
        "zero register_rps",
        toml("", "[rate_limit.endpoints]\nregister_rps = 0\n"),
        "rate_limit.endpoints.register_rps",
        ">= 1",
    ),
    (
        "zero resolve_rps",
        toml("", "[rate_limit.endpoints]\nresolve_rps = 0\n"),
        "rate_limit.endpoints.resolve_rps",
        ">= 1",
    ),
    (
        "zero check_user_rps",
        toml("", "[rate_limit.endpoints]\ncheck_user_rps = 0\n"),
        "rate_limit.endpoints.check_user_rps",
        ">= 1",
    ),
    (
        "zero rate checked even when disabled",
        toml("", "[rate_limit]\nenabled = false\nper_ip_rps = 0\n"),
        "rate_limit.per_ip_rps",
        ">= 1",
    ),
    (
        "zero presence ttl",
        toml("", "[presence]\nttl_seconds = 0\n"),
        "presence.ttl_seconds",
        ">= 1",
    ),
    (
        "zero gc interval",
        toml("", "[presence]\ngc_interval_seconds = 0\n"),
        "presence.gc_interval_seconds",
        ">= 1",
    ),
    (
        "pepper 31 bytes",
        toml(envelope=ENVELOPE.replace(PEPPER_HEX, PEPPER_HEX[:-2])),
        "envelope.pepper_hex",
        "expected 64 hex characters (32 bytes)",
    ),
    (
        "pepper 33 bytes",
        toml(envelope=ENVELOPE.replace(PEPPER_HEX, PEPPER_HEX + "21")),
        "envelope.pepper_hex",
        "64 hex characters",
    ),
    (
        "pepper not hex",
        toml(envelope=ENVELOPE.replace(PEPPER_HEX, "zz" + PEPPER_HEX[2:])),
        "envelope.pepper_hex",
        "64 hex characters",
    ),
    (
        "pepper with 0x",
        toml(envelope=ENVELOPE.replace(PEPPER_HEX, "0x" + PEPPER_HEX[2:])),
        "envelope.pepper_hex",
        "64 hex characters",
    ),
    (
        "pepper missing",
        toml(envelope="[envelope]\n" + KEY),
        "envelope.pepper_hex",
        "required key is missing",
    ),
    ("envelope missing", toml(envelope=""), "envelope", "required key is missing"),
    (
        "kid 7 bytes",
        toml(envelope=ENVELOPE.replace("0001020304050607", "00010203040506")),
        "envelope.keys[0].kid_hex",
        "expected str matching",
    ),
    (
        "kid 9 bytes",
        toml(envelope=ENVELOPE.replace("0001020304050607", "000102030405060708")),
        "envelope.keys[0].kid_hex",
        "expected str matching",
    ),
    (
        "kid not hex",
        toml(envelope=ENVELOPE.replace("0001020304050607", "000102030405060g")),
        "envelope.keys[0].kid_hex",
        "expected str matching",
    ),
    (
        "private key 31 bytes",
        toml(envelope=ENVELOPE.replace(PRIVATE_HEX, PRIVATE_HEX[:-2])),
        "envelope.keys[0].x25519_private_key_hex",
        "expected 64 hex characters (32 bytes)",
    ),
    (
        "private key 33 bytes",
        toml(envelope=ENVELOPE.replace(PRIVATE_HEX, PRIVATE_HEX + "30")),
        "envelope.keys[0].x25519_private_key_hex",
        "64 hex characters",
    ),
    (
        "second key bad",
        toml(envelope=ENVELOPE + key_table("0a0b0c0d0e0f0a0b").replace(PRIVATE_HEX, "00")),
        "envelope.keys[1].x25519_private_key_hex",
        "64 hex characters",
    ),
    (
        "index key 31 bytes",
        toml(storage=STORAGE.replace(INDEX_KEY_HEX, INDEX_KEY_HEX[:-2])),
        "storage.index_key_hex",
        "64 hex characters",
    ),
    (
        "duplicate kid",
        toml(envelope=ENVELOPE + key_table("0001020304050607", active=False)),
        "envelope.keys[1].kid_hex",
        "duplicate kid 0001020304050607",
    ),
    (
        "duplicate kid differing in case",
        toml(
            envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n'
            + key_table("00010203040506aa")
            + key_table("00010203040506AA", active=False)
        ),
        "envelope.keys[1].kid_hex",
        "duplicate kid 00010203040506aa",
    ),
    (
        "no keys",
        toml(envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeys = []\n'),
        "envelope.keys",
        "at least one key",
    ),
    (
        "no active key",
        toml(envelope=ENVELOPE.replace("active = true", "active = false")),
        "envelope.keys",
        "no key has active = true",
    ),
    (
        "active key absent means false",
        toml(envelope=ENVELOPE.replace("active = true\n", "")),
        "envelope.keys",
        "no key has active = true",
    ),
    (
        "inline keys and a keystore",
        toml(envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeystore_path = "k.json"\n' + KEY),
        "envelope.keystore_path",
        "not both",
    ),
    (
        "neither inline keys nor a keystore",
        toml(envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n'),
        "envelope.keys",
        "at least one key is required",
    ),
    (
        "two passphrase sources",
        toml(
            envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeystore_path = "k.json"\n'
            'keystore_passphrase_env = "X"\nkeystore_passphrase_file = "p"\n'
        ),
        "envelope.keystore_passphrase_file",
        "not both",
    ),
    (
        "address with a host name",
        toml().replace("127.0.0.1:8443", "localhost:8443"),
        "address",
        "must be an IP address",
    ),
    ("address without port", toml().replace("127.0.0.1:8443", "127.0.0.1"), "address", "IP:port"),
    (
        "address port > 65535",
        toml().replace("127.0.0.1:8443", "127.0.0.1:65536"),
        "address",
        "IP:port",
    ),
    (
        "address port 99999",
        toml().replace("127.0.0.1:8443", "127.0.0.1:99999"),
        "address",
        "IP:port",
    ),
    (
        "IPv6 without brackets",
        toml().replace("127.0.0.1:8443", "::1:8443"),
        "address",
        "[::1]:8443",
    ),
    ("IPv6 without port", toml().replace("127.0.0.1:8443", "[::1]"), "address", "IP:port"),
    (
        "IPv4 in brackets",
        toml().replace("127.0.0.1:8443", "[127.0.0.1]:8443"),
        "address",
        "IP:port",
    ),
    ("empty address", toml().replace("127.0.0.1:8443", ""), "address", "IP:port"),
    ("short IPv4", toml().replace("127.0.0.1:8443", "127.1:8443"), "address", "IP address"),
    ("tls mode without [tls]", toml().replace('"http"', '"tls"'), "tls", "needs a [tls] table"),
    (
        "tls table missing key path",
        toml("", '[tls]\ncert_pem_path = "certs/server.pem"\n').replace('"http"', '"tls"'),
        "tls.key_pem_path",
        "required key is missing",
    ),
    (
        "tls empty cert path",
        toml("", '[tls]\ncert_pem_path = " "\nkey_pem_path = "k.pem"\n').replace('"http"', '"tls"'),
        "tls.cert_pem_path",
        "must not be empty",
    ),
    (
        "storage sled",
        toml(storage='[storage]\nkind = "sled"\n'),
        "storage.kind",
        'use "leveldb"',
    ),
    (
        "storage unknown kind",
        toml(storage='[storage]\nkind = "postgres"\n'),
        "storage.kind",
        'expected "leveldb", "memory" or "redis"',
    ),
    (
        "storage kind case matters",
        toml(storage='[storage]\nkind = "LevelDB"\n'),
        "storage.kind",
        'expected "leveldb", "memory" or "redis"',
    ),
    (
        "workers on memory storage",
        toml("", "[server]\nworkers = 2\n"),
        "server.workers",
        'need shared storage: [storage] kind = "redis"',
    ),
    (
        "workers with in-process limits",
        toml(
            "",
            "[server]\nworkers = 2\n",
            storage='[storage]\nkind = "redis"\nurl = "redis://h:1"\n',
        ),
        "server.workers",
        'storage_uri = "redis://..." (not "memory://")',
    ),
    (
        "workers zero",
        toml("", "[server]\nworkers = 0\n"),
        "server.workers",
        "",
    ),
    (
        "redis without url",
        toml(storage='[storage]\nkind = "redis"\n'),
        "storage.url",
        "expected a URL starting redis://",
    ),
    (
        "redis url with another scheme",
        toml(storage='[storage]\nkind = "redis"\nurl = "http://127.0.0.1:6379"\n'),
        "storage.url",
        "expected a URL starting redis://",
    ),
    (
        "redis url without host",
        toml(storage='[storage]\nkind = "redis"\nurl = "redis://:6379/0"\n'),
        "storage.url",
        "needs a host",
    ),
    (
        "redis url with a bad port",
        toml(storage='[storage]\nkind = "redis"\nurl = "redis://127.0.0.1:99999/0"\n'),
        "storage.url",
        "bad port",
    ),
    (
        "redis unix url without a path",
        toml(storage='[storage]\nkind = "redis"\nurl = "unix://"\n'),
        "storage.url",
        "needs the socket's path",
    ),
    (
        "redis ca_file without TLS",
        toml(storage='[storage]\nkind = "redis"\nurl = "redis://h:1"\nca_file = "/x"\n'),
        "storage.ca_file",
        "only with a rediss:// url",
    ),
    (
        "redis ca_file missing",
        toml(storage='[storage]\nkind = "redis"\nurl = "rediss://h:1"\nca_file = "/no/ca.pem"\n'),
        "storage.ca_file",
        "file not found",
    ),
    (
        "redis wait_replicas on a cluster",
        toml(storage='[storage]\nkind = "redis"\nurl = "redis+cluster://h:1"\nwait_replicas = 1\n'),
        "storage.wait_replicas",
        "not with a Redis Cluster",
    ),
    (
        "redis timeout zero",
        toml(storage='[storage]\nkind = "redis"\nurl = "redis://h:1"\ntimeout_ms = 0\n'),
        "storage.timeout_ms",
        "",
    ),
    (
        "leveldb with empty path",
        toml(storage='[storage]\nkind = "leveldb"\npath = ""\n'),
        "storage.path",
        "must not be empty",
    ),
    (
        "bad trusted proxy",
        toml('trusted_proxies = ["10.0.0.1", "proxy.internal"]\n'),
        "trusted_proxies[1]",
        "expected an IP address or CIDR",
    ),
    (
        "bad trusted proxy CIDR",
        toml('trusted_proxies = ["10.0.0.0/33"]\n'),
        "trusted_proxies[0]",
        "expected an IP address or CIDR",
    ),
    (
        "peer token hash not argon2id",
        toml("", '[peers]\ntoken_hashes = ["$argon2i$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"]\n'),
        "peers.token_hashes[0]",
        "expected an Argon2id hash",
    ),
    (
        "resolve padding not a power of two",
        toml("", "[privacy]\nresolve_pad_bytes = 1000\n"),
        "privacy.resolve_pad_bytes",
        "expected a power of two",
    ),
    (
        "presence ttl beyond a year",
        toml("", "[presence]\nttl_seconds = 99999999999\n"),
        "presence.ttl_seconds",
        "<= 31536000",
    ),
    (
        "admin token hash that is not a parseable argon2id hash",
        toml("", '[admin]\ntoken_hashes = ["$argon2id$garbage"]\n'),
        "admin.token_hashes[0]",
        "expected an Argon2id hash",
    ),
    (
        "rate limit storage neither memory nor redis",
        toml("", '[rate_limit]\nstorage_uri = "memcached://localhost:11211"\n'),
        "rate_limit.storage_uri",
        '"memory://", or a Redis URL: expected a URL starting redis://',
    ),
    (
        "pow difficulty out of range when enabled",
        toml("", "[pow]\nenabled = true\ndifficulty = 31\n"),
        "pow.difficulty",
        "1..=30",
    ),
    (
        "pow ttl zero when enabled",
        toml("", "[pow]\nenabled = true\nttl_seconds = 0\n"),
        "pow.ttl_seconds",
        "> 0",
    ),
    ("bad TOML", toml("address = \n"), "", "invalid TOML"),
    ("duplicate TOML key", toml('mode = "http"\n'), "", "invalid TOML"),
    (
        "server body cap zero",
        toml("", "[server]\nmax_body_bytes = 0\n"),
        "server.max_body_bytes",
        ">= 1",
    ),
    (
        "an event loop that is neither asyncio nor uvloop",
        toml("", '[server]\nevent_loop = "trio"\n'),
        "server.event_loop",
        "invalid enum value 'trio'",
    ),
]


def test_uvloop_asked_for_and_not_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an install without it imports
    err = error_of(toml("", '[server]\nevent_loop = "uvloop"\n'))
    assert err.path == "server.event_loop"
    assert "pip install 'registryd[uvloop]'" in err.message


@pytest.mark.parametrize(
    ("text", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_config(text: str, path: str, message: str) -> None:
    err = error_of(text)
    assert err.path == path
    assert message in err.message
    assert str(err) == (f"{path}: {err.message}" if path else err.message)


# --- valid variants ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host_port"),
    [
        ("[::1]:8443", ("::1", 8443)),
        ("[2001:db8::7]:443", ("2001:db8::7", 443)),
        ("192.0.2.1:0", ("192.0.2.1", 0)),
        ("10.1.2.3:65535", ("10.1.2.3", 65535)),
    ],
)
def test_good_addresses(address: str, host_port: tuple[str, int]) -> None:
    cfg = parse(toml().replace("127.0.0.1:8443", address))
    assert cfg.address == address
    assert cfg.host_port == host_port


def test_missing_storage_table_means_defaults() -> None:
    cfg = parse(toml(storage=""))
    assert cfg.storage.kind == "leveldb"
    assert cfg.storage.path == "./registry_db"
    assert cfg.storage.index_key_hex is None


def test_empty_storage_table_means_defaults() -> None:
    cfg = parse(toml(storage="[storage]\n"))
    assert (cfg.storage.kind, cfg.storage.path) == ("leveldb", "./registry_db")


def test_index_key_is_derived_from_the_pepper_when_absent() -> None:
    derived = parse(toml(storage="")).index_key().reveal()
    assert len(derived) == 32
    assert derived.hex() != PEPPER_HEX  # derived, not the pepper itself
    assert derived == parse(toml(storage='[storage]\nkind = "memory"\n')).index_key().reveal()
    other = toml(storage="", envelope=ENVELOPE.replace(PEPPER_HEX, PEPPER_HEX[::-1]))
    assert parse(other).index_key().reveal() != derived


def test_tls_table() -> None:
    tls = (
        '[tls]\ncert_pem_path = "certs/server.pem"\nkey_pem_path = "certs/server-key.pem"\n'
        'client_ca_pem_path = "certs/ca.pem"\n'
    )
    cfg = parse(toml("", tls).replace('"http"', '"tls"'))
    assert cfg.mode == "tls"
    assert cfg.tls is not None
    assert (cfg.tls.cert_pem_path, cfg.tls.client_ca_pem_path) == (
        "certs/server.pem",
        "certs/ca.pem",
    )


def test_secrets_accept_uppercase_hex() -> None:
    envelope = ENVELOPE.replace(PEPPER_HEX, PEPPER_HEX.upper()).replace(
        PRIVATE_HEX, PRIVATE_HEX.upper()
    )
    cfg = parse(toml(envelope=envelope))
    assert cfg.envelope.pepper_hex.reveal().hex() == PEPPER_HEX
    assert load_keyring(cfg.envelope).active(NOW_MS).public.hex() == PUBLIC_HEX


def test_key_order_is_kept_and_rotation_fields_parse() -> None:
    envelope = (
        f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n'
        + key_table("0a0b0c0d0e0f0a0b", active=False, extra=f"not_after_epoch_ms = {NOW_MS + 1}\n")
        + key_table("0001020304050607")
    )
    ring = load_keyring(parse(toml(envelope=envelope)).envelope)
    assert [k.kid.hex() for k in ring.keys] == ["0a0b0c0d0e0f0a0b", "0001020304050607"]
    assert ring.keys[0].not_after_ms == NOW_MS + 1
    assert ring.active(NOW_MS).kid.hex() == "0001020304050607"


def test_trusted_proxies_accept_ips_and_cidrs() -> None:
    cfg = parse(toml('trusted_proxies = ["10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]\n'))
    assert cfg.trusted_proxies == ("10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8")


def test_argon2id_token_hashes_accepted() -> None:
    digest = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
    cfg = parse(toml("", f'[peers]\ntoken_hashes = ["{digest}"]\n'))
    assert cfg.peers.token_hashes == (digest,)


def test_pow_settings_are_only_checked_when_enabled() -> None:
    cfg = parse(toml("", "[pow]\nenabled = false\ndifficulty = 31\n"))
    assert cfg.pow.difficulty == 31


def test_a_plain_token_in_token_hashes_is_not_echoed() -> None:
    token = "s3cr3t-bearer-token-value"
    err = error_of(toml("", f'[peers]\ntoken_hashes = ["{token}"]\n'))
    assert err.path == "peers.token_hashes[0]"
    assert token not in str(err)


# --- secrets never show --------------------------------------------------------------------


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret.upper() not in text
        assert secret.lower() not in text.lower()
        assert repr(bytes.fromhex(secret)) not in text


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_repr_str_and_summary_hide_secrets(case: str) -> None:
    text = toml()
    if case == "upper":
        for secret in SECRETS:
            text = text.replace(secret, secret.upper())
    cfg = parse(text)
    _assert_no_secret(repr(cfg))
    _assert_no_secret(str(cfg))
    _assert_no_secret(repr(cfg.envelope))
    _assert_no_secret(repr(load_keyring(cfg.envelope)))
    summary = summarize(cfg)
    _assert_no_secret(repr(summary))
    _assert_no_secret(json.dumps(summary))
    assert summary["envelope"]["pepper_hex"] == "<redacted>"
    assert "x25519_private_key_hex" not in summary["envelope"]["keys"][0]  # not even redacted
    assert summary["envelope"]["keys"][0]["x25519_public_key_hex"] == PUBLIC_HEX  # public: shown
    assert summary["envelope"]["keys"][0]["state"] == "active"
    assert summary["storage"]["index_key_hex"] == "<redacted>"


def test_summary_of_a_derived_index_key_says_so() -> None:
    cfg = parse(toml(storage=""))
    summary = summarize(cfg)
    assert summary["storage"]["index_key_hex"] == "<derived from pepper>"
    _assert_no_secret(json.dumps(summary))
    assert cfg.index_key().reveal().hex() not in json.dumps(summary)


@pytest.mark.parametrize(
    "text",
    [
        toml(envelope=ENVELOPE.replace(PEPPER_HEX, PEPPER_HEX[:-1])),
        toml(envelope=ENVELOPE.replace(PEPPER_HEX, PEPPER_HEX + "0")),
        toml(envelope=ENVELOPE.replace(PRIVATE_HEX, PRIVATE_HEX[:-1])),
        toml(envelope=ENVELOPE.replace(PRIVATE_HEX, " " + PRIVATE_HEX)),
        toml(storage=STORAGE.replace(INDEX_KEY_HEX, INDEX_KEY_HEX + "00")),
        toml(envelope=ENVELOPE.replace(f'"{PRIVATE_HEX}"', f'["{PRIVATE_HEX}"]')),
        toml(envelope=ENVELOPE.replace(f'"{PEPPER_HEX}"', f'{{ v = "{PEPPER_HEX}" }}')),
    ],
)
def test_errors_about_secrets_do_not_echo_them(text: str) -> None:
    err = error_of(text)
    assert err.path.endswith(("pepper_hex", "x25519_private_key_hex", "index_key_hex"))
    for secret in SECRETS:
        assert secret[:40] not in str(err)


# --- load ------------------------------------------------------------------------------------


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, toml())
    cfg = config.load(path)
    assert load_keyring(cfg.envelope).keys[0].public.hex() == PUBLIC_HEX
    assert config.load(str(path)) == cfg


def test_load_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        config.load(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)


def test_load_of_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path)


def test_load_of_non_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_bytes(b'address = "\xff"\n')
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(path)


def test_load_validates(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, toml("adress = 1\n"))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.path == "adress"


# --- holes found while writing these tests (each names the fix) ----------------------------


def test_kid_with_a_trailing_newline_is_rejected() -> None:
    # msgspec's `pattern` uses re.search, where `$` also matches before a final "\n"; such a kid
    # decodes to the same 8 bytes (bytes.fromhex skips whitespace) and slips past the
    # duplicate-kid check, giving two keys with one kid.
    text = toml(
        envelope=f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n'
        + key_table("0001020304050607")
        + key_table("0001020304050607\\n", active=False)
    )
    try:
        kids = [k.kid.hex() for k in load_keyring(parse(text).envelope).keys]
    except ConfigError as exc:
        assert exc.path == "envelope.keys[1].kid_hex"
        return
    raise AssertionError(
        f"BUG in registryd/config/tables.py: kid_hex with a trailing newline accepted ({kids}). "
        'Fix: KidHex = Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{16}\\\\Z")] '
        "(\\Z instead of $)"
    )


def test_address_port_must_be_ascii_digits() -> None:
    # "\d" matches any Unicode digit and int() accepts them: full-width "8443" would be 8443.
    text = toml().replace("127.0.0.1:8443", "127.0.0.1:\uff18\uff14\uff14\uff13")
    try:
        host_port = parse(text).host_port
    except ConfigError as exc:
        assert exc.path == "address"
        return
    raise AssertionError(
        f"BUG in registryd/sockets.py: full-width port digits accepted as {host_port}. "
        "Fix: in parse_address's regex use [0-9]{1,5} instead of \\d{1,5} (both places)"
    )


def test_a_key_past_its_not_after_is_a_runtime_matter_not_a_config_error() -> None:
    cfg = parse(toml(envelope=ENVELOPE + f"not_after_epoch_ms = {NOW_MS - 1}\n"))
    assert load_keyring(cfg.envelope).keys[0].state(NOW_MS) == "expired"


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        (
            "storage",
            ("kind", "path", "index_key_hex", "url", "ca_file", "timeout_ms", "wait_replicas"),
        ),
        ("server", ("workers",)),
        ("rate_limit", ("storage_uri",)),
    ],
)
def test_the_scale_out_keys_are_documented(table: str, keys: tuple[str, ...]) -> None:
    """The example config and the README's config section name every key of these tables
    (issue 13's keys among them), commented out or set."""
    root = Path(__file__).resolve().parent.parent
    example = (root / "config" / "registry.example.toml").read_text()
    readme = (root / "README.md").read_text()
    fields = {
        "storage": StorageConfig,
        "server": ServerConfig,
        "rate_limit": RateLimitConfig,
    }[table].__struct_fields__
    assert set(keys) <= set(fields)
    for key in keys:
        pattern = re.compile(rf"^#? ?{key} = ", re.M)
        assert pattern.search(example), f"{table}.{key} not in the example config"
        assert pattern.search(readme) or f"`{key}`" in readme, f"{table}.{key} not in README"
