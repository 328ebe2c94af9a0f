"""Turn pydantic validation errors into messages that name the key, the bound and the value."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_BOUND_WORDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _key(loc: tuple[Any, ...]) -> str:
    # Discriminated unions insert the tag ('simulated', ...) into the location; it is not a key.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in {"simulated", "shared", "lake"})]
    return ".".join(parts) if parts else "<root>"


def _lower_first(message: str) -> str:
    # Only the first letter: the rest may quote a pattern or a literal whose case matters.
    return message[:1].lower() + message[1:]


def describe_error(error: dict[str, Any], prefix: str = "") -> str:
    """Return one readable sentence for one pydantic error record."""
    key = prefix + _key(tuple(error.get("loc", ())))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "finite_number":
        return f"'{key}' must be a finite number, was {value!r}"
    for bound, word in _BOUND_WORDS.items():
        if bound in ctx:
            return f"'{key}' must be {word} {ctx[bound]}, was {value!r}"
    if kind == "extra_forbidden":
        return f"'{key}' is not a known key (unknown keys are refused), was {value!r}"
    if kind == "missing":
        return f"'{key}' is required and missing"
    if kind in {"too_short", "too_long"}:
        return f"'{key}' {_lower_first(error['msg'])}, was {value!r}"
    if kind == "value_error":
        return f"'{key}': {error['msg'].removeprefix('Value error, ')}"
    return f"'{key}' {_lower_first(error['msg'])}, was {value!r}"


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """Return every problem in ``error``, one line each, sorted for stable output."""
    return "\n".join(sorted(describe_error(e, prefix) for e in error.errors(include_url=False)))
