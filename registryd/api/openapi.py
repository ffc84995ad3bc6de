"""The OpenAPI 3.1 document of the public port, served at ``GET /openapi.json`` (issue 14).

Request and response bodies are JSON schemas that msgspec generates from the wire types
(:mod:`registryd.wire`, the node directory's bodies and views, the admin API's request), with the
patterns their fields carry for documentation (:func:`registryd.wire.documented`). Answers the
handlers write as plain dicts have their shapes here. Each operation lists every status it can
answer; error answers are the wire error body (spec 4.6) with the codes of that status, taken
from :mod:`registryd.errors`. The document is built once (:func:`document`) and served as
cached bytes.

``tests/test_openapi.py`` checks that the document lists exactly the routes the app serves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__, errors, signed_op, wire
from ..directory import payload
from ..directory.records import AdminNodeView, NodeView
from ..hashcash import HEADER as POW_HEADER
from ..identity import NonNegative
from .admin import RotateRequest

PATH = "/openapi.json"


# -- answers the handlers write as dicts or bytes ------------------------------------------------


class Ok(msgspec.Struct, forbid_unknown_fields=True):
    ok: Literal[True]


class Merged(msgspec.Struct, forbid_unknown_fields=True):
    """How many records were new (the others were known, or invalid and skipped)."""

    merged: NonNegative


class Exists(msgspec.Struct, forbid_unknown_fields=True):
    exists: bool


class EnvelopePublicKey(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A server envelope key (spec 4.4); ``not_after_epoch_ms`` (Unix ms) only when it expires."""

    kid_hex: wire.Hex16
    x25519_public_key_hex: wire.Hex64
    active: bool
    not_after_epoch_ms: NonNegative | msgspec.UnsetType = msgspec.UNSET


class Health(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["ok"]
    active_kid: wire.Hex16


class Degraded(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["degraded"]
    reason: str


class PowChallenge(msgspec.Struct, forbid_unknown_fields=True):
    """Spec 4.7: an opaque hex ``challenge``, leading zero bits wanted, expiry in Unix ms."""

    challenge: str
    difficulty: NonNegative
    expires_ms: NonNegative


class DirectoryChallenge(msgspec.Struct, forbid_unknown_fields=True):
    """Extensions spec §3.1: an opaque ``nonce`` (≤ 64 ASCII chars), RFC 3339 UTC expiry."""

    nonce: str
    expires_at: str


class DirectoryListing(msgspec.Struct, forbid_unknown_fields=True):
    nodes: list[NodeView]


class AdminDirectoryListing(msgspec.Struct, forbid_unknown_fields=True):
    nodes: list[AdminNodeView]


class Removed(msgspec.Struct, forbid_unknown_fields=True):
    removed: str


class AdminKey(msgspec.Struct, forbid_unknown_fields=True):
    """An envelope key for operators (times in Unix ms, None when unset); never the private key."""

    kid_hex: wire.Hex16
    x25519_public_key_hex: wire.Hex64
    state: str
    created_ms: int | None
    not_before_ms: int | None
    not_after_ms: int | None
    opens_until_ms: int | None


class Reloaded(msgspec.Struct, forbid_unknown_fields=True):
    """``restart_needed``: the changed config sections that only a restart applies."""

    reloaded: Literal[True]
    restart_needed: list[str]


# -- operations ---------------------------------------------------------------------------------

# Statuses every route can answer: limited (429, when [rate_limit] is on) or failed (500)
COMMON = (429, 500)
BODY = (400, 408, 413)  # a JSON body: malformed or unexpected, too slow, too large
Security = list[dict[str, list[str]]]
PEER: Security = [{"peerToken": []}, {"peerCertificate": []}]
ADMIN: Security = [{"adminToken": []}]
POW: Security = [{}, {"proofOfWork": []}]  # with [pow] enabled


@dataclass(frozen=True)
class Op:
    """One operation: ``ok`` maps success statuses to their body type; ``errors`` the others."""

    method: str
    path: str
    summary: str
    ok: dict[int, Any]
    errors: tuple[int, ...] = ()
    body: type | None = None
    tag: str = "enigma"
    security: Security | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


HANDLE_PATH = {
    "name": "handle",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    "description": "the UserId, 32 bytes in hex (spec 1)",
}
SIGNATURE = {
    "name": signed_op.SIGNATURE_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"},
    "description": "extensions spec §2.3: Ed25519 signature (64 B, hex) of the `presence` "
    "operation; without it (or with a bad one) 401, unless `[presence] accept_unsigned`",
}

OPERATIONS = (
    Op("POST", "/register", "Register a sealed identity (spec 4.5)", {200: Ok}, (409,),
       wire.RegisterRequest, description="409 when the handle is taken."),
    Op("POST", "/resolve", "Resolve a handle to its identity, sealed to the requester",
       {200: wire.ResolveResponse}, (503,), wire.ResolveRequest, security=POW,
       description="400 POW_REQUIRED without a fresh proof when `[pow]` is on; 503 without a "
       "valid envelope key."),
    Op("GET", "/check_user/{handle}", "Whether a handle is registered", {200: Exists}, (400, 404),
       security=POW, parameters=[HANDLE_PATH],
       description="404 when `[privacy] check_user_enabled = false`."),
    Op("POST", "/announce", "Announce a presence (spec 3), signed (extensions spec §2.3)",
       {200: Ok}, (401, 409, 503), wire.Presence, parameters=[SIGNATURE],
       description="409 for a stale `ts_ms`; 503 when `[presence] max_entries` are stored."),
    Op("GET", "/envelope_pubkey", "The active envelope key", {200: EnvelopePublicKey}, (503,)),
    Op("GET", "/envelope_pubkeys", "Every configured envelope key",
       {200: list[EnvelopePublicKey]}),
    Op("GET", "/health", "Liveness and the active key", {200: Health, 503: Degraded}),
    Op("GET", "/pow/challenge", "A proof-of-work challenge (spec 4.7)", {200: PowChallenge},
       (404,), description="404 when `[pow] enabled = false`."),
    Op("POST", "/sync", "Merge identities from a peer", {200: Merged}, (401,), wire.SyncRequest,
       security=PEER, description="401 unless `allow_sync` and a peer; invalid identities are "
       "skipped, not refused."),
    Op("GET", "/nodes", "The peer registries known", {200: wire.NodesPayload}),
    Op("POST", "/nodes", "Add peer registries", {200: Merged}, (401,), wire.NodesPayload,
       security=PEER, description="All valid (http(s) URLs of at most 256 bytes) or none stored."),
    Op("POST", "/api/registry/challenge", "A nonce for a node key (extensions spec §3.1)",
       {200: DirectoryChallenge}, (503,), payload.ChallengeBody, "directory"),
    Op("POST", "/api/registry/register", "Register a node (§3.2)", {200: Ok}, (401, 403, 503),
       payload.RegisterBody, "directory"),
    Op("POST", "/api/registry/heartbeat", "A node's heartbeat (§3.3)", {200: Ok}, (401,),
       payload.HeartbeatBody, "directory"),
    Op("GET", "/api/nodes", "The node directory (§3.4)", {200: DirectoryListing}, tag="directory"),
    Op("GET", "/admin/keys", "The envelope keys", {200: list[AdminKey]}, (401, 403, 404),
       tag="admin", security=ADMIN),
    Op("POST", "/admin/keys/rotate", "Rotate the envelope key", {200: list[AdminKey]},
       (401, 403, 404, 409), RotateRequest, "admin", ADMIN),
    Op("POST", "/admin/reload", "Re-read the config file and keystore", {200: Reloaded},
       (400, 401, 403, 404), tag="admin", security=ADMIN,
       description="400 when the new config is refused (the running one is kept)."),
    Op("GET", "/admin/directory", "The node directory with contacts and dates",
       {200: AdminDirectoryListing}, (401, 403, 404), tag="admin", security=ADMIN),
    Op("POST", "/admin/directory/remove", "Remove a node (§3.7)", {200: Removed},
       (401, 403, 404), payload.RemoveBody, "admin", ADMIN),
    Op("GET", PATH, "This document", {200: dict[str, Any]}, tag="meta"),
    Op("POST", "/identity/update", "Replace an identity, signed by its owner (§2.1)", {200: Ok},
       (401, 409), wire.UpdateRequest, "ownership",
       description="401 for an unknown handle or a bad signature (the same answer); 409 for a "
       "stale or replayed `ts_ms`; 400 outside the clock skew."),
    Op("POST", "/identity/delete", "Delete an identity, signed by its owner (§2.2)", {200: Ok},
       (401, 409), wire.DeleteRequest, "ownership"),
    Op("POST", "/presence/resolve", "A presence, sealed to the requester (§2.4)",
       {200: wire.ResolveResponse}, (503,), wire.ResolveRequest, "ownership", POW),
)  # fmt: skip

SECURITY_SCHEMES = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "a token matching `[admin] token_hashes`; from loopback or the peer "
        "listener only (403 otherwise); 404 while the admin API is off",
    },
    "peerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "a token matching `[peers] token_hashes`",
    },
    "peerCertificate": {
        "type": "mutualTLS",
        "description": "a client certificate from `[peers] client_ca_pem_path`, on the peer "
        "listener (`[peers] listen`)",
    },
    "proofOfWork": {
        "type": "apiKey",
        "in": "header",
        "name": POW_HEADER,
        "description": "`<challenge>:<solution>` (spec 4.7), with `[pow] enabled` only",
    },
}


def _error_codes() -> dict[int, list[str]]:
    """The wire error codes by HTTP status, from the exception tree."""
    codes: dict[int, list[str]] = {}
    todo: list[type[errors.ApiError]] = [errors.ApiError]
    while todo:
        cls = todo.pop()
        codes.setdefault(cls.status_code, [])
        if cls.code not in codes[cls.status_code]:
            codes[cls.status_code].append(cls.code)
        todo.extend(cls.__subclasses__())
    return {status: sorted(found) for status, found in codes.items()}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    schema = {
        "allOf": [
            {"$ref": "#/components/schemas/ErrorBody"},
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    response: dict[str, Any] = {
        "description": ", ".join(codes),
        "content": {"application/json": {"schema": schema}},
    }
    if status == 429:
        int_header = {"schema": {"type": "integer", "minimum": 0}}
        response["headers"] = {
            name: int_header
            for name in ("retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
        }
    return response


def _operation(op: Op, schemas: dict[type, dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {
            "description": "OK" if status < 400 else "degraded",
            "content": {"application/json": {"schema": schemas[kind]}},
        }
        for status, kind in op.ok.items()
    }
    refused = set(op.errors) | set(COMMON) | (set(BODY) if op.body else set())
    if op.security:  # a missing or wrong token is 401, a missing or wrong proof of work 400
        refused.add(400 if op.security == POW else 401)
    for status in sorted(refused - set(op.ok)):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    out: dict[str, Any] = {
        "operationId": f"{op.method.lower()}{op.path.replace('/', '_').replace('.', '_')}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = op.parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[op.body]}},
        }
    if op.security is not None:
        out["security"] = op.security
    return out


def build() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a dict (see the module docstring)."""
    kinds: list[Any] = [wire.ErrorBody]
    for op in OPERATIONS:
        kinds += [*op.ok.values(), *([op.body] if op.body else [])]
    kinds = list(dict.fromkeys(kinds))
    refs, components = msgspec.json.schema_components(
        kinds, ref_template="#/components/schemas/{name}"
    )
    schemas = dict(zip(kinds, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    codes = _error_codes()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "registryd",
            "version": __version__,
            "description": "A privacy-focused Enigma-compatible registry. The protocol in full: "
            'docs/protocol.md. Every error is `{"error": {"code", "message"}}`.',
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {f"Error{s}": _error_response(s, c) for s, c in sorted(codes.items())},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@functools.cache
def document() -> bytes:
    """:func:`build` as JSON bytes, built on first use and kept."""
    return msgspec.json.encode(build())


def openapi_route() -> Route:
    """``GET /openapi.json``: the cached document, built now (at the app's start-up)."""
    body = document()

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route(PATH, openapi, methods=["GET"])
