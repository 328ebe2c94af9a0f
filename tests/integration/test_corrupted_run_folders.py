"""A corrupted or unreadable run artifact makes replay, audit diff and the paper run exit 2 naming the file.

Exit 1 keeps its one meaning (``acts replay`` without overrides did not reproduce the run): no
truncated parquet, broken JSON or missing file may surface as a traceback or as exit 1.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from paper_helpers import record_run

from scripts.cli import main


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_run(tmp_path_factory.mktemp("corrupt"))[0]


def acts(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text, encoding="utf-8")


def write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def remove(path: Path) -> None:
    path.unlink()


def drop_key(key: str) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        tree = json.loads(path.read_text(encoding="utf-8"))
        del tree[key]
        path.write_text(json.dumps(tree), encoding="utf-8")

    return change


# (file, corruption, what the message says, which commands read the file)
REPLAY, AUDIT, PAPER = "replay", "audit", "paper"
CASES = [
    ("inputs.parquet", truncate, "inputs.parquet is not a readable parquet file (truncated or corrupted?)", {REPLAY, AUDIT, PAPER}),
    ("inputs.parquet", remove, "inputs.parquet is missing", {REPLAY, PAPER}),
    ("inputs.parquet", write(""), "inputs.parquet is not a readable parquet file", {REPLAY, AUDIT, PAPER}),
    ("inputs.json", write('{"inputs_sha256": "ab'), "inputs.json is not valid JSON (truncated or corrupted?)", {REPLAY, AUDIT, PAPER}),
    ("inputs.json", drop_key("inputs_sha256"), "inputs.json lacks the key 'inputs_sha256'", {REPLAY, AUDIT, PAPER}),
    ("inputs.json", write('{"inputs_sha256": 7}'), "inputs.json: 'inputs_sha256' must be text, was 7", {REPLAY, AUDIT, PAPER}),
    ("inputs.json", remove, "inputs.json is missing", {REPLAY, AUDIT, PAPER}),
    ("spec.json", truncate, "spec.json is not valid JSON", {REPLAY, AUDIT, PAPER}),
    ("spec.json", write('{"name": "x"}'), "spec.json is not a valid run spec: invalid config:", {REPLAY, AUDIT, PAPER}),
    ("spec.json", write("[1, 2]"), "spec.json must hold a JSON object at the top, found list", {REPLAY, AUDIT, PAPER}),
    ("spec.json", write_bytes(b'{"name": "\xff\xfe"}'), "spec.json is not valid JSON", {REPLAY, AUDIT, PAPER}),
    ("summary.json", truncate, "summary.json is not valid JSON", {REPLAY, AUDIT}),
    ("summary.json", drop_key("decision_log_sha256"), "summary.json lacks the key 'decision_log_sha256'", {REPLAY, AUDIT}),
    ("summary.json", write('{"spec_hash": "a", "model_version": "b", "decision_log_sha256": "c", "decisions": true, '
                           '"fees_paid": "0", "realized_pnl": "0"}'), "summary.json: 'decisions' must be an integer, was True", {REPLAY, AUDIT}),
    ("decisions.parquet", truncate, "decisions.parquet is not a readable parquet file", {REPLAY, AUDIT}),
    ("fills.parquet", truncate, "fills.parquet is not a readable parquet file", {AUDIT}),
    ("equity.parquet", remove, "equity.parquet is missing", {AUDIT}),
    ("model/manifest.json", truncate, "manifest.json is not a valid manifest", {REPLAY, AUDIT, PAPER}),
    ("model/manifest.json", drop_key("models"), "manifest.json lacks 'models'", {REPLAY, AUDIT, PAPER}),
    ("model/manifest.json", remove, "manifest.json is missing", {REPLAY, AUDIT, PAPER}),
]
COMMANDS = {
    REPLAY: lambda run: ("replay", str(run)),
    AUDIT: lambda run: ("audit", "diff", str(run), "--set", "risk.entry_min_p_up=0.6"),
    PAPER: lambda run: ("run", "--mode", "paper", "--source", "recorded", "--run-dir", str(run), "--speed", "max", "--allow-run-bundle"),
}
MATRIX = [
    pytest.param(command, name, corrupt, said, id=f"{command}-{name}-{getattr(corrupt, '__name__', 'write')}-{n}")
    for n, (name, corrupt, said, commands) in enumerate(CASES)
    for command in sorted(commands)
]


@pytest.mark.parametrize(("command", "name", "corrupt", "said"), MATRIX)
def test_a_corrupted_artifact_exits_2_naming_the_file_and_the_fault(
    recorded: Path, tmp_path: Path, acts_home: Path, command: str, name: str, corrupt: Callable[[Path], None], said: str
) -> None:
    run = Path(shutil.copytree(recorded, tmp_path / "run"))
    corrupt(run / name)

    code, out, err = acts(*COMMANDS[command](run))

    assert (code, out) == (2, "")
    assert err.startswith("acts: error: ") and said in err, err
    assert str(run / Path(name).parent) in err
    assert "Traceback" not in err


def test_a_run_folder_named_by_a_directory_with_no_run_files_is_refused(tmp_path: Path) -> None:
    code, _, err = acts(*COMMANDS[PAPER](tmp_path))

    assert code == 2 and "is not a recorded run (spec.json, inputs.parquet and inputs.json are needed)" in err
