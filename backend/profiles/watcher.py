"""Engine pickup of the active profile: cheap to ask on every event, fresh after every activation."""

from __future__ import annotations

from backend.config.schema import RiskProfileSpec
from backend.profiles.errors import ProfileError
from backend.profiles.store import ProfileStore


class ProfileWatcher:
    """Return the active profile, re-reading it only when a new activation appears.

    Each call costs one read of the activations table's primary key; the commit is loaded and
    validated only when that id changes, so an activation committed between two events (by any
    process sharing the database) is used from the next event on.
    """

    def __init__(self, store: ProfileStore) -> None:
        self._store = store
        self._cached: tuple[int, str, RiskProfileSpec] | None = None

    def current(self) -> tuple[str, RiskProfileSpec]:
        """Return ``(profile_version, spec)`` of the active profile.

        Raises
        ------
        ProfileError
            When nothing is active; ``ProfileIntegrityError`` when the active commit is not usable.
        """
        seq = self._store.head_activation_id()
        if seq is None:
            raise ProfileError("no profile is active (activate one with `acts profile activate V --profile NAME`)")
        if self._cached is None or self._cached[0] != seq:
            version, spec = self._store.active_at(seq)
            self._cached = (seq, version, spec)
        return self._cached[1], self._cached[2]
