"""The profile store: versioned, attributable, hash-chained profile commits in the home's SQLite database.

Each change of a profile is a commit (version 1..n per name) whose chain hash covers its parent's chain
hash, so editing any stored row is detected by :meth:`ProfileStore.verify_chain`. Activations are a
second chain. Every write validates through ``RiskProfileSpec`` and runs in one ``BEGIN IMMEDIATE``
transaction, so a refused change writes nothing and two writers never build on the same parent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.clock import Clock
from backend.config.canonical import canonical_json, sha256_hex
from backend.config.compose import CONF_DIR
from backend.config.diff import ConfigChange, diff_configs
from backend.config.schema import RiskProfileSpec
from backend.config.text import display_text
from backend.profiles.core import (
    GENESIS,
    Activation,
    ProfileCommit,
    activation_chain_hash,
    apply_changes,
    check_attribution,
    commit_chain_hash,
    validate_profile,
)
from backend.profiles.errors import (
    BrokenChainError,
    NoChangeError,
    ProfileError,
    ProfileIntegrityError,
    StaleProfileError,
    UnknownProfileError,
)
from backend.profiles.presets import default_profile_name, load_presets
from backend.sqlite import SqliteStore, transaction

PRESET_AUTHOR = "acts-presets"
DATABASE_NAME = "acts.db"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS profile_commits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        parent_version INTEGER,
        author TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        content TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        chain_hash TEXT NOT NULL,
        UNIQUE (name, version)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS profile_activations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        commit_chain_hash TEXT NOT NULL,
        author TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        chain_hash TEXT NOT NULL
    )
    """,
)
_COMMIT_COLUMNS = "name, version, parent_version, author, ts_ms, reason, content, content_hash, chain_hash"
_ACTIVATION_COLUMNS = "id, name, version, commit_chain_hash, author, ts_ms, reason, chain_hash"


@dataclass(frozen=True)
class ChainReport:
    """The outcome of :meth:`ProfileStore.verify_chain`: counts, chain heads and every problem found."""

    profiles: int
    commits: int
    activations: int
    heads: tuple[tuple[str, int, str], ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _held(tree: Mapping[str, Any], key: str) -> str:
    """The stored value at dotted ``key`` (it exists: the content validated and equals the tree), shown on one line."""
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return display_text(repr(node))


def _commit(row: sqlite3.Row) -> ProfileCommit:
    return ProfileCommit(*(row[key] for key in _COMMIT_COLUMNS.split(", ")))


def _activation(row: sqlite3.Row) -> Activation:
    return Activation(*(row[key] for key in _ACTIVATION_COLUMNS.split(", ")))


class ProfileStore(SqliteStore):
    """Versioned risk profiles in SQLite (WAL). Seeds the shipped presets as v1 on first use.

    Parameters
    ----------
    path
        The database file (``$ACTS_HOME/acts.db`` in a home; see :func:`home_database`).
    clock
        The injected clock that stamps commits and activations.
    conf_dir
        The config folder whose ``risk/*.yaml`` presets seed the store and whose ``config.yaml``
        names the profile activated first.
    """

    def __init__(self, path: Path, clock: Clock, conf_dir: Path = CONF_DIR) -> None:
        self.path = Path(path)
        self._clock = clock
        presets = load_presets(conf_dir)
        default = default_profile_name(conf_dir)
        # Autocommit mode: every write opens its own BEGIN IMMEDIATE transaction below.
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            known = {row["name"] for row in conn.execute("SELECT DISTINCT name FROM profile_commits")}
            first_use = not known
            for preset in presets:
                if preset.spec.name not in known:
                    known.add(preset.spec.name)
                    self._insert_commit(
                        conn, preset.spec.name, 1, None, GENESIS, canonical_json(preset.spec),
                        PRESET_AUTHOR, f"shipped preset {preset.source}",
                    )
            # Only on first use: a store whose activations vanished must not silently re-activate a preset.
            if first_use and default in known:
                self._insert_activation(
                    conn, self._find(conn, default, 1), PRESET_AUTHOR, f"default preset (conf/config.yaml risk: {default})"
                )

    # ------------------------------------------------------------ plumbing
    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def _insert_commit(
        self, conn: sqlite3.Connection, name: str, version: int, parent: ProfileCommit | None,
        parent_chain: str, content: str, author: str, reason: str,
    ) -> ProfileCommit:
        parent_version = None if parent is None else parent.version
        content_hash = sha256_hex(content)
        ts_ms = self._clock.now_ms()
        chain = commit_chain_hash(parent_chain, name, version, parent_version, content_hash, author, ts_ms, reason)
        commit = ProfileCommit(name, version, parent_version, author, ts_ms, reason, content, content_hash, chain)
        conn.execute(
            f"INSERT INTO profile_commits ({_COMMIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, version, parent_version, author, ts_ms, reason, content, content_hash, chain),
        )
        return commit

    def _insert_activation(self, conn: sqlite3.Connection, commit: ProfileCommit, author: str, reason: str) -> Activation:
        head = self._head(conn)
        previous = GENESIS if head is None else head.chain_hash
        ts_ms = self._clock.now_ms()
        chain = activation_chain_hash(previous, commit.name, commit.version, commit.chain_hash, author, ts_ms, reason)
        seq = conn.execute(
            "INSERT INTO profile_activations (name, version, commit_chain_hash, author, ts_ms, reason, chain_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (commit.name, commit.version, commit.chain_hash, author, ts_ms, reason, chain),
        ).lastrowid
        return Activation(seq, commit.name, commit.version, commit.chain_hash, author, ts_ms, reason, chain)

    @staticmethod
    def _head(conn: sqlite3.Connection) -> Activation | None:
        row = conn.execute(f"SELECT {_ACTIVATION_COLUMNS} FROM profile_activations ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _activation(row)

    @staticmethod
    def _find(conn: sqlite3.Connection, name: str, version: int | None) -> ProfileCommit:
        if version is None:
            row = conn.execute(
                f"SELECT {_COMMIT_COLUMNS} FROM profile_commits WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            ).fetchone()
        else:
            row = conn.execute(
                f"SELECT {_COMMIT_COLUMNS} FROM profile_commits WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            what = f"profile {name!r}" if version is None else f"profile {name!r} v{version}"
            raise UnknownProfileError(f"no {what} in the store")
        return _commit(row)

    # ------------------------------------------------------------ reads
    def names(self) -> list[str]:
        """Return every profile name in the store, sorted."""
        return [row["name"] for row in self._conn.execute("SELECT DISTINCT name FROM profile_commits ORDER BY name")]

    def show(self, name: str, version: int | None = None) -> ProfileCommit:
        """Return version ``version`` of ``name``, or its latest version when None."""
        return self._find(self._conn, name, version)

    def log(self, name: str) -> list[ProfileCommit]:
        """Return every version of ``name``, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_COMMIT_COLUMNS} FROM profile_commits WHERE name = ? ORDER BY version", (name,)
        ).fetchall()
        if not rows:
            raise UnknownProfileError(f"no profile {name!r} in the store")
        return [_commit(row) for row in rows]

    def diff(self, name: str, v1: int, v2: int) -> list[ConfigChange]:
        """Return the changed keys from ``v1`` to ``v2`` of ``name``, sorted by key."""
        return diff_configs(self.show(name, v1).tree(), self.show(name, v2).tree())

    def activations(self, name: str | None = None) -> list[Activation]:
        """Return every activation (of ``name`` only, when given), oldest first."""
        rows = self._conn.execute(f"SELECT {_ACTIVATION_COLUMNS} FROM profile_activations ORDER BY id").fetchall()
        return [_activation(row) for row in rows if name is None or row["name"] == name]

    def head_activation_id(self) -> int | None:
        """Return the id of the latest activation: one read of the table's primary key (for watchers)."""
        row = self._conn.execute("SELECT id FROM profile_activations ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else row["id"]

    def head_activation(self) -> Activation | None:
        """Return the latest activation, or None when nothing was ever activated."""
        return self._head(self._conn)

    def active_commit(self) -> ProfileCommit:
        """Return the commit of the latest activation.

        Raises
        ------
        ProfileError
            When nothing has been activated.
        """
        head = self.head_activation()
        if head is None:
            raise ProfileError("no profile is active (activate one with `acts profile activate V --profile NAME`)")
        return self._resolve(head)

    def active_at(self, seq: int) -> tuple[str, RiskProfileSpec]:
        """Return the version string and validated spec activated by activation ``seq``."""
        row = self._conn.execute(f"SELECT {_ACTIVATION_COLUMNS} FROM profile_activations WHERE id = ?", (seq,)).fetchone()
        if row is None:
            raise UnknownProfileError(f"no activation #{seq} in the store")
        commit = self._resolve(_activation(row))
        return commit.version_string, commit.spec()

    def active(self) -> tuple[str, RiskProfileSpec]:
        """Return the active profile's version string (``balanced@v3#<hash12>``) and its validated spec.

        Raises
        ------
        ProfileIntegrityError
            When the active commit does not match its hashes or no longer validates.
        """
        commit = self.active_commit()
        return commit.version_string, commit.spec()

    def _resolve(self, activation: Activation) -> ProfileCommit:
        commit = self._find(self._conn, activation.name, activation.version)
        if commit.chain_hash != activation.commit_chain_hash:
            raise ProfileIntegrityError(
                f"activation #{activation.seq} of profile {activation.name!r} v{activation.version} "
                "does not match the commit's chain hash"
            )
        return commit

    # ------------------------------------------------------------ writes
    def set(
        self, name: str, changes: Mapping[str, Any], author: str, reason: str, expected_parent: int
    ) -> ProfileCommit:
        """Commit ``changes`` (dotted keys) on top of ``expected_parent``; return the new commit.

        Raises
        ------
        StaleProfileError
            When ``expected_parent`` is not the latest version (another edit won); nothing is written.
        ProfileValueError
            When a value breaks a bound or a key is unknown, naming the field, the bound and the value.
        NoChangeError
            When the changes leave the content identical to the parent (naming the values it already holds).
        """
        author, reason = check_attribution(author, reason)
        with self._transaction() as conn:
            self._refuse_broken_chain("commit")
            parent = self._find(conn, name, None)
            if expected_parent > parent.version:
                raise UnknownProfileError(
                    f"profile {name!r} v{expected_parent} does not exist: the latest is v{parent.version}; nothing "
                    f"written (base the change on v{parent.version}, or leave --parent out)"
                )
            if parent.version != expected_parent:
                raise StaleProfileError(name, expected_parent, parent.version)
            # (A parent whose content does not match its hash is caught above: the chain is broken.)
            context = f"profile {name!r} not changed (v{parent.version} stays the latest)"
            spec = validate_profile(apply_changes(parent.tree(), changes), context)
            content = canonical_json(spec)
            if content == parent.content:
                held = ", ".join(f"{key}={_held(parent.tree(), key)}" for key in sorted(changes))
                raise NoChangeError(name, f"v{parent.version} already holds {held}")
            return self._insert_commit(
                conn, name, parent.version + 1, parent, parent.chain_hash, content, author, reason
            )

    def activate(self, name: str, version: int, author: str, reason: str) -> Activation:
        """Make ``name`` v``version`` the active profile; the engine picks it up at its next event.

        Raises
        ------
        UnknownProfileError
            When the version does not exist.
        ProfileIntegrityError
            When its content does not match its hash or no longer validates.
        NoChangeError
            When it is already the active version.
        """
        author, reason = check_attribution(author, reason)
        with self._transaction() as conn:
            self._refuse_broken_chain("activation")
            commit = self._find(conn, name, version)
            commit.spec()
            head = self._head(conn)
            if head is not None and (head.name, head.version) == (name, version):
                raise NoChangeError(name, f"v{version} is already active")
            return self._insert_activation(conn, commit, author, reason)

    def _refuse_broken_chain(self, what: str) -> None:
        report = self.verify_chain()
        if not report.ok:
            raise BrokenChainError(what, report.problems, self.path)

    # ------------------------------------------------------------ audit
    def verify_chain(self) -> ChainReport:
        """Recompute every content hash and chain hash; report each row that does not match.

        An edited row breaks its own hashes; a deleted row breaks its successor's link. (Deleting the newest
        rows leaves a shorter valid chain: compare the heads with a copy kept elsewhere, such as run records.)
        """
        problems: list[str] = []
        commits = [_commit(r) for r in self._conn.execute(
            f"SELECT {_COMMIT_COLUMNS} FROM profile_commits ORDER BY name, version"
        )]
        by_key: dict[tuple[str, int], ProfileCommit] = {}
        heads: dict[str, ProfileCommit] = {}
        for commit in commits:
            previous = heads.get(commit.name)
            where = f"profile {commit.name!r} v{commit.version}"
            expected_version = 1 if previous is None else previous.version + 1
            expected_parent = None if previous is None else previous.version
            parent_chain = GENESIS if previous is None else previous.chain_hash
            if (commit.version, commit.parent_version) != (expected_version, expected_parent):
                problems.append(
                    f"{where}: expected v{expected_version} with parent {expected_parent}, "
                    f"found parent {commit.parent_version} (a version is missing or renumbered)"
                )
            if sha256_hex(commit.content) != commit.content_hash:
                problems.append(f"{where}: content does not match its content hash")
            recomputed = commit_chain_hash(
                parent_chain, commit.name, commit.version, commit.parent_version,
                commit.content_hash, commit.author, commit.ts_ms, commit.reason,
            )
            if recomputed != commit.chain_hash:
                problems.append(f"{where}: chain hash does not match the row (edited) or its parent's chain")
            by_key[(commit.name, commit.version)] = commit
            heads[commit.name] = commit
        activations = self.activations()
        previous_chain = GENESIS
        for activation in activations:
            where = f"activation #{activation.seq} ({activation.name!r} v{activation.version})"
            target = by_key.get((activation.name, activation.version))
            if target is None or target.chain_hash != activation.commit_chain_hash:
                problems.append(f"{where}: does not match any commit's chain hash")
            recomputed = activation_chain_hash(
                previous_chain, activation.name, activation.version, activation.commit_chain_hash,
                activation.author, activation.ts_ms, activation.reason,
            )
            if recomputed != activation.chain_hash:
                problems.append(f"{where}: chain hash does not match the row (edited) or the previous activation")
            previous_chain = activation.chain_hash
        head_list = tuple((name, c.version, c.chain_hash) for name, c in sorted(heads.items()))
        return ChainReport(len(heads), len(commits), len(activations), head_list, tuple(problems))

    # ------------------------------------------------------------ lifecycle


def home_database(home: Path) -> Path:
    """Return ``home/acts.db``, creating ``home`` if needed."""
    home.mkdir(parents=True, exist_ok=True)
    return home / DATABASE_NAME
