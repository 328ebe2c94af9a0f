"""Error tree for ACTS: one base, a small tree per domain, named for what the caller must do."""


class ActsError(Exception):
    """Base of every error ACTS raises on purpose."""


class ConfigError(ActsError):
    """A configuration is invalid; the message names the field, the bound and the value."""


class DataError(ActsError):
    """Market data is missing, malformed or inconsistent."""


class StrategyGraphError(ConfigError):
    """A strategy graph does not compile; the message names the state and the transition."""


class ModelError(ActsError):
    """A model cannot be trained, loaded or used as asked."""


class ReplayError(ActsError):
    """A recorded run cannot be replayed from its inputs."""
