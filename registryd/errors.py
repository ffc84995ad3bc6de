"""The one exception tree of registryd.

    RegistrydError
    ├── UsageError             a command-line argument or setting is missing or wrong (exit 2)
    ├── MissingDependency      an optional dependency is not installed; names the extra (exit 1)
    ├── ConfigError            bad configuration, naming the key path; stops the daemon
    │   └── KeystoreError      the keystore cannot be read or written (mode, passphrase, tamper)
    ├── StorageError           the database cannot be opened or used
    │   ├── StorageLockedError another process owns the LevelDB directory
    │   ├── SchemaVersionError the database was written by an unknown schema version
    │   └── TransferError      an export file is not one, truncated, altered or for another
    │                          index key, or an import target is not empty
    ├── ApiError               becomes the wire error body {"error": {"code", "message"}} (spec 4.6)
    │   ├── InvalidInput       400 INVALID_INPUT (also a ValueError: bad usernames, hex, keys ...)
    │   ├── Unauthorized       401 UNAUTHORIZED
    │   ├── Forbidden          403 FORBIDDEN (admin API neither from loopback nor the peer listener)
    │   ├── NotFound           404 NOT_FOUND
    │   ├── MethodNotAllowed   405 METHOD_NOT_ALLOWED
    │   ├── Conflict           409 CONFLICT
    │   ├── RequestTimeout     408 REQUEST_TIMEOUT (body not received within its deadline)
    │   ├── PayloadTooLarge    413 PAYLOAD_TOO_LARGE
    │   ├── RateLimited        429 RATE_LIMITED
    │   ├── PowRequired        400 POW_REQUIRED (missing, wrong, expired or spent proof of work)
    │   ├── KeyUnavailable     503 KEY_UNAVAILABLE (no valid active envelope key)
    │   └── ServiceUnavailable 503 SERVICE_UNAVAILABLE (a bounded store is full; retry later)
    └── ClientError            raised by registryd.client
        ├── TransportError     connection, TLS or timeout failure
        ├── ServerError        the server answered with an error body (status, code, message)
        └── ProtocolError      the answer broke the protocol (too large, bad JSON, wrong user)

Third-party errors (plyvel, nacl, json, httpx) are translated at one boundary each with
``raise ... from exc``; messages never carry secrets.
"""

from __future__ import annotations


class RegistrydError(Exception):
    """Base class of every error raised on purpose by registryd."""


class UsageError(RegistrydError):
    """A command's arguments or settings are missing, contradictory or malformed, found after
    argparse (which has its own usage errors); ``registryd`` exits with code 2."""


class MissingDependency(RegistrydError):
    """A command needs an optional dependency that is not installed (``trustme`` for ``certs
    dev``); the message says which extra brings it."""


class ConfigError(RegistrydError):
    """A config value is wrong; ``path`` is its dotted key path (``envelope.keys[0].kid_hex``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class KeystoreError(ConfigError):
    """The envelope keystore is unreadable, too readable (mode), tampered, or the passphrase is
    wrong. ``path`` is the keystore file."""


class StorageError(RegistrydError):
    """The storage backend failed or cannot be opened."""


class StorageLockedError(StorageError):
    """Another process already owns the LevelDB directory."""


class SchemaVersionError(StorageError):
    """The database has a schema version this build does not know."""


class TransferError(StorageError):
    """An export file cannot be imported (not one, another version, truncated, altered, made
    with another index key) or its target store is not empty (:mod:`registryd.storage.transfer`).
    """


class ApiError(RegistrydError):
    """An error with an HTTP status and a wire error code (spec 4.6)."""

    status_code = 500
    code = "INTERNAL"
    prefix = "internal error"
    close_connection = False  # answered before the body was read: the connection cannot be reused

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(f"{self.prefix}: {detail}" if detail else self.prefix)

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(ApiError, ValueError):
    status_code = 400
    code = "INVALID_INPUT"
    prefix = "invalid input"


class Unauthorized(ApiError):
    status_code = 401
    code = "UNAUTHORIZED"
    prefix = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "FORBIDDEN"
    prefix = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "NOT_FOUND"
    prefix = "not found"


class MethodNotAllowed(ApiError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"
    prefix = "method not allowed"


class Conflict(ApiError):
    status_code = 409
    code = "CONFLICT"
    prefix = "conflict"


class RequestTimeout(ApiError):
    status_code = 408
    code = "REQUEST_TIMEOUT"
    prefix = "request timeout"
    close_connection = True


class RateLimited(ApiError):
    status_code = 429
    code = "RATE_LIMITED"
    prefix = "rate limited"


class PowRequired(ApiError):
    status_code = 400
    code = "POW_REQUIRED"
    prefix = "pow required"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    prefix = "payload too large"
    close_connection = True


class KeyUnavailable(ApiError):
    status_code = 503
    code = "KEY_UNAVAILABLE"
    prefix = "no valid envelope key"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    prefix = "service unavailable"


class ClientError(RegistrydError):
    """Base class of errors raised by :mod:`registryd.client`."""


class TransportError(ClientError):
    """The request did not complete: connection refused, TLS failure, timeout."""


class ServerError(ClientError):
    """The server answered with an error body: HTTP ``status``, wire ``code`` and ``message``;
    ``retry_after`` is the answer's raw ``Retry-After`` header, if any."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{status} {code}: {message}")


class ProtocolError(ClientError):
    """The answer broke the protocol: oversized, malformed, or an identity for another handle."""
