"""Canonical JSON and hashing: the same content always gives the same bytes and the same id."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def canonical_json(value: Any) -> str:
    """Serialise ``value`` (a pydantic model or JSON-ready data) to canonical JSON.

    Keys are sorted, separators are compact, non-ASCII is kept and NaN is refused, so two
    equal values always give the same text.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str | bytes) -> str:
    """Return the SHA-256 hex digest of ``text`` (UTF-8 for str)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """Return the SHA-256 of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))
