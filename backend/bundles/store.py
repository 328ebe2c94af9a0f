"""Installed bundles in a user's home: atomic install, automatic and explicit rollback, an audit log.

``$ACTS_HOME/bundles/`` holds::

    store/<name>/<version>/   installed bundles, each complete: copied into a staging folder,
                              verified there, then renamed into place
    state.json                the active bundle, the stack of previously active ones, and the log
                              of every install and rollback (author, reason, time)
    .lock                     held while an install or rollback runs

The switch is one ``os.replace`` of ``state.json``: the new state (active bundle, stack and log
together) becomes visible at once or not at all, and it only ever names a store folder that is
already complete. A process killed at any point leaves the old or the new bundle active.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.bundles.compat import Runtime
from backend.bundles.manifest import MANIFEST
from backend.bundles.smoke import SmokeResult, smoke_check
from backend.bundles.verify import Verified, read_manifest, verify_bundle
from backend.config.text import attribution
from backend.errors import BundleError
from backend.home import Home



class Action(str, enum.Enum):
    """What a log entry records."""

    INSTALL = "install"
    ROLLBACK = "rollback"
    AUTO_ROLLBACK = "auto_rollback"


@dataclass(frozen=True)
class LogEntry:
    """One install or rollback: what became active, what was active before, who, why, when."""

    action: str
    bundle: str | None
    bundle_id: str | None
    previous: str | None
    author: str
    reason: str
    at_ms: int


@dataclass(frozen=True)
class StoreState:
    """``state.json``: the active bundle (``<name>/<version>``), the rollback stack, the log."""

    active: str | None = None
    active_id: str | None = None
    previous: tuple[tuple[str, str], ...] = ()
    log: tuple[LogEntry, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "active_id": self.active_id,
            "previous": [list(p) for p in self.previous],
            "log": [asdict(e) for e in self.log],
        }


@dataclass(frozen=True)
class InstallResult:
    """What an install did: the bundle, the one it replaced, and the smoke check's verdict."""

    bundle: str
    bundle_id: str
    previous: str | None
    smoke: SmokeResult
    changed: bool


Smoke = Callable[[Verified], SmokeResult]


class BundleStore:
    """The installed bundles of one home."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of_home(cls, home: Home) -> BundleStore:
        """Return the store of a user's home: ``$ACTS_HOME/bundles``."""
        return cls(home.root / "bundles")

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def folder(self, key: str) -> Path:
        """Return the store folder of ``<name>/<version>``."""
        return self.root / "store" / key

    def state(self) -> StoreState:
        """Return the current state (empty when nothing was ever installed)."""
        if not self.state_path.is_file():
            return StoreState()
        raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        return StoreState(
            raw["active"], raw["active_id"], tuple((k, i) for k, i in raw["previous"]), tuple(LogEntry(**e) for e in raw["log"])
        )

    def installed(self) -> list[str]:
        """Return every installed ``<name>/<version>``, sorted."""
        base = self.root / "store"
        if not base.is_dir():
            return []
        return sorted(
            f"{n.name}/{v.name}"
            for n in base.iterdir()
            if n.is_dir()
            for v in n.iterdir()
            if (v / MANIFEST).is_file() and not v.name.startswith(".")
        )

    def active(self, runtime: Runtime) -> Verified | None:
        """Return the active bundle, verified again (hashes and compatibility), or None when none is installed."""
        state = self.state()
        if state.active is None:
            return None
        verified = verify_bundle(self.folder(state.active), runtime)
        if verified.bundle_id != state.active_id:
            raise BundleError(f"installed bundle {state.active} has id {verified.bundle_id}, state.json says {state.active_id}")
        return verified

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_state(self, state: StoreState) -> None:
        tmp = self.root / f".state.json.tmp-{os.getpid()}"
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(state.as_dict(), indent=1, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_path)  # the switch: old state or new, never a mix
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _stage(self, source: Verified, runtime: Runtime) -> Verified:
        """Copy ``source`` into the store (staging folder, verify, one rename); return the installed bundle."""
        key = source.manifest.key
        target = self.folder(key)
        if (target / MANIFEST).is_file():
            _, present = read_manifest(target)
            if present != source.bundle_id:
                raise BundleError(
                    f"a different bundle {key} is installed (id {present}); this one is {source.bundle_id}: give it a new version"
                )
            return verify_bundle(target, runtime)
        for stale in self.root.glob(".staging-*"):
            shutil.rmtree(stale)
        staging = self.root / f".staging-{os.getpid()}"
        staging.mkdir(parents=True)
        for name in (MANIFEST, *source.manifest.files):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.path / name, staging / name)
        staged = verify_bundle(staging, runtime)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        return dataclasses.replace(staged, path=target)

    def install(
        self, source: Path, author: str, reason: str, now_ms: int, runtime: Runtime, smoke: Smoke = smoke_check
    ) -> InstallResult:
        """Verify ``source``, copy it into the store, make it active, then smoke-check it.

        A failing smoke check switches back to the bundle that was active before (logged as an
        ``auto_rollback``) and raises.

        Raises
        ------
        BundleRefused
            When ``source`` fails verification (nothing is written).
        BundleError
            When the author or reason is not plain text, another bundle has the same name and
            version, or the smoke check failed (after the rollback).
        """
        who, why = attribution(author, reason, BundleError)
        verified = verify_bundle(source, runtime)
        with self._locked():
            state = self.state()
            installed = self._stage(verified, runtime)
            key = installed.manifest.key
            if state.active == key:
                return InstallResult(key, installed.bundle_id, state.previous[-1][0] if state.previous else None, smoke(installed), False)
            stack = (*state.previous, (state.active, state.active_id)) if state.active else state.previous
            entry = LogEntry(Action.INSTALL.value, key, installed.bundle_id, state.active, who, why, now_ms)
            self._write_state(StoreState(key, installed.bundle_id, stack, (*state.log, entry)))
            result = smoke(installed)
            if not result.passed:
                note = f"smoke check of {key} failed: {result.mismatch}"
                self._write_state(
                    StoreState(
                        state.active,
                        state.active_id,
                        state.previous,
                        (*state.log, entry, LogEntry(Action.AUTO_ROLLBACK.value, state.active, state.active_id, key, who, note, now_ms)),
                    )
                )
                back = state.active or "no bundle"
                raise BundleError(f"{note}; rolled back to {back}")
            return InstallResult(key, installed.bundle_id, state.active, result, True)

    def rollback(self, author: str, reason: str, now_ms: int, runtime: Runtime) -> LogEntry:
        """Make the previously active bundle active again; return the log entry.

        Raises
        ------
        BundleError
            When nothing was active before, or the text is not plain.
        BundleRefused
            When the previous bundle no longer verifies (nothing changes).
        """
        who, why = attribution(author, reason, BundleError)
        with self._locked():
            state = self.state()
            if not state.previous:
                raise BundleError(f"nothing to roll back to: no bundle was active before {state.active or 'now'}")
            key, ident = state.previous[-1]
            verified = verify_bundle(self.folder(key), runtime)
            if verified.bundle_id != ident:
                raise BundleError(f"bundle {key} in the store has id {verified.bundle_id}, the rollback stack says {ident}")
            entry = LogEntry(Action.ROLLBACK.value, key, ident, state.active, who, why, now_ms)
            self._write_state(StoreState(key, ident, state.previous[:-1], (*state.log, entry)))
            return entry
