"""Governed risk profiles: versioned, attributable, hash-chained commits and their activation."""

from backend.profiles.core import Activation, ProfileCommit, version_string
from backend.profiles.errors import (
    ProfileError,
    ProfileIntegrityError,
    ProfileValueError,
    StaleProfileError,
    UnknownProfileError,
)
from backend.profiles.store import ChainReport, ProfileStore, home_database
from backend.profiles.watcher import ProfileWatcher

__all__ = [
    "Activation",
    "ChainReport",
    "ProfileCommit",
    "ProfileError",
    "ProfileIntegrityError",
    "ProfileStore",
    "ProfileValueError",
    "ProfileWatcher",
    "StaleProfileError",
    "UnknownProfileError",
    "home_database",
    "version_string",
]
