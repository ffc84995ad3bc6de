"""Prometheus metrics on a real daemon (issue 14): TLS on the public port, ``GET /metrics`` on a
plain-HTTP loopback listener of its own; registrations, resolves, misses, proofs of work, 429s
and a ban with the registryd client; the scrape parsed with ``prometheus_client``'s own parser
and checked against what was done, and for what its labels must never hold."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from registryd.certs import DevCerts
from registryd.client import IdentityKeys, RegistryClient
from registryd.errors import ServerError
from registryd.identity import user_id
from tests.helpers import INDEX_KEY_HEX, Daemon, config_text, daemon, tls_table, write_config
from tests.vectors import KID_HEX, PEPPER_HEX, SERVER_PRIVATE_HEX

pytestmark = pytest.mark.e2e

TOKEN = "admin-token-for-metrics-0123456789"
TOKEN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
NAMES = ("alice-metrics", "bob-metrics", "carol-metrics")
MISSES = ("nobody-one", "nobody-two")
TABLES = (
    # resolves run dry first (burst 10, 1/s); every other bucket refills at once
    "[rate_limit]\nper_ip_rps = 100000\nburst = 10\nban_seconds = 300\n"
    "[rate_limit.endpoints]\nregister_rps = 100000\nresolve_rps = 1\n"
    "check_user_rps = 100000\npow_challenge_rps = 100000\n"
    "[pow]\nenabled = true\ndifficulty = 4\n"
    f'[admin]\ntoken_hashes = ["{TOKEN_HASH}"]\n'
    '[metrics]\naddress = "127.0.0.1:0"\n'
)
TEMPLATES = {"/check_user/": "/check_user/{handle}"}
FAMILIES = {
    "registryd_http_requests",
    "registryd_http_request_duration_seconds",
    "registryd_rate_limit_refusals",
    "registryd_rate_limit_bans",
    "registryd_pow_challenges_issued",
    "registryd_pow_proofs",
    "registryd_storage_operation_duration_seconds",
    "registryd_storage_errors",
    "registryd_gc_duration_seconds",
    "registryd_gc_removed",
    "registryd_directory_probes",
    "registryd_directory_probe_duration_seconds",
    "registryd_directory_nodes",
    "registryd_keyring_keys",
    "registryd_keyring_active_key_age_seconds",
    "registryd_keyring_active_key_expires_in_seconds",
    "process_resident_memory_bytes",
}
ROUTES = {
    "/register",
    "/resolve",
    "/check_user/{handle}",
    "/announce",
    "/envelope_pubkey",
    "/health",
    "/pow/challenge",
    "/admin/keys",
    "(unmatched)",
}


def template(path: str) -> str:
    for prefix, name in TEMPLATES.items():
        if path.startswith(prefix):
            return name
    return path if path in ROUTES else "(unmatched)"


class Recording(httpx.BaseTransport):
    """The real network, with every answer counted by (method, route template, status)."""

    def __init__(self, cafile: Path) -> None:
        self.inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(cafile)))
        self.seen: Counter[tuple[str, str, int]] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.seen[(request.method, template(request.url.path), response.status_code)] += 1
        return response

    def close(self) -> None:
        self.inner.close()

    def count(self, route: str, status: int | None = None) -> int:
        return sum(n for (_, r, s), n in self.seen.items() if r == route and status in (None, s))


@pytest.fixture
def served(tmp_path: Path, certs: DevCerts) -> Iterator[tuple[Daemon, str]]:
    path = tmp_path / "registry.toml"
    write_config(path, config_text(mode="tls", tls=tls_table(certs), tables=TABLES))
    with daemon(path) as d:
        found = re.search(r"metrics listener on (http://127\.0\.0\.1:\d+/metrics)", d.log)
        assert found, d.log
        yield d, found.group(1)


def scrape(url: str) -> dict[str, list[Sample]]:
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def exercise(url: str, transport: Recording) -> list[str]:
    """Registrations, hits, misses, check_user, an announce, an admin call, /metrics on the
    public port, then resolves until a 429 (a ban) and two requests under the ban. Returns the
    strings no label may hold."""
    forbidden = [PEPPER_HEX, INDEX_KEY_HEX, SERVER_PRIVATE_HEX, TOKEN, "127.0.0.1", *NAMES]
    pepper = bytes.fromhex(PEPPER_HEX)
    with RegistryClient(url, pepper, transport=transport) as client:
        owner = {}
        for name in NAMES:
            keys = owner[name] = IdentityKeys.generate()
            client.register(name, keys)
            forbidden += [keys.signing_public_key.hex(), keys.encryption_public_key.hex()]
        forbidden += [user_id(name).hex() for name in NAMES + MISSES]
        for name in NAMES:
            assert client.resolve(name) is not None
        for name in MISSES:
            assert client.resolve(name) is None
        assert client.check_user(NAMES[0]) and not client.check_user(MISSES[0])
        client.announce(NAMES[0], "198.51.100.7:4000", keys=owner[NAMES[0]])  # signed
    with httpx.Client(transport=transport, base_url=url) as http:
        assert http.get("/admin/keys", headers={"authorization": f"Bearer {TOKEN}"}).is_success
        on_public = http.get("/metrics")  # never on the public port: a structured 404
        assert on_public.status_code == 404
        assert on_public.json()["error"]["code"] == "NOT_FOUND"
        with RegistryClient(url, pepper, transport=transport) as client:
            for _ in range(100):
                try:
                    client.resolve(NAMES[1])
                except ServerError as exc:
                    assert exc.status == 429
                    break
            else:
                pytest.fail("resolves were never limited")
        assert [http.get("/health").status_code for _ in range(2)] == [429, 429]  # banned
    return forbidden


def test_a_scrape_counts_what_was_done_and_no_label_names_anyone(
    served: tuple[Daemon, str], certs: DevCerts
) -> None:
    d, metrics_url = served
    transport = Recording(certs.ca)
    forbidden = exercise(d.url, transport)
    families = scrape(metrics_url)
    assert FAMILIES <= set(families), FAMILIES - set(families)
    check_scrape(families, transport, forbidden)
    assert "summed from" not in d.log  # one process: no multiprocess mode

    assert d.stop() == 0  # the metrics listener stops with the daemon, gracefully
    assert "Traceback" not in d.log


def check_scrape(
    families: dict[str, list[Sample]],
    transport: Recording,
    forbidden: list[str],
    *,
    native_expiry: bool = False,
) -> None:
    """The scrape after :func:`exercise`: every request counted by route template and status,
    and no other; limits, proofs, storage, key ring, GC as done (``native_expiry``: a storage
    that expires presences itself); no label naming anyone."""
    seen = transport.seen

    requests = families["registryd_http_requests"]
    counts = {
        (s.labels["method"], s.labels["route"], int(s.labels["status"])): s.value for s in requests
    }
    assert counts == dict(seen)  # every request, by route template and status, and no other
    timed = Counter[tuple[str, str]]()
    for (method, route, _), n in seen.items():
        timed[method, route] += n
    latency = families["registryd_http_request_duration_seconds"]
    timings = {
        (s.labels["method"], s.labels["route"]): s.value
        for s in latency
        if s.name.endswith("_count")
    }
    assert timings == dict(timed)
    assert seen[("GET", "(unmatched)", 404)] == 1 and seen[("POST", "/resolve", 429)] == 1

    limits = families["registryd_rate_limit_refusals"]
    assert value(limits, "registryd_rate_limit_refusals_total", bucket="resolve") == 1
    assert value(limits, "registryd_rate_limit_refusals_total", bucket="banned") == 2
    bans = families["registryd_rate_limit_bans"]
    assert value(bans, "registryd_rate_limit_bans_total", bucket="resolve") == 1

    proofs = families["registryd_pow_proofs"]
    checked = [
        transport.count(r, s) for r in ("/resolve", "/check_user/{handle}") for s in (200, 400)
    ]
    assert (
        value(proofs, "registryd_pow_proofs_total", outcome="accepted") == checked[0] + checked[2]
    )
    assert value(proofs, "registryd_pow_proofs_total", outcome="refused") == checked[1] + checked[3]
    assert checked[1] + checked[3] >= 1  # the client's first try, before it knew of the work
    issued = families["registryd_pow_challenges_issued"]
    challenges = transport.count("/pow/challenge", 200)
    assert value(issued, "registryd_pow_challenges_issued_total") == challenges > 0

    storage = families["registryd_storage_operation_duration_seconds"]
    name = "registryd_storage_operation_duration_seconds_count"
    assert value(storage, name, operation="register") == transport.count("/register", 200) == 3
    assert value(storage, name, operation="get_identity") == transport.count("/resolve", 200)
    assert value(storage, name, operation="exists") == transport.count("/check_user/{handle}", 200)
    assert value(storage, name, operation="swap_owned") == 1  # the signed announce's write
    assert value(storage, name, operation="owned") >= 1
    errors = families["registryd_storage_errors"]
    assert {s.value for s in errors if s.name.endswith("_total")} == {0.0}

    keys = families["registryd_keyring_keys"]
    assert value(keys, "registryd_keyring_keys", state="active") == 1
    assert value(keys, "registryd_keyring_keys", state="grace") == 0
    assert families["registryd_keyring_active_key_age_seconds"] == []  # an inline key: no start
    nodes = families["registryd_directory_nodes"]
    assert {s.labels["status"]: s.value for s in nodes} == {"online": 0, "unknown": 0, "offline": 0}
    gc = families["registryd_gc_duration_seconds"]
    presence = [s.value for s in gc if s.name.endswith("_count") and s.labels["task"] == "presence"]
    if native_expiry:  # Redis deletes expired presences itself: no pass ever runs
        assert presence == []
    else:
        assert presence[0] >= 1  # one pass at start-up
    assert value(gc, "registryd_gc_duration_seconds_count", task="spent_nonces") >= 1

    labels = [v for samples in families.values() for s in samples for v in s.labels.values()]
    assert {s.labels["route"] for s in requests} <= ROUTES
    assert len(labels) > 100 and KID_HEX not in forbidden  # the check below has work to do
    assert [(v, f) for v in labels for f in forbidden if f.lower() in v.lower()] == []
    assert [v for v in labels if re.search(r"[0-9a-fA-F]{16}", v)] == []  # no hex at all
    assert [s for samples in families.values() for s in samples if "pid" in s.labels] == []


def test_the_metrics_listener_serves_metrics_only(served: tuple[Daemon, str]) -> None:
    _, metrics_url = served
    base = metrics_url.removesuffix("/metrics")
    other = httpx.get(base + "/health")
    assert other.status_code == 404 and other.json()["error"]["code"] == "NOT_FOUND"
    posted = httpx.post(metrics_url, content=b"x")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert posted.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert httpx.head(metrics_url).status_code == 200
    with pytest.raises(httpx.HTTPError):  # plain HTTP only: a TLS client gets no metrics
        httpx.get(metrics_url.replace("http://", "https://"), timeout=5)


def test_a_kept_alive_scraper_does_not_hold_up_the_stop(served: tuple[Daemon, str]) -> None:
    d, metrics_url = served
    with httpx.Client() as scraper:
        assert scraper.get(metrics_url).status_code == 200  # its connection stays open
        started = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - started < 5  # the grace is 10 s: an idle scraper closes at once
    assert "Traceback" not in d.log and "registryd stopped" in d.log


def test_a_metrics_address_in_use_stops_the_daemon_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "registry.toml"
        table = f'[metrics]\naddress = "127.0.0.1:{port}"\n'
        write_config(path, config_text(tables="[rate_limit]\nenabled = false\n" + table))
        d = Daemon(path)
        assert d.wait() == 1 and not d.url
    assert f"config error: metrics.address: cannot listen on 127.0.0.1:{port}" in d.log
    assert "Traceback" not in d.log
