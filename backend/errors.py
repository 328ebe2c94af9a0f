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


class ArtifactError(ActsError):
    """A run folder's file is missing, unreadable or corrupted; the message names the file and what is wrong."""


class ControlError(ActsError):
    """A control-plane action (kill switch) was refused; the message names the field and the value."""


class AuditError(ActsError):
    """An audit (config-diff replay, run comparison) cannot be produced as asked."""


class TrainingTaskError(ModelError):
    """A training task failed after its retries; names the scope (symbol or ``global``) and the fold."""

    def __init__(self, message: str, scope: str, fold: int) -> None:
        super().__init__(message)
        self.scope = scope
        self.fold = fold


class ClusterError(ActsError):
    """The Ray cluster at a configured address cannot be reached, or its workers run other library versions."""


class RegistryError(ModelError):
    """A model registry record is missing, malformed, or asked for a transition its status forbids."""


class PromotionRefused(ModelError):
    """A candidate failed one or more promotion gates; the message lists each with figure and bound."""


class ProviderCallRefused(ConfigError):
    """A market data provider call is forbidden by the active policy (e.g. during training)."""


class ProviderError(DataError):
    """A market data provider failed or answered with an error after every retry."""


class PayloadError(DataError):
    """A provider payload cannot be turned into bars; its batch is quarantined, the lake is unchanged."""


class SandboxError(ActsError):
    """An API emulator cannot start or serve as asked (port taken, bad bounds)."""


class BundleError(ModelError):
    """A shipped model bundle cannot be built, installed, rolled back or used as asked."""


class BundleRefused(BundleError):
    """Verification refused a bundle; ``reason`` names the check, the message the file, hash or version."""

    def __init__(self, message: str, reason: object) -> None:
        super().__init__(message)
        self.reason = reason
