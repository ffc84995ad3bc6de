"""Secret bytes that never show themselves in a repr, str, log line or error message."""

from __future__ import annotations

import hmac


class Secret:
    """Secret bytes (pepper, private keys, index key); ``repr`` is ``Secret('**********')``."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The raw bytes; call only where the secret is used, never to print it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets cannot be pickled")
