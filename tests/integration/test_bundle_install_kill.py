"""A SIGKILL at a random point of an install leaves the old or the new bundle active, complete, never a mix."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import random
import shutil
import sys
import time
import types
from pathlib import Path

import pytest
from bundle_helpers import copy_bundle, install_in_child, release

from backend.bundles.compat import running
from backend.bundles.store import BundleStore

TRIALS = 60


def test_a_killed_install_leaves_the_old_or_the_new_bundle_active_never_a_mix(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = copy_bundle(tiny_bundle, tmp_path / "shipped" / "tiny" / "1.0.0")
    new = release(tiny_bundle, tmp_path / "shipped", "1.1.0")
    template = BundleStore(tmp_path / "template")
    template.install(old, "ops", "the old bundle", 1000, running())
    # Children are forked from a clean server that has imported the install code, so a trial costs milliseconds.
    # Every trial kills at a random time within the length of a whole install (seeded), so some land before the
    # switch and some after it.
    # (Python 3.11's forkserver ignores the parent's sys.path, so the preload module is found through PYTHONPATH.)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(str(Path(__file__).resolve().parents[i]) for i in (1, 2)))
    # The forkserver is one per process: one another test file started first (the drills' own, on the same pytest
    # worker) has neither this preload nor tests/ on its path, and could not load the child's target. Stop it so
    # this test's server starts with both (multiprocessing's own tests stop it the same way).
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    # A child re-runs the parent's __main__ file; a Streamlit AppTest earlier on the worker leaves __main__ pointing
    # at its generated page script, which cannot run alone. The children need no __main__ of the parent.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bundle_kill_preload"])

    def trial(index: int, delay: float | None) -> tuple[str | None, float]:
        root = tmp_path / f"trial{index}"
        shutil.copytree(template.root, root)
        child = context.Process(target=install_in_child, args=(str(root), str(new)))
        started = time.monotonic()
        child.start()
        if delay is not None:
            child.join(delay)
            child.kill()
        child.join(60)
        store = BundleStore(root)
        active = store.active(running())  # verifies every file of the active bundle against its hashes
        state = store.state()
        assert active is not None and active.manifest.key == state.active and active.bundle_id == state.active_id
        assert state.active in ("tiny/1.0.0", "tiny/1.1.0")
        if state.active == "tiny/1.1.0":
            assert [k for k, _ in state.previous] == ["tiny/1.0.0"] and state.log[-1].bundle == "tiny/1.1.0"
        else:
            assert state.previous == () and len(state.log) == 1
        return state.active, time.monotonic() - started

    assert trial(0, None)[0] == "tiny/1.1.0"  # starts the fork server
    finished, full = trial(TRIALS + 1, None)  # the length of a whole install
    assert finished == "tiny/1.1.0"
    rng = random.Random(14)
    outcomes = [trial(i, rng.uniform(0.0, full * 1.1))[0] for i in range(1, TRIALS + 1)]
    assert outcomes.count("tiny/1.0.0") + outcomes.count("tiny/1.1.0") == TRIALS
    assert outcomes.count("tiny/1.0.0") > 0 and outcomes.count("tiny/1.1.0") > 0
    # After a kill, installing again completes: stale staging folders are cleared under the lock.
    last = BundleStore(tmp_path / f"trial{TRIALS}")
    last.install(new, "ops", "retry after a crash", 3000, running())
    assert last.state().active == "tiny/1.1.0" and not list(last.root.glob(".staging-*"))
