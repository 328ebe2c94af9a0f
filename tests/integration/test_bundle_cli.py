"""`acts bundle ...`, `model.source=bundle` on an empty home, the paper runtime and the update channel, end to end."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from bundle_helpers import TINY_OVERRIDES, copy_bundle, edit_manifest, manifest_of, release

from backend.bundles import channel as channel_module
from backend.bundles.channel import ChannelSpec, fetch, load_channel
from backend.bundles.compat import SHIPPED_DIR, running
from backend.bundles.store import BundleStore
from backend.home import Home
from scripts.cli import main

SHIPPED = SHIPPED_DIR / "sim_v1" / "1.0.0"
SMALL_RUN = ("data.days=20", "data.symbols=[BTC,ETH,SOL,DOGE]", "training.num_threads=1")


def acts(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout


def tiny_config(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "tiny.yaml"
    raw = {"name": "tiny", "version": "1.0.0", "description": "test bundle", "overrides": list(TINY_OVERRIDES), **changes}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the shipped bundle
def test_the_shipped_bundle_verifies_against_this_code_and_passes_its_smoke_check(acts_home: Path) -> None:
    code, out, _ = acts("bundle", "verify", str(SHIPPED))
    manifest = manifest_of(SHIPPED)
    assert code == 0 and out.startswith(f"verified sim_v1/1.0.0: id ") and manifest["model_version"] in out
    assert all(g["passed"] for g in manifest["gates"]) and {g["gate"] for g in manifest["gates"]} >= {"min_auc", "min_fold_auc"}
    assert manifest["training"]["data"]["kind"] == "simulated"  # ADR-041
    lineage = json.loads((SHIPPED_DIR.parent / "registry" / "bundles" / "sim_v1" / "1.0.0.json").read_text())
    assert lineage["model_version"] == manifest["model_version"] and lineage["record"]["status"] == "promoted"


def test_a_fresh_home_backtests_on_the_shipped_bundle_without_training_then_paper_runs_on_it(acts_home: Path, tmp_path: Path) -> None:
    code, out, err = acts("backtest", "model.source=bundle", *SMALL_RUN, f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err
    assert "installed the shipped bundle sim_v1/1.0.0" in err and "using the bundle model: no training" in err
    assert "trained" not in err
    model = manifest_of(SHIPPED)["model_version"]
    assert f"model_version        {model}" in out and "bundle  sim_v1/1.0.0 (installed in" in out
    assert BundleStore.of_home(Home(acts_home)).state().log[0].author == "acts"
    code, out, _ = acts("models", "list")
    assert f"{model}  installed, active  bundle sim_v1/1.0.0" in out
    code, out, err = acts("run", "--mode", "paper", "--source", "recorded", "--run-dir", str(tmp_path / "run"), "--speed", "0",
                          "--max-events", "30", "--state", str(tmp_path / "paper"))  # fmt: skip
    assert code == 0, err
    assert f"using the installed bundle sim_v1/1.0.0 (model {model})" in err and json.loads(out)["processed"] == 30


def test_the_demo_uses_the_shipped_bundle_and_names_it(acts_home: Path, tmp_path: Path) -> None:
    code, out, err = acts("demo", *SMALL_RUN, f"hydra.run.dir={tmp_path / 'demo'}")
    assert code == 0, err
    assert "bundle  sim_v1/1.0.0" in out and "replay_identical  True" in out


def test_a_paper_run_of_a_bundle_that_is_neither_promoted_nor_installed_is_refused(acts_home: Path, tmp_path: Path) -> None:
    assert acts("backtest", "model.source=bundle", *SMALL_RUN, f"hydra.run.dir={tmp_path / 'run'}")[0] == 0
    assert acts("bundle", "rollback", "--author", "ops", "--reason", "x")[0] == 2  # nothing before the first install
    shutil.rmtree(acts_home / "bundles")
    code, _, err = acts("run", "--mode", "paper", "--source", "recorded", "--run-dir", str(tmp_path / "run"), "--speed", "0")
    assert code == 2 and "installed is none" in err


def test_a_backtest_whose_features_differ_from_the_bundles_is_refused_naming_both_hashes(acts_home: Path, tmp_path: Path) -> None:
    code, _, err = acts("backtest", "model.source=bundle", "features=full_v1", *SMALL_RUN, f"hydra.run.dir={tmp_path / 'r'}")
    wanted = manifest_of(SHIPPED)["compat"]["feature_set"]["hash"]
    assert code == 2 and f"trained on feature set core_v1 ({wanted}); this run computes full_v1 (" in err


def test_no_compatible_shipped_bundle_is_refused_with_the_reasons(acts_home: Path, tmp_path: Path) -> None:
    from backend.bundles.use import ensure_installed

    shipped = tmp_path / "shipped"
    broken = copy_bundle(SHIPPED, shipped / "sim_v1" / "1.0.0")
    (broken / "smoke" / "sample.parquet").write_bytes(b"x")
    copy_bundle(SHIPPED, shipped / "sim_v1" / "latest")
    (shipped / "sim_v1" / "latest" / "bundle.json").write_text("{}")
    with pytest.raises(Exception, match=r"(?s)no compatible bundle sim_v1 is shipped .*smoke/sample.parquet has sha256"):
        ensure_installed(Home(acts_home), shipped, "sim_v1", running(), 1, lambda _m: None)
    with pytest.raises(Exception, match="none found"):
        ensure_installed(Home(acts_home), tmp_path / "empty", "sim_v1", running(), 1, lambda _m: None)
    installed = ensure_installed(Home(acts_home), SHIPPED_DIR, "sim_v1", running(), 1, lambda _m: None)
    assert ensure_installed(Home(acts_home), tmp_path / "empty", "sim_v1", running(), 2, lambda _m: None) == installed


# ---------------------------------------------------------------- install, list, rollback
def test_install_by_path_and_by_shipped_version_then_list_and_roll_back(acts_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    second = release(tiny_bundle, tmp_path / "shipped", "1.1.0")
    code, out, _ = acts("bundle", "install", str(tiny_bundle), "--author", "ops", "--reason", "first")
    assert code == 0 and out.startswith("installed tiny/1.0.0") and "smoke check passed on 8 rows" in out
    assert acts("bundle", "install", "--author", "ops", str(tiny_bundle))[1].startswith("already active: tiny/1.0.0")
    assert acts("bundle", "install", str(second), "--author", "ops")[1].startswith("installed tiny/1.1.0")
    code, out, _ = acts("bundle", "list")
    assert "active: tiny/1.1.0" in out and "installed tiny/1.1.0  (active)" in out and "installed tiny/1.0.0\n" in out
    assert "shipped   sim_v1/1.0.0  ok " in out and "install tiny/1.1.0 (was tiny/1.0.0) by ops: operator install" in out
    code, out, _ = acts("bundle", "rollback", "--author", "ops", "--reason", "back")
    assert code == 0 and out == "rolled back to tiny/1.0.0 (was tiny/1.1.0)\n"
    listing = json.loads(acts("bundle", "list", "--json")[1])
    assert listing["active"] == "tiny/1.0.0" and [e["action"] for e in listing["log"]] == ["install", "install", "rollback"]
    assert listing["installed"] == ["tiny/1.0.0", "tiny/1.1.0"] and listing["shipped"][0]["verified"] is True
    code, out, _ = acts("bundle", "install", "--author", "ops", "1.0.0", "--reason", "the shipped one")  # the channel's line: sim_v1
    assert code == 0 and out.startswith("installed sim_v1/1.0.0")
    assert acts("bundle", "install", "--author", "ops", "sim_v1/1.0.0")[1].startswith("already active: sim_v1/1.0.0")
    code, _, err = acts("bundle", "install", "--author", "ops", "sim_v1/9.9.9")
    assert code == 2 and "'target' must be a bundle folder or a shipped <name>/<version>, was 'sim_v1/9.9.9'" in err


def test_list_shows_a_refused_shipped_bundle_and_verify_names_the_file(acts_home: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    from scripts.commands import bundle as command

    shipped = tmp_path / "shipped"
    bad = copy_bundle(tiny_bundle, shipped / "tiny" / "1.0.0")
    (bad / "smoke" / "sample.parquet").write_bytes(b"x")
    monkeypatch.setattr(command, "SHIPPED_DIR", shipped)
    assert "shipped   tiny/1.0.0  bundle " in acts("bundle", "list")[1]
    code, _, err = acts("bundle", "verify", str(bad))
    assert code == 2 and "(hash_mismatch): smoke/sample.parquet has sha256" in err


def test_an_install_with_a_control_character_in_the_reason_is_refused_and_writes_nothing(acts_home: Path, tiny_bundle: Path) -> None:
    code, _, err = acts("bundle", "install", "--author", "ops", str(tiny_bundle), "--reason", "bad\x07bell")
    assert code == 2 and "'reason' must not contain control characters" in err and not (acts_home / "bundles").exists()


# ---------------------------------------------------------------- build
def test_build_writes_a_bundle_with_lineage_and_a_rebuild_is_identical(acts_home: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    code, out, err = acts("bundle", "build", str(config), "--out", str(tmp_path / "out"))
    assert code == 0, err
    folder = tmp_path / "out" / "tiny" / "1.0.0"
    assert f"bundle {folder} (written)" in out and "gate passed min_auc" in out
    lineage = json.loads((tmp_path / "out" / "lineage" / "tiny" / "1.0.0.json").read_text())
    manifest = manifest_of(folder)
    assert lineage["model_version"] == manifest["model_version"] and lineage["built_with"]["package"] == running().app_version
    assert set(manifest) >= {"compat", "training", "data_hashes", "parameters", "gates", "smoke", "files"}
    for _ in range(2):  # a fresh work home, then the same one again (its model is promoted already)
        code, out, err = acts("bundle", "build", str(config), "--out", str(tmp_path / "out"), "--work-home", str(tmp_path / "w"))
        assert code == 0 and f"bundle {folder} (unchanged)" in out  # the same config and code give the same bundle


def test_build_from_a_promoted_model_and_the_refusals(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tiny_bundle.parents[2] / "work"
    home = tmp_path / "home"
    shutil.copytree(work, home)
    monkeypatch.setenv("ACTS_HOME", str(home))
    model = manifest_of(tiny_bundle)["model_version"]
    config = tiny_config(tmp_path)
    code, out, err = acts("bundle", "build", str(config), "--from", model, "--version", "2.0.0", "--out", str(tmp_path / "out"))
    assert code == 0, err and f"model {model}" in out
    assert manifest_of(tmp_path / "out" / "tiny" / "2.0.0")["model_version"] == model
    code, _, err = acts("bundle", "build", str(tiny_config(tmp_path, description="other")), "--from", model, "--version", "2.0.0",
                        "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "already holds another bundle" in err
    code, _, err = acts("bundle", "build", str(config), "--from", model, "--version", "v2")
    assert code == 2 and "version" in err and "v2" in err
    registry = home / "registry" / "models" / model / "record.json"
    record = json.loads(registry.read_text())
    registry.write_text(json.dumps({**record, "status": "retired"}))
    code, _, err = acts("bundle", "build", str(config), "--from", model, "--out", str(tmp_path / "o2"))
    assert code == 2 and f"model {model} is retired; only a promoted model becomes a bundle" in err
    record["spec"]["training"]["promotion"]["min_auc"] = 0.99
    registry.write_text(json.dumps(record))
    code, _, err = acts("bundle", "build", str(config), "--from", model, "--out", str(tmp_path / "o3"))
    assert code == 2 and "fails its promotion gates today: min_auc: figure" in err


def test_build_refuses_shared_data_for_the_repository_and_bad_configs(acts_home: Path, tmp_path: Path) -> None:
    # The same build on the real history (the simulator's planted signal is a key only simulated data has).
    on_real = [o for o in TINY_OVERRIDES if not o.startswith("data.signal_bps=")]
    code, _, err = acts("bundle", "build", str(tiny_config(tmp_path, overrides=on_real)), "run=real", "--work-home", str(tmp_path / "w"))
    assert code == 2 and "a bundle trained on ../shared/data may not be committed to bundles/ (ADR-041" in err
    code, _, err = acts("bundle", "build", "no_such_config")
    assert code == 2 and "no bundle build config at" in err
    code, _, err = acts("bundle", "build", str(tiny_config(tmp_path, smoke_rows_per_symbol=0)))
    assert code == 2 and "smoke_rows_per_symbol" in err


def test_a_build_whose_features_the_running_code_does_not_define_is_refused(acts_home: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    code, _, err = acts("bundle", "build", str(config), "features.features.0.window=2", "--out", str(tmp_path / "out"))
    assert code == 2 and "(incompatible_feature_set): trained on feature set core_v1 with hash" in err
    assert not (tmp_path / "out" / "tiny").exists() and not list((tmp_path / "out").glob(".staging-*"))


def test_the_schedule_exports_each_promoted_model_as_a_candidate_bundle(acts_home: Path, tmp_path: Path) -> None:
    from scripts.commands.train import cmd_train
    from scripts.cli import build_parser
    from bundle_helpers import StepClock

    args = build_parser().parse_args(
        ["train", *TINY_OVERRIDES, "--schedule", "--max-iterations", "1", "--bundle-out", str(tmp_path / "cand"),
         "--bundle-config", str(tiny_config(tmp_path))]
    )  # fmt: skip
    out = io.StringIO()
    clock = StepClock(1_796_000_000_000)  # 2026-12-01 ...
    assert cmd_train(args, out, io.StringIO(), sleep=lambda _s: None, clock=clock) == 0
    (folder,) = (tmp_path / "cand" / "tiny").iterdir()
    assert folder.name.startswith("2026.") and f"candidate bundle {folder}" in out.getvalue()
    code, verified, _ = acts("bundle", "verify", str(folder))
    assert code == 0 and all(g["passed"] for g in manifest_of(folder)["gates"])
    assert (tmp_path / "cand" / "lineage" / "tiny" / f"{folder.name}.json").is_file()


# ---------------------------------------------------------------- the update channel
@pytest.fixture
def remote(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A bare git repository whose main branch ships tiny/1.1.0 under bundles/, as the project's repository would."""
    bare = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "clone"
    git("init", "--quiet", "--initial-branch=main", str(work))
    release(tiny_bundle, work / "bundles", "1.1.0")
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "ship tiny 1.1.0", cwd=work)
    git("push", "--quiet", str(bare), "main", cwd=work)
    return bare


def test_update_asks_for_confirmation_then_installs_with_yes_then_is_up_to_date(acts_home: Path, tiny_bundle: Path, remote: Path) -> None:
    assert acts("bundle", "install", "--author", "ops", str(tiny_bundle))[0] == 0
    code, out, _ = acts("bundle", "update", "--author", "ops", "--bundle", "tiny", "--remote", str(remote))
    assert code == 0 and "tiny/1.1.0 is newer than tiny/1.0.0" in out and "not installed: confirm with --yes" in out
    assert BundleStore.of_home(Home(acts_home)).state().active == "tiny/1.0.0"
    code, out, _ = acts("bundle", "update", "--bundle", "tiny", "--remote", str(remote), "--yes", "--author", "ops")
    assert code == 0 and "installed tiny/1.1.0 (previous tiny/1.0.0)" in out
    entry = BundleStore.of_home(Home(acts_home)).state().log[-1]
    assert entry.author == "ops" and entry.reason == f"update from {remote} main:bundles (confirm)"
    code, out, _ = acts("bundle", "update", "--author", "ops", "--bundle", "tiny", "--remote", str(remote), "--policy", "auto")
    assert code == 0 and "up to date: tiny/1.1.0 is active" in out


def test_update_with_policy_auto_installs_on_an_empty_home(acts_home: Path, remote: Path) -> None:
    code, out, _ = acts("bundle", "update", "--author", "ops", "--bundle", "tiny", "--remote", str(remote), "--policy", "auto")
    assert code == 0 and "installed tiny/1.1.0 (previous none)" in out


def test_update_reports_refused_bundles_and_installs_nothing(acts_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bad.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "clone2"
    git("init", "--quiet", "--initial-branch=main", str(work))
    bad = release(tiny_bundle, work / "bundles", "1.2.0")
    edit_manifest(bad, compat={**manifest_of(bad)["compat"], "min_app_version": "99.0"})
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "needs a newer app", cwd=work)
    git("push", "--quiet", str(bare), "main", cwd=work)
    code, out, _ = acts("bundle", "update", "--author", "ops", "--bundle", "tiny", "--remote", str(bare), "--policy", "auto")
    assert code == 0 and "no verified bundle tiny on the channel" in out and "needs acts 99.0 or newer" in out
    assert not (acts_home / "bundles" / "state.json").exists()


def test_an_unreachable_remote_fails_with_gits_message_and_changes_nothing(acts_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    assert acts("bundle", "install", "--author", "ops", str(tiny_bundle))[0] == 0
    before = (acts_home / "bundles" / "state.json").read_bytes()
    code, _, err = acts("bundle", "update", "--author", "ops", "--remote", str(tmp_path / "nowhere.git"))
    assert code == 2 and f"update channel: cannot fetch main from {tmp_path / 'nowhere.git'}: git " in err
    assert (acts_home / "bundles" / "state.json").read_bytes() == before


def test_without_a_remote_the_channel_is_this_checkouts_bundles_and_needs_no_network(acts_home: Path, tmp_path: Path) -> None:
    fetched = fetch(ChannelSpec(bundle="sim_v1"), Home(acts_home), repo=tmp_path)  # not a git checkout: no origin
    assert fetched.root == tmp_path / "bundles" and "no remote: this checkout" in fetched.source
    code, out, _ = acts("bundle", "update", "--author", "ops")  # this repository's own bundles/: sim_v1/1.0.0
    assert code == 0 and "sim_v1/1.0.0 is newer than nothing" in out and "not installed" in out


def test_a_checkouts_origin_is_the_default_remote(acts_home: Path, remote: Path, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    git("clone", "--quiet", str(remote), str(checkout))
    fetched = fetch(ChannelSpec(bundle="tiny"), Home(acts_home), repo=checkout)
    assert fetched.source == f"{remote} main:bundles" and (fetched.root / "tiny" / "1.1.0" / "bundle.json").is_file()
    fetch(ChannelSpec(bundle="tiny"), Home(acts_home), repo=checkout)  # a second fetch reuses the cache repository


def test_channel_config_errors_name_the_file_or_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Exception, match="no update channel config at"):
        load_channel(tmp_path / "missing.yaml")
    with pytest.raises(Exception, match="policy"):
        load_channel(policy="sometimes")
    monkeypatch.setattr(channel_module, "GIT", str(tmp_path / "no-git"))
    with pytest.raises(Exception, match="git config failed"):
        channel_module._git(["config", "--get", "x"])


def test_a_model_source_of_bundle_without_an_installed_source_is_refused() -> None:
    import polars as pl
    from stubs import small_spec

    from backend.engine.pipeline import compile_pipeline
    from backend.runs.runner import train_bundle

    with pytest.raises(Exception, match="model.source=bundle needs the home's installed bundles"):
        train_bundle(compile_pipeline(small_spec("model.source=bundle")), pl.DataFrame(), {}, lambda _m: None)


def test_update_asks_the_operator_on_a_terminal(acts_home: Path, remote: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = acts("bundle", "update", "--author", "ops", "--bundle", "tiny", "--remote", str(remote))
    assert code == 0 and "installed tiny/1.1.0 (previous none)" in out
