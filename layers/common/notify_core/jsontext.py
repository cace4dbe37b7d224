"""JSON text → Python values with limits, for anything a client sends: the request body and JSON held
in a string field (the original design's string `payload`).

Python's `json` recurses once per nesting level (10,000 levels raise RecursionError), turns any
run of digits into an int (more than 4,300 digits raise ValueError, and fewer still cost quadratic
time), and accepts `NaN`/`Infinity`, which are not JSON. Here each of those is a `JsonTextError`
with a sentence for the client, and so is text nested deeper than MAX_DEPTH.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # the deepest real request (batch → item → payload → data → value) is 5
MAX_NUMBER_CHARS = 40  # a JSON number longer than this is no value the API stores


class JsonTextError(ValueError):
    """The text is not JSON this API accepts; the message says why, without quoting the text."""


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonTextError(f"a number has more than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonTextError(f"a number has more than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise JsonTextError("a number is too large")
    return value


def _constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not a JSON value")


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, `[]` and `{}` are 1); iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((child, level) for child in children)
    return deepest


def loads(text: str) -> Any:
    """Parse `text` as JSON within the limits above; JsonTextError (a ValueError) otherwise."""
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except JsonTextError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JsonTextError(f"nested deeper than {MAX_DEPTH} levels") from None
    # Defensive: no input is known to reach the next branch (int() is bounded above), so no test can
    # tell a change in it apart; it is kept out of the mutation run.
    except ValueError as exc:  # pragma: no mutate
        raise JsonTextError(f"not valid JSON: {type(exc).__name__}") from None  # pragma: no mutate
    if depth(value) > MAX_DEPTH:
        raise JsonTextError(f"nested deeper than {MAX_DEPTH} levels")
    return value
