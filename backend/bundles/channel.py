"""The update channel: bundles fetched from a git remote and path, verified, installed on confirmation or policy.

``conf/bundles/channel.yaml`` sets the bundle line followed (``bundle``), the remote (``null``: this
repository: its ``origin`` remote when the checkout has one, else the checkout's own folder, with
no network), the ref and the path inside it (default ``bundles``), and the policy (``confirm``: the
operator confirms each install; ``auto``: a verified newer bundle is installed). A remote is
fetched into a bare cache repository in ``$ACTS_HOME/bundles/channel.git``; the bundle folders
are extracted with ``git archive`` into a temporary folder, verified like any bundle, and
installed through the store (staging, verify, one rename, smoke check, rollback on failure).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError

from backend.bundles.compat import CONF_DIR, REPO, Runtime, parse_version
from backend.bundles.store import BundleStore, InstallResult
from backend.bundles.use import Candidate, newest, scan
from backend.config.errors_format import format_validation_error
from backend.config.schema import Name, Spec
from backend.errors import BundleError
from backend.home import Home

GIT = "git"
GIT_TIMEOUT_S = 120


class ChannelSpec(Spec):
    """Where updates come from and whether they install without asking."""

    bundle: Name
    remote: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    ref: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_./-]+$")] = "main"
    path: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "bundles"
    policy: Literal["confirm", "auto"] = "confirm"


def load_channel(config: Path = CONF_DIR / "bundles" / "channel.yaml", **overrides: object) -> ChannelSpec:
    """Read the channel config and apply ``overrides`` (None values are ignored).

    Raises
    ------
    BundleError
        When the file is missing or a field is invalid (named).
    """
    if not config.is_file():
        raise BundleError(f"no update channel config at {config}")
    raw = {**yaml.safe_load(config.read_text(encoding="utf-8")), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ChannelSpec.model_validate(raw)
    except ValidationError as error:
        raise BundleError(f"update channel config {config} is invalid:\n{format_validation_error(error)}") from error


def _git(args: list[str], cwd: Path | None = None) -> bytes:
    try:
        done = subprocess.run(
            [GIT, *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BundleError(f"git {args[0]} failed: {error}") from error
    if done.returncode != 0:
        raise BundleError(f"git {' '.join(args[:2])} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def origin_of(repo: Path) -> str | None:
    """Return the ``origin`` remote URL of the checkout at ``repo``, or None when it has none."""
    try:
        return _git(["config", "--get", "remote.origin.url"], cwd=repo).decode().strip() or None
    except BundleError:
        return None


@dataclass(frozen=True)
class Fetched:
    """The channel's bundle folders, extracted locally, with where they came from."""

    root: Path
    source: str


def fetch(channel: ChannelSpec, home: Home, repo: Path = REPO) -> Fetched:
    """Bring the channel's bundle folders to this machine; return where they are.

    With no remote and no ``origin``, the checkout's own ``channel.path`` is used as is (local first).

    Raises
    ------
    BundleError
        When git cannot fetch the ref or the path is absent from it.
    """
    remote = channel.remote if channel.remote is not None else origin_of(repo)
    if remote is None:
        return Fetched(repo / channel.path, f"{repo / channel.path} (no remote: this checkout)")
    cache = BundleStore.of_home(home).root / "channel.git"
    if not (cache / "HEAD").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", str(cache)])
    try:
        _git(["--git-dir", str(cache), "fetch", "--quiet", "--depth", "1", remote, f"+{channel.ref}:refs/acts/channel"])
    except BundleError as error:
        raise BundleError(f"update channel: cannot fetch {channel.ref} from {remote}: {error}") from error
    archive = _git(["--git-dir", str(cache), "archive", "--format=tar", "refs/acts/channel", "--", channel.path])
    root = BundleStore.of_home(home).root / "channel"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return Fetched(root / channel.path, f"{remote} {channel.ref}:{channel.path}")


@dataclass(frozen=True)
class UpdatePlan:
    """What an update found: every candidate, the newer one to install (if any), and why not otherwise."""

    source: str
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    note: str


def plan_update(channel: ChannelSpec, fetched: Fetched, store: BundleStore, runtime: Runtime) -> UpdatePlan:
    """Pick the newest verified bundle of the channel's line that is newer than the active one."""
    candidates = scan(fetched.root, runtime) if fetched.root.is_dir() else []
    best = newest(candidates, channel.bundle)
    state = store.state()
    if best is None:
        return UpdatePlan(fetched.source, tuple(candidates), None, f"no verified bundle {channel.bundle} on the channel")
    active = state.active
    if active is not None and active.split("/")[0] == channel.bundle:
        current = parse_version("version", active.split("/")[1])
        if parse_version("version", best.manifest.version) <= current:
            return UpdatePlan(fetched.source, tuple(candidates), None, f"up to date: {active} is active")
    chosen = next(c for c in candidates if c.verified is best)
    return UpdatePlan(fetched.source, tuple(candidates), chosen, f"{best.manifest.key} is newer than {active or 'nothing'}")


def apply_update(
    plan: UpdatePlan,
    channel: ChannelSpec,
    store: BundleStore,
    confirm: Callable[[str], bool],
    author: str,
    now_ms: int,
    runtime: Runtime,
) -> InstallResult | None:
    """Install the plan's bundle when the policy is ``auto`` or ``confirm`` answers yes; else return None."""
    if plan.chosen is None:
        return None
    key = plan.chosen.verified.manifest.key  # type: ignore[union-attr]
    if channel.policy != "auto" and not confirm(f"install {key} from {plan.source}?"):
        return None
    return store.install(plan.chosen.path, author, f"update from {plan.source} ({channel.policy})", now_ms, runtime)
