"""Readable diffs between two resolved configs: changed keys with old and new values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.config.canonical import canonical_json

_MISSING = "<absent>"


@dataclass(frozen=True)
class ConfigChange:
    """One changed key: its dotted path and the old and new values (``<absent>`` when missing)."""

    key: str
    old: Any
    new: Any


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys. Lists are indexed (``assets.3.symbol``)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}{key}."))
    elif isinstance(value, (list, tuple)) and value:
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{index}."))
    else:
        out[prefix.rstrip(".")] = value
    return out


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[ConfigChange]:
    """Return the changed keys between two config trees, sorted by key."""
    a, b = flatten(old), flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if canonical_json(va) != canonical_json(vb):
            changes.append(ConfigChange(key, va, vb))
    return changes


def format_changes(changes: list[ConfigChange]) -> str:
    """Render changes as ``key: old -> new`` lines, or a single line saying there are none."""
    if not changes:
        return "no differences"
    return "\n".join(f"{c.key}: {canonical_json(c.old)} -> {canonical_json(c.new)}" for c in changes)
