"""The OpenAPI document (issue 14): it validates, covers the app's route table, is what
``GET /openapi.json`` serves, and the app keeps it — schemathesis fuzzes every operation of
the in-process app (``not_a_server_error``, ``status_code_conformance``,
``response_schema_conformance``, ``negative_data_rejection``; positive and negative data).

Two apps are fuzzed: one with rate limits and proof of work off, ``allow_sync``, unsigned
presences accepted (signed ones are still checked), the admin API on, peer and admin tokens
given and the client on loopback, so cases reach every handler; and
one with the defaults (rate limits on, proof of work on, admin API off) where each client
address sends 16 requests, so that some pass the limiter and meet the proof-of-work check and
the rest are refused with 429 (burst 10, then a ban), which must be documented too.

``REGISTRYD_FUZZ_EXAMPLES`` (default 20) bounds the examples per operation and phase;
``make fuzz`` (:mod:`bench.fuzz`) runs the fuzz tests with 10,000 and reads the cases and
statuses per operation from the JSON file named by ``REGISTRYD_FUZZ_REPORT``.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from argon2 import PasswordHasher
from openapi_spec_validator import validate
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from registryd.api import openapi
from registryd.config import Config
from registryd.storage import open_storage
from tests.helpers import BASE_URL, make_app, make_config

TOKEN = "fuzz-token-0123456789"
TOKEN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
EXAMPLES = int(os.environ.get("REGISTRYD_FUZZ_EXAMPLES", "20"))
REPORT = os.environ.get("REGISTRYD_FUZZ_REPORT")
SHARD = os.environ.get("REGISTRYD_FUZZ_SHARD")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]
OPEN = f"""
[rate_limit]
enabled = false
[presence]
accept_unsigned = true
[peers]
token_hashes = ["{TOKEN_HASH}"]
[admin]
token_hashes = ["{TOKEN_HASH}"]
"""
DEFAULTS = "[pow]\nenabled = true\n"  # every other table at its default: rate limits on


def served(config: Config) -> set[tuple[str, str]]:
    """The (method, path) pairs of the app's route table (HEAD aside: Starlette adds it)."""
    app = make_app(config, open_storage(config))
    routes = [route for route in app.routes if isinstance(route, Route)]
    return {(m, r.path) for r in routes for m in r.methods or () if m != "HEAD"}


def documented() -> set[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = openapi.build()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.build()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    assert json.loads(openapi.document()) == document


def test_the_document_lists_exactly_the_served_routes() -> None:
    routes = served(make_config(tables=OPEN)) | served(make_config(tables=DEFAULTS))
    assert {("POST", "/register"), ("POST", "/identity/update"), ("GET", "/openapi.json")} <= routes
    assert documented() == routes  # /pow/challenge is served with [pow] on (DEFAULTS)


def test_every_error_code_is_documented_under_its_status() -> None:
    responses = openapi.build()["components"]["responses"]
    codes = {
        status: response["content"]["application/json"]["schema"]["allOf"][1]["properties"][
            "error"
        ]["properties"]["code"]["enum"]
        for status, response in responses.items()
    }
    assert "POW_REQUIRED" in codes["Error400"] and "INVALID_INPUT" in codes["Error400"]
    assert codes["Error429"] == ["RATE_LIMITED"]
    assert set(codes["Error503"]) == {"KEY_UNAVAILABLE", "SERVICE_UNAVAILABLE"}


async def test_the_public_port_serves_the_document() -> None:
    app = make_app(make_config(), open_storage(make_config()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == openapi.document()
    assert set(answer.json()["paths"]) >= {"/register", "/resolve", "/api/nodes", "/admin/keys"}


# -- schemathesis --------------------------------------------------------------------------------


def fuzz_schema() -> Any:
    config = SchemathesisConfig.from_dict(
        {"auth": {"openapi": {"adminToken": {"bearer": TOKEN}, "peerToken": {"bearer": TOKEN}}}}
    )
    schema: Any = schemathesis.openapi.from_dict(openapi.build(), config=config)
    schema.config.generation.update(modes=list(GenerationMode), database="none")
    schema.config.checks.update(included_check_names=CHECKS)
    # a body refused for its size or its pace is rejected too
    schema.config.checks.negative_data_rejection.expected_statuses += ["408", "413"]
    if SHARD:  # "i/n": the i-th of n shares of the operations, for parallel `make fuzz` runs
        index, count = map(int, SHARD.split("/"))
        paths = openapi.build()["paths"].values()
        ids = [operation["operationId"] for ops in paths for operation in ops.values()]
        schema = schema.include(operation_id=ids[index::count])
    return schema


SCHEMA = fuzz_schema()


def on_loopback(app: ASGIApp) -> ASGIApp:
    """``app`` seeing every request come from 127.0.0.1, so the admin routes answer it."""

    async def local(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": ("127.0.0.1", 50000)}
        await app(scope, receive, send)

    return local


def many_clients(app: ASGIApp, per_client: int = 16) -> ASGIApp:
    """``app`` seeing each run of ``per_client`` requests come from a new address."""
    sent = 0

    async def spread(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal sent
        if scope["type"] == "http":
            n, sent = sent // per_client, sent + 1
            scope = {**scope, "client": (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 50000)}
        await app(scope, receive, send)

    return spread


CASES: collections.Counter[str] = collections.Counter()
STATUSES: collections.Counter[str] = collections.Counter()


STARTED = time.monotonic()


def fuzz(case: Any, app: ASGIApp, run: str) -> None:
    """Send ``case`` to ``app`` and run the checks, counting cases and statuses per operation."""
    key = f"{run} {case.operation.label}"
    CASES[key] += 1
    response = case.call_and_validate(app=app)
    STATUSES[f"{key} {response.status_code}"] += 1
    if REPORT and CASES[key] % 1000 == 0:  # a long run reports as it goes
        write_report(REPORT)


def write_report(path: str) -> None:
    report = {"examples": EXAMPLES, "seconds": round(time.monotonic() - STARTED, 1)}
    cases, statuses = dict(sorted(CASES.items())), dict(sorted(STATUSES.items()))
    with open(path, "w", encoding="utf-8") as out:
        json.dump({**report, "cases": cases, "statuses": statuses}, out, indent=1)


@pytest.fixture(scope="module")
def fuzz_report() -> Iterator[None]:
    yield
    if REPORT:
        write_report(REPORT)


@pytest.fixture(scope="module")
def open_app(fuzz_report: None) -> ASGIApp:
    """Everything a case needs to reach a handler; lives until schemathesis stops its lifespan."""
    config = make_config(extra="allow_sync = true", tables=OPEN)
    return on_loopback(make_app(config, open_storage(config)))


@pytest.fixture(scope="module")
def default_app(fuzz_report: None) -> ASGIApp:
    config = make_config(tables=DEFAULTS)
    return many_clients(make_app(config, open_storage(config)))


SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=REPORT is None,  # CI runs the same cases every time; `make fuzz` new ones
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)


@SCHEMA.parametrize()  # type: ignore[untyped-decorator]
@SETTINGS
def test_fuzz_reaching_the_handlers(case: Any, open_app: ASGIApp) -> None:
    fuzz(case, open_app, "open")


@SCHEMA.parametrize()  # type: ignore[untyped-decorator]
@SETTINGS
def test_fuzz_with_default_limits(case: Any, default_app: ASGIApp) -> None:
    fuzz(case, default_app, "defaults")


def test_every_served_operation_was_fuzzed_in_both_runs() -> None:
    """Runs after the fuzz tests (file order): none was filtered out or generated nothing."""
    if not CASES:
        pytest.skip("the fuzz tests were not selected in this session")
    operations = {f"{method} {path}" for method, path in documented()}
    for run in ("open", "defaults"):
        fuzzed = {key.removeprefix(f"{run} ") for key in CASES if key.startswith(f"{run} ")}
        assert fuzzed == operations, run


async def test_a_whitespace_padded_addr_is_accepted_so_the_document_sets_no_max_length() -> None:
    """Found by ``make fuzz``: the 256-byte bound applies to ``addr`` trimmed (spec 3), so a
    ``maxLength`` in the document made the daemon look like it accepted schema-violating data."""
    addr = openapi.build()["components"]["schemas"]["Presence"]["properties"]["addr"]
    assert "maxLength" not in addr and addr["minLength"] == 1
    config = make_config(tables="[presence]\naccept_unsigned = true\n")
    app = make_app(config, open_storage(config))
    body = {"user_id": "ab" * 32, "addr": "x" + "\x1d" * 300, "ts_ms": 1_700_000_000_000}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        answer = await c.post("/announce", json=body)
    assert answer.status_code == 200, answer.text
