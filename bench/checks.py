"""A measured figure held against one of the issue's targets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """``value`` (in ``unit``) for ``name``; ``passed`` is None when there is no target.

    ``target`` is printable (``">= 0.85"``); ``details`` holds the raw measurements.
    """

    name: str
    description: str
    value: float
    unit: str
    target: str
    passed: bool | None
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "value": round(self.value, 4),
            "unit": self.unit,
            "target": self.target,
            "pass": self.passed,
            "details": self.details,
        }


def at_least(value: float, minimum: float) -> bool:
    return value >= minimum


def at_most(value: float, maximum: float) -> bool:
    return value <= maximum
