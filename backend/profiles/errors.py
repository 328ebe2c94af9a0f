"""Errors of the profile store, named for what the caller must do."""

from __future__ import annotations

from backend.errors import ActsError, ConfigError


class ProfileError(ActsError):
    """A profile operation cannot be done as asked; nothing was written."""


class UnknownProfileError(ProfileError):
    """The store holds no such profile, or no such version of it."""


class StaleProfileError(ProfileError):
    """An edit was based on a version that is no longer the latest: review the newer version and retry."""

    def __init__(self, name: str, expected_parent: int, latest: int) -> None:
        super().__init__(
            f"profile {name!r} edit based on v{expected_parent} is stale: the latest is v{latest}; nothing written "
            f"(review `acts profile diff {expected_parent} {latest} --profile {name}` and set again on v{latest})"
        )
        self.name = name
        self.expected_parent = expected_parent
        self.latest = latest


class NoChangeError(ProfileError):
    """An edit or activation that would change nothing (a correct refusal: there is nothing to do); nothing was written.

    Every such message ends with :data:`NO_CHANGE`, so a caller that sees only the text (a script
    reading ``acts`` output, the fuzz drill) can tell it from a refusal of a bad value.
    """

    def __init__(self, name: str, what: str) -> None:
        super().__init__(f"profile {name!r}: {what}; {NO_CHANGE}")
        self.name = name


NO_CHANGE = "no change to make, nothing written"


class ProfileValueError(ConfigError):
    """A change breaks the schema (a bound, an unknown key, a cross-field rule); nothing was written."""


class ProfileIntegrityError(ProfileError):
    """A stored row does not match its hashes, or no longer validates: the active profile is not usable."""


class BrokenChainError(ProfileIntegrityError):
    """The stored history fails ``acts profile verify``: nothing may be committed or activated on top of it."""

    def __init__(self, what: str, problems: tuple[str, ...], path: object) -> None:
        super().__init__(
            f"no new {what} while the profile history is broken ({len(problems)} problems; first: {problems[0]}); "
            f"nothing written. Recover: stop every writer, restore {path} from a backup taken before the bad row "
            "(hash-chained rows cannot be repaired in place), then check with `acts profile verify`"
        )
        self.problems = problems
