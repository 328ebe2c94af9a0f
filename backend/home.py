"""The ACTS home: the one folder a user's install writes (lake, runs, database, logs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def acts_home() -> Path:
    """Return ``$ACTS_HOME`` if set, else ``~/.acts``."""
    configured = os.environ.get("ACTS_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".acts"


@dataclass(frozen=True)
class Home:
    """Paths inside an ACTS home."""

    root: Path

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def runs(self) -> Path:
        return self.root / "runs"
