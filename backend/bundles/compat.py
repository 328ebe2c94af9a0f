"""What the running code can use: app and backend versions, the bundle format, and its feature sets.

A bundle's manifest names the oldest app and backend it works with and the content hash of the
feature set it was trained on; :func:`running` reads the same facts from this checkout so that
verification compares like with like.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from pydantic import ValidationError

from backend.config.canonical import content_hash
from backend.config.schema import FeatureSetSpec
from backend.errors import BundleError

# The bundle layout this code reads (bundle.json, model/, smoke/); a bundle of a later format is refused.
FORMAT = 1
# The inference contract of the backend: bumped when feature building or prediction changes the
# outputs an existing bundle would give, so that such a bundle names the backend it needs.
BACKEND_VERSION = "1.0"
REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
# The governed bundles shipped in this repository, and their lineage records.
SHIPPED_DIR = REPO / "bundles"
LINEAGE_DIR = REPO / "registry" / "bundles"
_VERSION = re.compile(r"^\d{1,6}(\.\d{1,6}){0,3}$")


@dataclass(frozen=True)
class Runtime:
    """The running code's side of a compatibility check."""

    app_version: str
    backend_version: str
    format: int
    feature_sets: Mapping[str, str]


def parse_version(field: str, text: str) -> tuple[int, ...]:
    """Return a dotted version (``1``, ``0.1.0``, ``2026.1206.2330``) as a tuple of integers.

    Raises
    ------
    BundleError
        Naming ``field`` when ``text`` is not one to four dot-separated integers.
    """
    if not isinstance(text, str) or not _VERSION.match(text):
        raise BundleError(f"'{field}' must be 1 to 4 dot-separated integers such as 1.0.0, was {text!r}")
    return tuple(int(part) for part in text.split("."))


def at_least(have: str, need: str) -> bool:
    """Return whether version ``have`` is ``need`` or later (missing parts count as 0)."""
    a, b = parse_version("have", have), parse_version("need", need)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def feature_set_hashes(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """Return ``{feature set name: content hash}`` for every feature set in ``conf/features``.

    Raises
    ------
    BundleError
        When a feature set file does not validate (it is named).
    """
    found: dict[str, str] = {}
    for path in sorted((conf_dir / "features").glob("*.yaml")):
        try:
            spec = FeatureSetSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except ValidationError as error:
            raise BundleError(f"feature set {path} does not validate: {error}") from error
        found[spec.name] = content_hash(spec)
    return found


def running(conf_dir: Path = CONF_DIR) -> Runtime:
    """Return this checkout's compatibility facts: installed ``acts`` version, backend version, format, feature sets."""
    return Runtime(metadata.version("acts"), BACKEND_VERSION, FORMAT, feature_set_hashes(conf_dir))
