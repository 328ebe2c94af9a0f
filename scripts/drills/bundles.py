"""The bundle-install SIGKILL drill: `acts bundle install` killed at a random time, restarted, compared.

The shipped bundle (``bundles/sim_v1/1.0.0``) is installed in a template home; a second release of it
(the same files under version 1.1.0, so another bundle id) is installed over it by a child running the
real CLI, killed with SIGKILL at a time drawn from a seeded generator over the length of a whole
install (so kills land while the files are copied, verified, switched and smoke-checked). Right after
the kill the store must name a complete, verified bundle (the old or the new one, never a
half-copied folder); then the operator runs the same install again, and the store must equal the
uninterrupted install's:

- **lost**: an entry of the uninterrupted install's log missing after the restart;
- **duplicated**: a log entry held twice, or one the uninterrupted log does not hold;
- **torn**: ``state.json`` unreadable, its active bundle missing, failing verification or not the one
  its id names, or not the old or the new bundle (after the kill); after the restart, an active
  bundle, rollback stack or installed folder that differs from the uninterrupted install's, a
  folder of the store that does not verify, or a staging folder left behind.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.bundles.compat import SHIPPED_DIR, running
from backend.bundles.manifest import MANIFEST, manifest_text
from backend.bundles.store import BundleStore, StoreState
from backend.bundles.verify import verify_bundle
from backend.errors import ActsError
from scripts.drills.kills import KillDrill, cli_child, context, kill_when

SHIPPED = SHIPPED_DIR / "sim_v1" / "1.0.0"
NEW_VERSION = "1.1.0"
OLD_NOTE = "kills that left the old bundle active"
NEW_NOTE = "kills that left the new bundle active"
STAGING_NOTE = "kills that left a staging folder (cleared by the restart)"


def release(source: Path, shipped: Path, version: str) -> Path:
    """Copy the bundle ``source`` to ``shipped/<name>/<version>`` as another release (same files, new version and id)."""
    raw = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    target = shipped / raw["name"] / version
    shutil.copytree(source, target)
    (target / MANIFEST).write_text(manifest_text({**raw, "version": version}), encoding="utf-8")
    return target


def install_argv(source: Path) -> list[str]:
    """The operator's command line installing ``source``."""
    return ["bundle", "install", str(source), "--author", "drill", "--reason", "drill install"]


def _entries(state: StoreState) -> list[tuple[Any, ...]]:
    # Everything a log entry says except its time (the wall clock of each run).
    return [(e.action, e.bundle, e.bundle_id, e.previous, e.author, e.reason) for e in state.log]


def _folders(store: BundleStore) -> dict[str, str]:
    """Every installed folder's files and their hashes, as one digest per folder."""
    digests = {}
    for key in store.installed():
        folder = store.folder(key)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        lines = [f"{p.relative_to(folder).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files]
        digests[key] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return digests


def after_kill(store: BundleStore, old: str, new: str) -> tuple[str | None, int]:
    """Return the active bundle the kill left and 1 when the store is torn (0 when it names a complete, verified bundle)."""
    try:
        state = store.state()
        # Every file of the active bundle verified against its hash, and the bundle id state.json names.
        active = store.active(running())
    except (ActsError, ValueError, KeyError, TypeError, OSError):  # unreadable state.json, a missing or changed file
        return None, 1
    return state.active, int(active is None or state.active not in (old, new))


def store_counts(store: BundleStore, reference: BundleStore) -> tuple[int, int, int]:
    """Return (lost, duplicated, torn) of ``store`` after the restart against the uninterrupted ``reference``."""
    want, have = reference.state(), store.state()
    wanted, held = Counter(_entries(want)), Counter(_entries(have))
    lost = sum((wanted - held).values())
    duplicated = sum((held - wanted).values())
    torn = int((have.active, have.active_id, have.previous) != (want.active, want.active_id, want.previous))
    torn += int(_folders(store) != _folders(reference))
    for key in store.installed():
        try:
            verify_bundle(store.folder(key), running())
        except ActsError:
            torn += 1
    torn += len(list(store.root.glob(".staging-*")))
    return lost, duplicated, torn


PHASES = ("copying the files", "verifying the copy", "switching", "smoke-checking")


def kill_point(rng: random.Random, store: BundleStore, key: str, files: int) -> tuple[str, Callable[[], bool], float]:
    """Draw where to kill an install into ``store``: a phase (each as likely), when it is reached, and a delay into it.

    Copying: after ``k`` staged files (``k`` drawn); verifying the copy: once every file is staged; switching: once
    the staged folder was renamed into the store; smoke-checking: once ``state.json`` names the new bundle.
    """
    phase = rng.choice(PHASES)
    staged = lambda: sum(1 for p in store.root.glob(".staging-*/**/*") if p.is_file())  # noqa: E731
    if phase == "copying the files":
        k = rng.randint(0, files - 1)
        return phase, lambda: staged() >= k, rng.uniform(0.0, 0.002)
    if phase == "verifying the copy":
        return phase, lambda: staged() >= files, rng.uniform(0.0, 0.1)
    if phase == "switching":
        return phase, lambda: store.folder(key).is_dir(), rng.uniform(0.0, 0.005)
    return phase, lambda: store.state_path.is_file() and f'"active": "{key}"' in store.state_path.read_text(encoding="utf-8"), rng.uniform(0.0, 0.3)


def bundle_drill(trials: int, seed: int, root: Path) -> KillDrill:
    """Kill `acts bundle install` of a new release over the shipped bundle in every phase; restart; compare."""
    started = time.monotonic()
    drill, rng, ctx = KillDrill("bundle install"), random.Random(seed), context()
    new = release(SHIPPED, root / "shipped", NEW_VERSION)
    files = 1 + len(verify_bundle(new, running()).manifest.files)
    template = root / "template"
    assert cli_child({"ACTS_HOME": str(template)}, install_argv(SHIPPED)) == 0
    old_key, new_key = "sim_v1/1.0.0", f"sim_v1/{NEW_VERSION}"
    clean = root / "clean"
    shutil.copytree(template, clean)
    assert cli_child({"ACTS_HOME": str(clean)}, install_argv(new)) == 0  # the uninterrupted install
    reference = BundleStore(clean / "bundles")
    for trial in range(trials):
        home = root / f"bundle-{trial}"
        shutil.copytree(template, home)
        env = {"ACTS_HOME": str(home)}
        store = BundleStore(home / "bundles")
        phase, ready, delay = kill_point(rng, store, new_key, files)
        child = ctx.Process(target=cli_child, args=(env, install_argv(new)))
        killed = kill_when(child, ready, delay, timeout=300.0)
        drill.killed += killed
        drill.note(f"killed while {phase}", killed)
        active, torn_by_kill = after_kill(store, old_key, new_key)
        drill.note(OLD_NOTE, active == old_key)
        drill.note(NEW_NOTE, active == new_key)
        drill.note(STAGING_NOTE, bool(list(store.root.glob(".staging-*"))))
        code = cli_child(env, install_argv(new))  # the operator runs the same install again
        lost, duplicated, torn = store_counts(store, reference)
        drill.add(lost, duplicated, torn + torn_by_kill + (code != 0))
        shutil.rmtree(home)
    drill.seconds = time.monotonic() - started
    return drill
