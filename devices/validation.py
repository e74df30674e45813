"""Small checks shared by the frozen config dataclasses of every package.

Each raises ``ValueError`` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math


def fail(owner: str, field: str, value, allowed: str) -> None:
    raise ValueError(f"{owner}.{field} = {value!r} is not allowed: {allowed}")


def finite(owner: str, field: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        fail(owner, field, value, "must be a finite number")


def non_negative(owner: str, field: str, value: float) -> None:
    finite(owner, field, value)
    if value < 0:
        fail(owner, field, value, "must be >= 0")


def positive(owner: str, field: str, value: float) -> None:
    finite(owner, field, value)
    if value <= 0:
        fail(owner, field, value, "must be > 0")


def probability(owner: str, field: str, value: float) -> None:
    finite(owner, field, value)
    if not 0.0 <= value <= 1.0:
        fail(owner, field, value, "must be a probability in [0, 1]")


def int_at_least(owner: str, field: str, value, low: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        none = " or None" if optional else ""
        fail(owner, field, value, f"must be an integer >= {low}{none}")


def one_of(owner: str, field: str, value, allowed) -> None:
    if value not in allowed:
        fail(owner, field, value, f"must be one of {sorted(allowed)}")
