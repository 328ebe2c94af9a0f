"""The bundle a run uses with ``model.source=bundle``: the home's active one, or on first use the shipped one.

On an empty home nothing is installed yet; the first run installs the newest compatible bundle
shipped in the repository's ``bundles/`` (verified, staged, smoke-checked, logged with author
``acts``), so no install starts untrained (governance 7C).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend.bundles.compat import Runtime, parse_version, running
from backend.bundles.manifest import MANIFEST
from backend.bundles.store import BundleStore
from backend.bundles.verify import Verified, verify_bundle
from backend.config.canonical import content_hash
from backend.engine.pipeline import Pipeline
from backend.errors import BundleError, BundleRefused, ModelError
from backend.home import Home
from backend.models.bundle import ModelBundle

Progress = Callable[[str], None]
InstalledBundle = Callable[[Pipeline, Progress], ModelBundle]
FIRST_RUN_AUTHOR = "acts"
FIRST_RUN_REASON = "first run: the shipped bundle"


@dataclass(frozen=True)
class Candidate:
    """A bundle folder found on a channel, verified or refused."""

    path: Path
    verified: Verified | None
    refusal: str


def scan(root: Path, runtime: Runtime) -> list[Candidate]:
    """Verify every ``root/<name>/<version>/`` bundle; return them, sorted by name then version."""
    found = []
    for manifest in sorted(root.glob(f"*/*/{MANIFEST}")):
        try:
            found.append(Candidate(manifest.parent, verify_bundle(manifest.parent, runtime), ""))
        except BundleRefused as refusal:
            found.append(Candidate(manifest.parent, None, str(refusal)))
    return sorted(found, key=_order)


def _order(candidate: Candidate) -> tuple[str, tuple[int, ...]]:
    try:
        version = parse_version("version", candidate.path.name)
    except BundleError:
        version = ()
    return candidate.path.parent.name, version


def newest(candidates: list[Candidate], name: str) -> Verified | None:
    """Return the newest verified bundle called ``name`` among ``candidates``, or None."""
    usable = [c.verified for c in candidates if c.verified is not None and c.verified.manifest.name == name]
    return max(usable, key=lambda v: parse_version("version", v.manifest.version), default=None)


def ensure_installed(home: Home, shipped: Path, name: str, runtime: Runtime, now_ms: int, progress: Progress) -> Verified:
    """Return the home's active bundle, installing the newest compatible shipped ``name`` when none is active.

    Raises
    ------
    BundleError
        When nothing is installed and no compatible bundle is shipped (the refusals are listed).
    """
    store = BundleStore.of_home(home)
    active = store.active(runtime)
    if active is not None:
        return active
    candidates = scan(shipped, runtime)
    chosen = newest(candidates, name)
    if chosen is None:
        reasons = "; ".join(c.refusal for c in candidates if c.refusal) or "none found"
        raise BundleError(f"no bundle is installed and no compatible bundle {name} is shipped in {shipped}: {reasons}")
    result = store.install(chosen.path, FIRST_RUN_AUTHOR, FIRST_RUN_REASON, now_ms, runtime)
    progress(f"installed the shipped bundle {result.bundle} from {chosen.path}")
    return store.active(runtime)  # type: ignore[return-value]


def bundle_for(pipeline: Pipeline, verified: Verified) -> ModelBundle:
    """Return ``verified``'s model bundle when ``pipeline`` computes the features it was trained on.

    Raises
    ------
    ModelError
        Naming both feature set hashes when the run's feature set differs from the bundle's.
    """
    wanted = verified.manifest.compat.feature_set
    have = content_hash(pipeline.spec.features)
    if (pipeline.spec.features.name, have) != (wanted.name, wanted.hash):
        raise ModelError(
            f"bundle {verified.manifest.key} was trained on feature set {wanted.name} ({wanted.hash}); "
            f"this run computes {pipeline.spec.features.name} ({have})"
        )
    return verified.model


def installed_source(home: Home, now_ms: Callable[[], int], shipped: Path, name: str) -> InstalledBundle:
    """Return what a run with ``model.source=bundle`` calls for its bundle: the home's active one.

    On first use the newest compatible shipped ``name`` is installed (:func:`ensure_installed`).
    """

    def resolve(pipeline: Pipeline, progress: Progress) -> ModelBundle:
        verified = ensure_installed(home, shipped, name, running(), now_ms(), progress)
        model = bundle_for(pipeline, verified)
        progress(f"using the installed bundle {verified.manifest.key} (model {model.version}, id {verified.bundle_id[:12]})")
        return model

    return resolve
