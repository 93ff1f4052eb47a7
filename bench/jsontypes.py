"""Whether a value read from JSON has a declared type (`float`, `int | None`, `list[float]`, `dict[str, int]`), and
if not, why, in words a reader can find in the file. Records, baselines, gate files and campaign state are all
checked with it, so a file with `"params": "five million"` is refused naming the key, not a traceback later."""

from __future__ import annotations

import math
import sys
import types
from typing import Any, Union, get_args, get_origin


def type_problem(value: Any, expected: Any) -> str | None:
    """Why `value`, as read from JSON, is not of the type `expected`, or None when it is.

    `expected` is a class (a float may be an int and must be finite; an int is never a bool), `X | None`,
    `list[X]` / `tuple[X, ...]` (every item checked; JSON has lists only) or `dict[str, X]` (every value checked).
    """
    origin = get_origin(expected)
    if origin in (Union, types.UnionType):
        options = get_args(expected)
        if value is None and type(None) in options:
            return None
        if any(type_problem(value, o) is None for o in options if o is not type(None)):
            return None
        return f"expected {_expected_name(expected)}, got {_found(value)}"
    if origin in (list, tuple):
        if not isinstance(value, list):
            return f"expected list, got {_found(value)}"
        item = get_args(expected)[0]
        for i, v in enumerate(value):
            problem = type_problem(v, item)
            if problem:
                return f"item {i}: {problem}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"expected dict, got {_found(value)}"
        item = get_args(expected)[1]
        for k, v in value.items():
            problem = type_problem(v, item)
            if problem:
                return f"[{k!r}]: {problem}"
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite = number and (abs(value) <= _LARGEST if isinstance(value, int) else math.isfinite(value))
    if expected is float and number and not finite:  # an int past a float's range was an OverflowError (a hostile pass)
        return f"expected a finite float, got {_found(value)}"
    if expected is int and number and isinstance(value, int) and abs(value) >= 2**63:
        return f"expected an int of at most 64 bits, got {_found(value)}"
    ok = number if expected is float else number and isinstance(value, int) if expected is int else \
        isinstance(value, expected)
    return None if ok else f"expected {_expected_name(expected)}, got {_found(value)}"


_LARGEST = int(sys.float_info.max)  # an int JSON holds beyond it has no float (1 followed by 400 zeros)


def _expected_name(expected: Any) -> str:
    return expected.__name__ if isinstance(expected, type) and not get_args(expected) else str(expected)


def _found(value: Any) -> str:
    """`str 'five million'`, `float nan`, `null`: the JSON value as a reader can find it in the file."""
    if value is None:
        return "null"
    shown = repr(value)
    return f"{type(value).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"
