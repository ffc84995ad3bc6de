"""Metrics in-process (issue 14): route templates as labels, storage timed at the facade for
every backend, storage errors, the key ring and directory gauges, probes, and ``[metrics]``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from registryd import config as config_mod
from registryd.errors import ConfigError, StorageError
from registryd.identity import user_id
from registryd.keyring import EnvelopeKey, KeyRing
from registryd.metrics import Metrics
from registryd.metrics.state import StateCollector
from registryd.metrics.storage import OPERATIONS, instrument
from registryd.secret import Secret
from registryd.storage import Storage
from registryd.storage.leveldb import LevelDBStorage
from registryd.storage.leveldb_keys import IDENT
from tests.directory_support import fake_nodes
from tests.helpers import INDEX_KEY_HEX, Clock, app_with_state, config_text, make_config
from tests.test_directory_prober import A, B, directory_table, setup
from tests.vectors import KID_HEX, SERVER_PRIVATE_HEX

DAY_MS = 86_400_000


def samples(metrics: Metrics) -> dict[str, list[Sample]]:
    text = generate_latest(metrics.exposition()).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(metrics: Metrics, family: str, name: str, **labels: str) -> float:
    found = [s.value for s in samples(metrics)[family] if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels)
    return found[0]


async def test_routes_are_templates_and_unrouted_requests_are_matched_or_unmatched() -> None:
    handle = user_id("dave").hex()
    async with app_with_state(make_config()) as (state, http):
        assert (await http.get(f"/check_user/{handle}")).status_code == 200
        assert (await http.get(f"/check_user/{handle}")).status_code == 200
        assert (await http.delete("/register")).status_code == 405
        assert (await http.get(f"/no/such/{handle}")).status_code == 404
        assert (await http.request("BREW", "/health")).status_code == 405
    requests = samples(state.metrics)["registryd_http_requests"]
    counts = {tuple(s.labels[k] for k in ("method", "route", "status")): s.value for s in requests}
    assert counts == {
        ("GET", "/check_user/{handle}", "200"): 2,
        ("DELETE", "/register", "405"): 1,
        ("GET", "(unmatched)", "404"): 1,
        ("OTHER", "/health", "405"): 1,
    }
    latency = samples(state.metrics)["registryd_http_request_duration_seconds"]
    seconds = [s.value for s in latency if s.name.endswith("_sum")]
    assert len(seconds) == 4 and all(0 < v < 5 for v in seconds)


def test_the_storage_operations_are_the_interface_s_public_coroutines() -> None:
    public = {
        name
        for name, member in inspect.getmembers(Storage, inspect.iscoroutinefunction)
        if not name.startswith("_") and name != "close"
    }
    assert set(OPERATIONS) == public and len(public) > 10


async def test_storage_is_timed_and_its_errors_counted_at_the_facade(tmp_path: Path) -> None:
    alice = user_id("alice")
    store = LevelDBStorage(Secret(bytes.fromhex(INDEX_KEY_HEX)), tmp_path / "db")
    metrics, again = Metrics(), Metrics()
    instrument(store, metrics)
    instrument(store, again)  # a second app over one storage: only the latest measures
    try:
        assert await store.register(alice, b'{"x":1}')
        right = store.blind(alice)
        bob = user_id("bob")
        store._db.put(IDENT + store.blind(bob), store._db.get(IDENT + right))  # misplaced
        with pytest.raises(StorageError):
            await store.get_identity(bob)
        assert await store.get_identity(alice) == b'{"x":1}'
    finally:
        await store.close()
    family, count = "registryd_storage_operation_duration_seconds", "_count"
    assert value(again, family, family + count, operation="register") == 1
    assert value(again, family, family + count, operation="get_identity") == 2
    errors = "registryd_storage_errors"
    assert value(again, errors, errors + "_total", operation="get_identity") == 1
    assert value(again, errors, errors + "_total", operation="register") == 0
    assert value(metrics, family, family + count, operation="register") == 0


def test_key_ring_gauges_by_state_with_the_active_key_s_age_and_expiry() -> None:
    clock = Clock()
    now = clock()
    private = bytes.fromhex(SERVER_PRIVATE_HEX)
    ring = KeyRing(
        Secret(bytes(range(32))),
        (
            EnvelopeKey.from_private(
                b"\x0a" * 8,
                private,
                active=True,
                created_ms=now - 2 * DAY_MS,
                not_before_ms=now - DAY_MS,
                not_after_ms=now + 3 * DAY_MS,
            ),
            EnvelopeKey.from_private(bytes.fromhex(KID_HEX), private, opens_until_ms=now + 1000),
            EnvelopeKey.from_private(b"\x0b" * 8, private, retired=True),
        ),
    )
    metrics = Metrics()
    metrics.watch(StateCollector(lambda: ring, clock, lambda: {"online": 2, "offline": 1}))
    keys = {s.labels["state"]: s.value for s in samples(metrics)["registryd_keyring_keys"]}
    assert keys == {
        "active": 1,
        "pending": 0,
        "grace": 1,
        "inactive": 0,
        "retired": 1,
        "expired": 0,
    }
    age = "registryd_keyring_active_key_age_seconds"
    assert value(metrics, age, age) == 86_400  # from not_before, not creation
    expires = "registryd_keyring_active_key_expires_in_seconds"
    assert value(metrics, expires, expires) == 3 * 86_400
    nodes = {s.labels["status"]: s.value for s in samples(metrics)["registryd_directory_nodes"]}
    assert nodes == {"online": 2, "unknown": 0, "offline": 1}
    clock.advance(2 * 86_400)  # read at each scrape: the key has left its grace...
    keys = {s.labels["state"]: s.value for s in samples(metrics)["registryd_keyring_keys"]}
    assert (keys["active"], keys["grace"], keys["retired"]) == (1, 0, 2)
    clock.advance(86_400)  # ... and now the active key has expired: degraded, no age
    keys = {s.labels["state"]: s.value for s in samples(metrics)["registryd_keyring_keys"]}
    assert (keys["active"], keys["expired"]) == (0, 1)
    assert samples(metrics)[age] == []


async def test_probes_and_directory_counts_name_no_node() -> None:
    async with setup(directory_table()) as s, fake_nodes(A, B) as (a, b):
        await s.add(A, a.url, "node-a")
        await s.add(B, b.url, "node-b")  # B is outside probe_allow_cidrs: refused
        await s.directory.prober.run_round()
        metrics = s.registry.metrics
        nodes = samples(metrics)["registryd_directory_nodes"]
        assert {x.labels["status"]: x.value for x in nodes} == {
            "online": 1,
            "unknown": 0,
            "offline": 1,
        }
        a.status = 503
        await s.directory.prober.run_round()
        probes = "registryd_directory_probes"
        outcomes = {
            o: value(metrics, probes, probes + "_total", outcome=o)
            for o in ("up", "down", "refused")
        }
        assert outcomes == {"up": 1, "down": 1, "refused": 2}
        seconds = "registryd_directory_probe_duration_seconds"
        assert value(metrics, seconds, seconds + "_count") == 1  # answered probes only
        gc = "registryd_gc_duration_seconds"
        assert value(metrics, gc, gc + "_count", task="spent_nonces") == 2
        removed = "registryd_gc_removed"  # each registration spent a nonce, none expired yet
        assert value(metrics, removed, removed + "_total", task="spent_nonces") == 0
        labels = {
            v for family in samples(metrics).values() for x in family for v in x.labels.values()
        }
        assert not [v for v in labels if any(n in v for n in (A, B, "node-a", "node-b"))]


# -- [metrics] -----------------------------------------------------------------------------


def test_metrics_are_off_unless_an_address_is_given() -> None:
    assert make_config().metrics.address is None
    assert make_config(tables="[metrics]\n").metrics.address is None
    on = make_config(tables='[metrics]\naddress = "[::1]:9464"\n')
    assert on.metrics.address == "[::1]:9464"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('address = "localhost:9464"', "host must be an IP address"),
        ('address = ""', "expected IP:port"),
        ('address = "127.0.0.1:99999"', "expected IP:port"),
        ('address = "127.0.0.1:8443"', "must not be address's port"),  # the public port
        ('address = "[::1]:8443"', "must not be address's port"),  # any host
        ("address = 9464", "expected str"),
    ],
)
def test_a_bad_metrics_address_is_a_config_error_naming_the_key(table: str, message: str) -> None:
    text = config_text(tables=f"[metrics]\n{table}\n").replace("127.0.0.1:0", "127.0.0.1:8443")
    with pytest.raises(ConfigError) as raised:
        config_mod.parse(text)
    assert raised.value.path == "metrics.address"
    assert message in raised.value.message


def test_the_metrics_address_differs_from_the_peer_listener_s(tmp_path: Path) -> None:
    ca = tmp_path / "peer-ca.pem"
    tls = f'[tls]\ncert_pem_path = "{ca}"\nkey_pem_path = "{ca}"\n'
    peers = f'[peers]\nlisten = "127.0.0.1:9443"\nclient_ca_pem_path = "{ca}"\n'
    text = config_text(
        mode="tls", tls=tls, tables=peers + '[metrics]\naddress = "127.0.0.1:9443"\n'
    )
    with pytest.raises(ConfigError) as raised:
        config_mod.parse(text)
    assert str(raised.value) == (
        "metrics.address: must not be peers.listen's port: metrics have a listener of their own"
    )
