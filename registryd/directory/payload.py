"""Request bodies of the node directory and the checks on their fields (extensions spec §3).

Bodies are decoded strictly (unknown or duplicate keys, wrong types: 400). Keys and signatures
are standard base64 (padded or not): a key is 32 bytes and a valid Ed25519 point of the main
subgroup, a signature 64 bytes. The §3.2 payload: ``name``, ``host``, ``api_base_url`` and
``protocol_version`` are non-empty strings of at most 256 UTF-8 bytes; ``features`` an object
of at most 4 KiB as canonical JSON (default ``{}``); ``contact_email`` an optional string of at
most 256 bytes. ``host`` is an IP address or an ASCII DNS name, compared case-insensitively
without a trailing dot; ``api_base_url`` an ``http://`` or ``https://`` URL with a host and no
credentials, query or fragment.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import msgspec
import nacl.bindings
import nacl.exceptions
from nacl.signing import VerifyKey

from ..canonical import canonical_json
from ..encoding import decode_b64
from ..errors import InvalidInput
from ..wire import documented

MAX_FIELD_BYTES = 256
MAX_FEATURES_BYTES = 4 * 1024
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

# JSON-schema facts for the OpenAPI document; the checks below enforce them (400 or 401)
PublicKeyB64 = Annotated[str, documented(pattern="^[A-Za-z0-9+/]{43}=?$")]  # 32 bytes
SignatureB64 = Annotated[str, documented(pattern="^[A-Za-z0-9+/]{86}(==)?$")]  # 64 bytes


class ChallengeBody(msgspec.Struct, forbid_unknown_fields=True):
    pubkey_b64: PublicKeyB64


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    payload: dict[str, Any]
    nonce: str
    signature_b64: SignatureB64
    pubkey_b64: PublicKeyB64


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True):
    host: str
    nonce: str
    signature_b64: SignatureB64
    pubkey_b64: PublicKeyB64


class RemoveBody(msgspec.Struct, forbid_unknown_fields=True):
    host: str


@dataclass(frozen=True, slots=True)
class NodePayload:
    """A checked §3.2 payload: ``host`` normalised, ``features`` as canonical JSON bytes."""

    name: str
    host: str
    api_base_url: str
    protocol_version: str
    features: bytes
    contact_email: str


def decode_pubkey(value: str) -> bytes:
    """A 32-byte Ed25519 public key from base64; :class:`InvalidInput` ``pubkey_b64``."""
    key = decode_b64(value, "pubkey_b64")
    if len(key) != 32:
        raise InvalidInput("pubkey_b64: expected 32 bytes")
    try:  # refuses encodings that are not points, and small-order (weak) keys
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(key)
    except nacl.exceptions.RuntimeError:
        raise InvalidInput("pubkey_b64: not a valid Ed25519 public key") from None
    return key


def decode_signature(value: str) -> bytes:
    """A 64-byte signature from base64; :class:`InvalidInput` ``signature_b64``."""
    signature = decode_b64(value, "signature_b64")
    if len(signature) != 64:
        raise InvalidInput("signature_b64: expected 64 bytes")
    return signature


def verifies(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """Whether the Ed25519 ``signature`` (64 B) of ``message`` verifies under ``pubkey``."""
    try:
        VerifyKey(pubkey).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.RuntimeError, ValueError):
        return False
    return True


def _text(payload: dict[str, Any], field: str, *, required: bool = True) -> str:
    value = payload.get(field)
    if value is None and not required and field not in payload:
        return ""
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_FIELD_BYTES:
        raise InvalidInput(f"payload.{field}: expected a string of at most 256 bytes")
    if required and not value:
        raise InvalidInput(f"payload.{field}: must not be empty")
    return value


def normalize_host(host: str) -> str:
    """``host`` as compared and stored: an IP address in its compressed form, or an ASCII DNS
    name in lower case without a trailing dot; :class:`InvalidInput` otherwise."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host[:-1] if host.endswith(".") else host
        if len(name) > 253 or not _NAME.fullmatch(name):
            raise InvalidInput("host: expected a DNS name or an IP address") from None
        return name.lower()
    if "%" in host:
        raise InvalidInput("host: scoped IPv6 addresses are not accepted")
    return ip.compressed


def check_base_url(url: str) -> None:
    """Refuse an ``api_base_url`` that is not a plain ``http://`` or ``https://`` URL."""
    problem = "payload.api_base_url: expected an http:// or https:// URL"
    if not url.startswith(("http://", "https://")) or not url.isprintable() or " " in url:
        raise InvalidInput(problem)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise InvalidInput(problem) from None
    if not parsed.host or parsed.userinfo or "?" in url or "#" in url:
        raise InvalidInput(f"{problem} with a host and no credentials, query or fragment")


def parse_payload(payload: dict[str, Any]) -> NodePayload:
    """Check a §3.2 payload (after its signature); raises :class:`InvalidInput` naming the field."""
    name = _text(payload, "name")
    host = _text(payload, "host")
    api_base_url = _text(payload, "api_base_url")
    protocol_version = _text(payload, "protocol_version")
    contact_email = _text(payload, "contact_email", required=False)
    features = payload.get("features", {})
    if not isinstance(features, dict):
        raise InvalidInput("payload.features: expected an object")
    canonical = canonical_json(features)
    if len(canonical) > MAX_FEATURES_BYTES:
        raise InvalidInput("payload.features: more than 4096 bytes as canonical JSON")
    check_base_url(api_base_url)
    return NodePayload(
        name=name,
        host=normalize_host(host),
        api_base_url=api_base_url,
        protocol_version=protocol_version,
        features=canonical,
        contact_email=contact_email,
    )
