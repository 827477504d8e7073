"""Checks of plain input values, written once for every layer (service, attacks, saliency, training CLI).

Each raises ValueError naming the value and the allowed range (bad input quoted by a short prefix,
errors.short), so the HTTP server answers 400 with a sentence a user can act on. Torch-free.
"""
from __future__ import annotations

import numbers

from backend.core.errors import short


def is_integer(v) -> bool:
    """An int or a numpy integer, and not a bool (True is not the integer 1 here)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_int(name: str, v, lo: int, hi: int | None = None) -> int:
    """int(v) when v is an integer in lo..hi (both included; hi None: no upper bound); else
    ValueError naming `name` and the range."""
    if not is_integer(v) or v < lo or (hi is not None and v > hi):
        allowed = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        raise ValueError(f"{name} must be {allowed}, got {short(v)}")
    return int(v)


def parse_int_at_least(name: str, text: str, lo: int) -> int:
    """The integer written in `text` when it is >= lo (command-line flags); else ValueError."""
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an integer, got {short(text)}") from None
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v
