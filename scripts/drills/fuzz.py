"""Fuzzing with Hypothesis: every config field, profile key and CLI argument gets hostile values.

Values: the wrong type (text, bools, lists, None, mappings), out-of-bound and huge integers, NaN and
infinities, unicode, control characters and huge strings. Each case must end in one of two ways:

- **accepted**: the value is valid (and then, for a store, written);
- **no-op**: a valid value that changes nothing (the profile already holds it, the version is already active),
  refused as such (``NoChangeError``, whose message ends with ``NO_CHANGE``), with nothing written;
- **refused**: a clear error (``ActsError`` or argparse's exit 2) whose message names the field, and nothing
  written (the store's rows, the home's files are unchanged).

Anything else (a traceback, a refusal that does not name the field, a write on refusal) is an
**unclear** case, kept with its input for the report. Counts are per target; `make drill` runs large
counts, the tests small ones.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.bundles.compat import SHIPPED_DIR
from backend.config.compose import compose_raw, compose_with_hydra, validate_raw
from backend.clock import WallClock
from backend.errors import ActsError
from backend.profiles.errors import NO_CHANGE, NoChangeError
from backend.profiles.store import ProfileStore
from scripts.cli import build_parser, main, parse
from scripts.drills.kills import environment

HUGE = "x" * 100_000
CONTROL = "".join(chr(c) for c in (*range(0, 32), 127, 0x85, 0x200B, 0x202E, 0x2028))
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


def hostile_values() -> st.SearchStrategy[Any]:
    """Values of every wrong kind: types, bounds, NaN/inf, unicode, control characters, huge strings."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0]),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.booleans(),
        st.none(),
        TEXT,
        st.text(alphabet=CONTROL, min_size=1, max_size=8),
        st.just(HUGE),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    )


def hostile_text() -> st.SearchStrategy[str]:
    """Strings for command-line values: numbers spelled every way, NaN/inf, unicode, control characters, huge."""
    return st.one_of(
        TEXT,
        st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "-0", "1", "10x", "max", "", " ",
                         "9" * 400, HUGE, "\x00", "a\nb", "\u202eevil", "１２"]),  # fmt: skip
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats().map(repr),
        st.text(alphabet=CONTROL, min_size=1, max_size=8),
    )


@dataclass
class FuzzTarget:
    """Counts for one target (config fields, profile keys, CLI arguments...)."""

    name: str
    fields: int = 0
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    noop: int = 0
    unclear: list[str] = field(default_factory=list)

    def count(self, outcome: str, example: str = "") -> None:
        self.cases += 1
        if outcome == "accepted":
            self.accepted += 1
        elif outcome == "refused":
            self.refused += 1
        elif outcome == "no-op":
            self.noop += 1
        else:
            self.unclear.append(f"{outcome}: {example[:300]}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fields": self.fields, "cases": self.cases, "accepted": self.accepted,
                "refused": self.refused, "no-op": self.noop, "unclear": len(self.unclear)}  # fmt: skip


def _settings(examples: int) -> Callable[[Any], Any]:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))  # fmt: skip


def leaves(tree: Any, prefix: str = "") -> Iterator[str]:
    """Every leaf key of a config tree, dotted (list items by index)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, (dict, list)) and value:
            yield from leaves(value, path + ".")
        else:
            yield path


def replaced(tree: Any, key: str, value: Any) -> Any:
    """A copy of ``tree`` with the dotted ``key`` set to ``value``."""
    head, _, rest = key.partition(".")
    if isinstance(tree, list):
        index = int(head)
        return [replaced(v, rest, value) if i == index and rest else (value if i == index else v) for i, v in enumerate(tree)]
    return {k: (replaced(v, rest, value) if rest else value) if k == head else v for k, v in tree.items()}


def names_field(message: str, key: str) -> bool:
    """Whether ``message`` names ``key`` (its dotted path, or its last part in a cross-field rule)."""
    return key in message or f"'{key.rsplit('.', 1)[-1]}'" in message or key.rsplit(".", 1)[-1] in message


def judge(action: Callable[[], object], key: str, example: str) -> tuple[str, str]:
    """Run a validation: ``accepted``, ``refused`` (an ActsError naming ``key``) or an unclear outcome."""
    try:
        action()
    except ActsError as error:
        return ("refused" if names_field(str(error), key) else "refusal does not name the field"), f"{example}: {error}"
    return "accepted", example


# ---------------------------------------------------------------- config fields
def fuzz_config(examples: int) -> FuzzTarget:
    """Every leaf of the composed default config, through the one validation every command uses."""
    target = FuzzTarget("config fields (RunSpec, every leaf)")
    tree = compose_raw([])
    keys = sorted(leaves(tree))
    target.fields = len(keys)

    @_settings(examples)
    @given(st.sampled_from(keys), hostile_values())
    def case(key: str, value: Any) -> None:
        target.count(*judge(lambda: validate_raw(replaced(tree, key, value)), key, f"{key}={value!r}"))

    case()
    return target


def fuzz_overrides(examples: int) -> FuzzTarget:
    """Hydra overrides of the risk profile's numbers, composed for real (slower: a small share of the cases)."""
    target = FuzzTarget("Hydra overrides (risk.*)")
    keys = sorted(k for k in leaves(compose_raw([])["risk"]) if k != "name")
    target.fields = len(keys)

    @_settings(examples)
    @given(st.sampled_from(keys), st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "2", "0", "abc", "[1]", "''", "null"]))
    def case(key: str, text: str) -> None:
        target.count(*judge(lambda: validate_raw(compose_with_hydra([f"risk.{key}={text}"])[0]), key, f"risk.{key}={text}"))

    case()
    return target


# ---------------------------------------------------------------- profile keys
def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = [*conn.execute("SELECT * FROM profile_commits"), *conn.execute("SELECT * FROM profile_activations")]
    conn.close()
    return rows


def fuzz_profiles(examples: int, root: Path) -> FuzzTarget:
    """Every profile key and the author and reason, through ``ProfileStore.set``; a refusal writes nothing."""
    target = FuzzTarget("profile keys, author, reason (ProfileStore.set)")
    root.mkdir(parents=True, exist_ok=True)
    db = root / "acts.db"
    with ProfileStore(db, WallClock()) as store:
        keys = sorted(k for k in leaves(store.show("balanced").tree()) if k != "name")
        target.fields = len(keys) + 2

        @_settings(examples)
        @given(st.sampled_from([*keys, "author", "reason"]), hostile_values(), st.one_of(hostile_text(), st.just("ok")))
        def case(key: str, value: Any, text: str) -> None:
            before = _rows(db)
            changes = {key: value} if key not in ("author", "reason") else {"position_size_pct": 0.13}
            author = text if key == "author" else "fuzz"
            reason = text if key == "reason" else "fuzz"
            try:
                store.set("balanced", changes, author, reason, store.show("balanced").version)
            except ActsError as error:
                unchanged = _rows(db) == before
                outcome = "no-op" if isinstance(error, NoChangeError) else "refused" if names_field(str(error), key) else "unclear refusal"
                target.count(outcome if unchanged else "a write on refusal", f"{key}={value!r} author={author!r}: {error}")
                return
            target.count("accepted")

        case()
    return target


# ---------------------------------------------------------------- CLI arguments
def cli_arguments(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.Action, argparse.ArgumentParser]]:
    """Every argument of every (sub)command: (command path, the argument, its parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in sorted(action.choices.items()):
                yield from cli_arguments(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action, parser


def _filler(action: argparse.Action) -> list[str]:
    """A valid value for a required argument: a choice argument's first choice as declared (the least
    consequential one: ``--mode paper`` before ``live``), else a number or a word."""
    if action.choices:
        value = list(action.choices)[0]
    else:
        value = "1" if action.type is not None else "x"
    return [value] if not action.option_strings else [action.option_strings[0], value]


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser, action: argparse.Action, text: str) -> list[str]:
    """A command line with ``action`` set to ``text`` and every other required argument filled with a valid value."""
    argv = list(path)
    for other in parser._actions:
        required = other.required or (not other.option_strings and other.nargs not in ("?", "*"))
        if other is not action and required and not isinstance(other, (argparse._SubParsersAction, argparse._HelpAction)):
            argv += _filler(other)
    return argv + ([f"{action.option_strings[0]}={text}"] if action.option_strings else ["--", text])


def fuzz_cli(examples: int) -> FuzzTarget:
    """Every argument that takes a value, parsed as ``acts`` parses it: a refusal is exit 2 naming the argument."""
    target = FuzzTarget("CLI arguments (every command's parser)")
    arguments = [(p, a, parser) for p, a, parser in cli_arguments(build_parser()) if a.nargs != 0]
    target.fields = len(arguments)

    @_settings(examples)
    @given(st.sampled_from(range(len(arguments))), hostile_text())
    def case(index: int, text: str) -> None:
        path, action, parser = arguments[index]
        argv = _argv(path, parser, action, text)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = parse(build_parser(), argv)
        except SystemExit as stopped:
            shown = action.option_strings[0] if action.option_strings else action.dest
            said = err.getvalue()
            clear = stopped.code == 2 and any(str(name) in said for name in (shown, action.dest, action.metavar) if name)
            target.count("refused" if clear else "refusal does not name the argument", f"{argv[-1]!r}: {err.getvalue()}")
            return
        value = getattr(args, action.dest)
        finite = not isinstance(value, float) or math.isfinite(value)
        target.count("accepted" if finite else "a non-finite number accepted", f"{argv}")

    case()
    return target


ATTRIBUTED = (
    ("control", "kill"),
    ("control", "resume"),
    ("profile", "set", "position_size_pct=0.14"),
    ("profile", "activate", "1", "--profile", "conservative"),
    ("bundle", "install", str(SHIPPED_DIR / "sim_v1" / "1.0.0")),
    ("live", "disable"),
)
_SQLITE_SIDE_FILES = ("-wal", "-shm")


def _home_state(home: Path) -> dict[str, Any]:
    """Every database's rows and every other file's bytes (the bundle store's state.json, installed files)."""
    state: dict[str, Any] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.name.endswith(_SQLITE_SIDE_FILES)):
        key = path.relative_to(home).as_posix()
        if path.suffix == ".db":
            with sqlite3.connect(path) as conn:
                state[key] = list(conn.iterdump())
            conn.close()
        else:
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def is_no_change(said: str) -> bool:
    """Whether a command's error output is one refusal of an action that would change nothing (a correct refusal)."""
    lines = said.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("acts: error: profile ") and lines[0].endswith(NO_CHANGE)


def fuzz_attribution(examples: int, root: Path) -> FuzzTarget:
    """``--author`` and ``--reason`` of every attributable command, run whole: a refusal is exit 2 and writes nothing."""
    target = FuzzTarget("attributable commands (--author, --reason), run whole")
    target.fields = 2 * len(ATTRIBUTED)
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)

    @_settings(examples)
    @given(st.sampled_from(ATTRIBUTED), st.sampled_from(["--author", "--reason"]), hostile_text())
    def case(command: tuple[str, ...], flag: str, text: str) -> None:
        other = "--reason" if flag == "--author" else "--author"
        before = _home_state(home)
        out, err = io.StringIO(), io.StringIO()
        with environment({"ACTS_HOME": str(home)}), contextlib.redirect_stderr(err):
            # FLAG=VALUE: argparse takes any text as the value, so the command's own checks decide.
            code = main([*command, f"{flag}={text}", other, "fuzz"], out, err)
        field_name = flag.lstrip("-")
        if code == 0:
            target.count("accepted")
            return
        said = err.getvalue()
        outcome = "no-op" if is_no_change(said) else "refused" if field_name in said else "unclear refusal"
        clean = code == 2 and _home_state(home) == before
        target.count(outcome if clean else "a write on refusal", f"{command} {flag}={text!r}: {said}")

    case()
    return target


def fuzz_all(examples: int, root: Path) -> tuple[list[FuzzTarget], float]:
    """Every fuzz target with ``examples`` cases each (Hydra composition: a tenth, at least 5); return them and the seconds."""
    started = time.monotonic()
    targets = [
        fuzz_config(examples),
        fuzz_overrides(max(5, examples // 10)),
        fuzz_profiles(examples, root / "profiles"),
        fuzz_cli(examples),
        fuzz_attribution(max(5, examples // 4), root / "attribution"),
    ]
    return targets, time.monotonic() - started
