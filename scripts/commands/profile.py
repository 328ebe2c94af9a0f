"""`acts profile`: show, set, log, diff, activate and verify versioned risk profiles.

Every write goes through ``ProfileStore``, which validates through ``RiskProfileSpec``: this command
only parses and prints.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

import yaml

from backend.clock import WallClock
from backend.config.diff import format_changes
from backend.home import acts_home
from backend.profiles.core import ProfileCommit, format_time_ms
from backend.profiles.errors import ProfileError, ProfileValueError
from backend.profiles.store import ProfileStore, home_database


def register(sub: argparse._SubParsersAction) -> None:
    profile = sub.add_parser("profile", help="versioned risk profiles: show, set, log, diff, activate, verify")
    actions = profile.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="a profile version's content and provenance")
    show.add_argument("name", nargs="?", help="profile name (default: the active profile)")
    show.add_argument("--version", help="version (default: the latest)")
    show.set_defaults(handler=cmd_show)
    change = actions.add_parser("set", help="commit a new version with KEY=VALUE changes")
    change.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="dotted keys, e.g. max_total_exposure.mode=absolute")
    change.add_argument("--reason", required=True)
    change.add_argument("--author", help="default: $USER")
    change.add_argument("--profile", help="default: the active profile")
    change.add_argument("--parent", help="the version the change is based on (default: the latest)")
    change.set_defaults(handler=cmd_set)
    log = actions.add_parser("log", help="every version of a profile, newest first, and its activations")
    log.add_argument("name", nargs="?", help="default: the active profile")
    log.set_defaults(handler=cmd_log)
    diff = actions.add_parser("diff", help="changed keys between two versions")
    diff.add_argument("v1")
    diff.add_argument("v2")
    diff.add_argument("--profile", help="default: the active profile")
    diff.set_defaults(handler=cmd_diff)
    activate = actions.add_parser("activate", help="make a version the active profile")
    activate.add_argument("version")
    activate.add_argument("--profile", help="default: the active profile")
    activate.add_argument("--reason", required=True)
    activate.add_argument("--author", help="default: $USER")
    activate.set_defaults(handler=cmd_activate)
    verify = actions.add_parser("verify", help="recompute every hash of the commit and activation chains")
    verify.set_defaults(handler=cmd_verify)


def parse_version(text: str) -> int:
    """Parse ``3`` or ``v3`` into 3; refuse anything else."""
    digits = text[1:] if text.startswith("v") else text
    if not digits.isdigit() or int(digits) < 1:
        raise ProfileValueError(f"'version' must be a positive integer such as 3 or v3, was {text!r}")
    return int(digits)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items; values are read as YAML scalars or flow collections."""
    changes: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise ProfileValueError(f"expected KEY=VALUE, was {item!r}")
        if key in changes:
            raise ProfileValueError(f"'{key}' is set twice")
        try:
            changes[key] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ProfileValueError(f"'{key}' value is not valid YAML, was {text!r}") from error
    return changes


def _store() -> ProfileStore:
    return ProfileStore(home_database(acts_home()), WallClock())


def _author(args: argparse.Namespace) -> str:
    author = args.author or os.environ.get("USER", "")
    if not author:
        raise ProfileValueError("'author' is required: pass --author or set USER")
    return author


def _profile_name(store: ProfileStore, name: str | None) -> str:
    if name:
        return name
    head = store.head_activation()
    if head is None:
        raise ProfileError("no profile is active: name one (--profile NAME)")
    return head.name


def _active_version(store: ProfileStore, name: str) -> int | None:
    head = store.head_activation()
    return head.version if head is not None and head.name == name else None


def format_show(commit: ProfileCommit, active: bool) -> str:
    """Render one version: its id, provenance and content as YAML."""
    parent = "no parent" if commit.parent_version is None else f"parent v{commit.parent_version}"
    return (
        f"{commit.version_string}  {'active' if active else 'not active'}\n"
        f"version: {commit.version} ({parent})\n"
        f"author: {commit.author}\n"
        f"time: {format_time_ms(commit.ts_ms)}\n"
        f"reason: {commit.reason}\n"
        f"content_hash: {commit.content_hash}\n"
        f"chain_hash: {commit.chain_hash}\n"
        "---\n" + yaml.safe_dump(commit.tree(), sort_keys=True)
    )


def format_log(store: ProfileStore, name: str) -> str:
    """Render every version of ``name`` newest first, with its change from the parent, then its activations."""
    commits = store.log(name)
    active = _active_version(store, name)
    lines = [f"profile {name}: {len(commits)} versions, " + ("not active" if active is None else f"active v{active}")]
    for commit in reversed(commits):
        parent = "no parent" if commit.parent_version is None else f"parent v{commit.parent_version}"
        lines.append(
            f"v{commit.version}  {format_time_ms(commit.ts_ms)}  {commit.author}  {parent}  "
            f"content {commit.content_hash[:12]}  chain {commit.chain_hash[:12]}"
        )
        lines.append(f"    reason: {commit.reason}")
        if commit.parent_version is not None:
            changes = store.diff(name, commit.parent_version, commit.version)
            lines.extend(f"    {line}" for line in format_changes(changes).splitlines())
    lines.append(f"activations of {name}:")
    for activation in store.activations(name):
        lines.append(
            f"  #{activation.seq}  {format_time_ms(activation.ts_ms)}  v{activation.version}  "
            f"{activation.author}  reason: {activation.reason}"
        )
    return "\n".join(lines) + "\n"


def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print a profile version (default: the active profile's latest version)."""
    with _store() as store:
        name = _profile_name(store, args.name)
        commit = store.show(name, None if args.version is None else parse_version(args.version))
        out.write(format_show(commit, _active_version(store, name) == commit.version))
    return 0


def cmd_set(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Commit KEY=VALUE changes as a new version; refuse out-of-bound values, writing nothing."""
    changes = parse_assignments(args.assignments)
    with _store() as store:
        name = _profile_name(store, args.profile)
        parent = store.show(name).version if args.parent is None else parse_version(args.parent)
        commit = store.set(name, changes, _author(args), args.reason, expected_parent=parent)
        out.write(f"committed {commit.version_string} (parent v{parent})\n")
        out.write("".join(f"  {line}\n" for line in format_changes(store.diff(name, parent, commit.version)).splitlines()))
    out.write(f"not active yet: `acts profile activate {commit.version} --profile {name} --reason TEXT` uses it\n")
    return 0


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print every version of a profile, newest first."""
    with _store() as store:
        out.write(format_log(store, _profile_name(store, args.name)))
    return 0


def cmd_diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the changed keys between two versions of a profile."""
    v1, v2 = parse_version(args.v1), parse_version(args.v2)
    with _store() as store:
        name = _profile_name(store, args.profile)
        out.write(f"{name} v{v1} -> v{v2}\n{format_changes(store.diff(name, v1, v2))}\n")
    return 0


def cmd_activate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Make a version the active profile; a running engine uses it from its next event."""
    version = parse_version(args.version)
    with _store() as store:
        name = _profile_name(store, args.profile)
        activation = store.activate(name, version, _author(args), args.reason)
        out.write(f"active: {store.show(name, version).version_string} (activation #{activation.seq} by {activation.author})\n")
    return 0


def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Recompute both chains; exit 1 when any stored row does not match its hashes."""
    with _store() as store:
        report = store.verify_chain()
    counts = f"{report.profiles} profiles, {report.commits} commits, {report.activations} activations"
    if not report.ok:
        out.write(f"chain BROKEN ({counts}): {len(report.problems)} problems\n")
        out.write("".join(f"  {problem}\n" for problem in report.problems))
        return 1
    out.write(f"chain ok ({counts})\n")
    out.write("".join(f"  {name} v{version} chain {chain}\n" for name, version, chain in report.heads))
    return 0
