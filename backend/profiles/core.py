"""Pure rules of profile commits: applying changes, validating, hashing the chain, naming versions.

Nothing here touches the database or the clock; ``store.py`` is the shell around it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from backend.config.canonical import canonical_json, sha256_hex
from backend.config.errors_format import format_validation_error
from backend.config.schema import RiskProfileSpec
from backend.profiles.errors import ProfileIntegrityError, ProfileValueError
from backend.config.text import AUTHOR_MAX_CHARS, REASON_MAX_CHARS, attribution

GENESIS = ""
MAX_AUTHOR = AUTHOR_MAX_CHARS
MAX_REASON = REASON_MAX_CHARS


@dataclass(frozen=True)
class ProfileCommit:
    """One version of a profile: who changed what, when and why, and the hashes that chain it."""

    name: str
    version: int
    parent_version: int | None
    author: str
    ts_ms: int
    reason: str
    content: str
    content_hash: str
    chain_hash: str

    @property
    def version_string(self) -> str:
        """The id every decision records: ``<name>@v<version>#<first 12 hex of the content hash>``."""
        return version_string(self.name, self.version, self.content_hash)

    def tree(self) -> dict[str, Any]:
        """Return the stored content as a plain tree."""
        return json.loads(self.content)

    def spec(self) -> RiskProfileSpec:
        """Check the content against its hash and validate it with the current schema.

        Raises
        ------
        ProfileIntegrityError
            When the content does not match its hash, or no longer validates.
        """
        if sha256_hex(self.content) != self.content_hash:
            raise ProfileIntegrityError(f"profile {self.name!r} v{self.version}: content does not match its hash")
        try:
            return RiskProfileSpec.model_validate_json(self.content)
        except ValidationError as error:
            raise ProfileIntegrityError(
                f"profile {self.name!r} v{self.version} no longer validates:\n" + format_validation_error(error)
            ) from error


@dataclass(frozen=True)
class Activation:
    """One activation: from this record on, ``name`` v``version`` is the profile the engine uses."""

    seq: int
    name: str
    version: int
    commit_chain_hash: str
    author: str
    ts_ms: int
    reason: str
    chain_hash: str


def version_string(name: str, version: int, content_hash: str) -> str:
    """Return ``<name>@v<version>#<first 12 hex of content_hash>``."""
    return f"{name}@v{version}#{content_hash[:12]}"


def commit_chain_hash(
    parent_chain_hash: str,
    name: str,
    version: int,
    parent_version: int | None,
    content_hash: str,
    author: str,
    ts_ms: int,
    reason: str,
) -> str:
    """Return the SHA-256 of the canonical JSON list of a commit's parent chain hash and its fields."""
    fields = [parent_chain_hash, name, version, parent_version, content_hash, author, ts_ms, reason]
    return sha256_hex(canonical_json(fields))


def activation_chain_hash(
    previous_chain_hash: str, name: str, version: int, commit_chain: str, author: str, ts_ms: int, reason: str
) -> str:
    """Return the SHA-256 of the canonical JSON list of the previous activation's chain hash and this one's fields."""
    return sha256_hex(canonical_json([previous_chain_hash, name, version, commit_chain, author, ts_ms, reason]))


def check_attribution(author: str, reason: str) -> tuple[str, str]:
    """Return the trimmed author and reason, or refuse them by the one free-text rule (``backend.config.text``).

    Every change must be attributable and explained: both are required, 1 to 64 and 1 to 500
    characters, with no control character (so a reason cannot forge lines of ``acts profile log``).
    """
    return attribution(author, reason, ProfileValueError)


def apply_changes(tree: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each dotted key of ``changes`` set; the input is untouched.

    Raises
    ------
    ProfileValueError
        For no changes, a change of ``name`` (the profile's identity), or a key whose prefix holds no keys.
    """
    if not changes:
        raise ProfileValueError("no changes given (expected KEY=VALUE)")
    new = copy.deepcopy(dict(tree))
    for key in sorted(changes):
        value = changes[key]
        parts = key.split(".")
        if parts[0] == "name":
            raise ProfileValueError(f"'name' is the profile's identity and cannot be set, was {value!r}")
        node = new
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ProfileValueError(f"'{key}' is not a known key (unknown keys are refused), was {value!r}")
            node = node[part]
        node[parts[-1]] = value
    return new


def validate_profile(tree: Mapping[str, Any], context: str) -> RiskProfileSpec:
    """Validate ``tree`` through RiskProfileSpec, the one place where bounds live.

    Raises
    ------
    ProfileValueError
        Naming each field, its bound and the value, prefixed by ``context``.
    """
    try:
        return RiskProfileSpec.model_validate(dict(tree))
    except ValidationError as error:
        raise ProfileValueError(f"{context}:\n" + format_validation_error(error)) from error


def format_time_ms(ts_ms: int) -> str:
    """Return ``ts_ms`` as ISO 8601 UTC with milliseconds, e.g. ``2026-11-27T14:00:00.000Z``."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
