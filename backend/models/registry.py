"""The model registry: one folder per trained model version, with its bundle, lineage record and status.

``<root>/<model_version>/`` holds ``bundle/`` (a verified model bundle) and ``record.json``
(lineage, metrics, status and the history of status changes). A record is written into a hidden
temporary folder and renamed into place, so a failed or interrupted run leaves nothing a reader
could take for a model. Status changes follow a transition table; nothing is written unless the
transition is allowed.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from backend.errors import ModelError, RegistryError
from backend.home import Home
from backend.models.bundle import ModelBundle, load_bundle, save_bundle


class ModelStatus(str, enum.Enum):
    """Where a registered model stands: only a promoted model may drive paper, shadow or live runs."""

    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    RETIRED = "retired"


class StatusTrigger(str, enum.Enum):
    """What may happen to a registered model."""

    PROMOTE = "promote"
    RETIRE = "retire"


TRANSITIONS = {
    (ModelStatus.CANDIDATE, StatusTrigger.PROMOTE): ModelStatus.PROMOTED,
    (ModelStatus.CANDIDATE, StatusTrigger.RETIRE): ModelStatus.RETIRED,
    (ModelStatus.PROMOTED, StatusTrigger.RETIRE): ModelStatus.RETIRED,
}
_VERSION = re.compile(r"^[A-Za-z0-9_.-]+@[0-9a-f]{16}$")


def next_status(status: ModelStatus, trigger: StatusTrigger) -> ModelStatus:
    """Return the status after ``trigger``, or raise RegistryError for a transition the table lacks."""
    if (status, trigger) not in TRANSITIONS:
        raise RegistryError(f"a {status.value} model cannot be {trigger.value}d")
    return TRANSITIONS[(status, trigger)]


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class ModelRegistry:
    """A folder of registered model versions."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of_home(cls, home: Home) -> ModelRegistry:
        """Return the registry of a user's home: ``$ACTS_HOME/registry/models``."""
        return cls(home.root / "registry" / "models")

    def path(self, version: str) -> Path:
        """Return the folder of ``version``; refuse anything that is not a model version."""
        if not _VERSION.match(version):
            raise RegistryError(f"'model' must look like <name>@<16 hex digits>, was {version!r}")
        return self.root / version

    def has(self, version: str) -> bool:
        """Return whether ``version`` is registered."""
        return (self.path(version) / "record.json").is_file()

    def register(self, bundle: ModelBundle, record: dict[str, Any], now_ms: int, reason: str) -> dict[str, Any]:
        """Register ``bundle`` as a candidate with ``record``; return the stored record.

        Registering a version that is already present changes nothing and returns its record
        (the same spec on the same data trains the same models).
        """
        version = bundle.version
        target = self.path(version)
        if self.has(version):
            return self.load(version)
        stored = dict(
            record,
            version=version,
            status=ModelStatus.CANDIDATE.value,
            created_ms=now_ms,
            history=[{"status": ModelStatus.CANDIDATE.value, "at_ms": now_ms, "reason": reason}],
        )
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        save_bundle(bundle, staging / "bundle")
        _write_json(staging / "record.json", stored)
        os.replace(staging, target)
        return stored

    def load(self, version: str) -> dict[str, Any]:
        """Return the record of ``version``, or raise RegistryError naming it."""
        path = self.path(version) / "record.json"
        if not path.is_file():
            raise RegistryError(f"model {version} is not in the registry at {self.root}")
        return json.loads(path.read_text(encoding="utf-8"))

    def bundle(self, version: str) -> ModelBundle:
        """Return the verified bundle of ``version``."""
        self.load(version)
        return load_bundle(self.path(version) / "bundle")

    def records(self) -> list[dict[str, Any]]:
        """Return every record, oldest first (ties by version)."""
        if not self.root.is_dir():
            return []
        found = [
            json.loads((p / "record.json").read_text(encoding="utf-8"))
            for p in sorted(self.root.iterdir())
            if not p.name.startswith(".") and (p / "record.json").is_file()
        ]
        return sorted(found, key=lambda r: (r["created_ms"], r["version"]))

    def promoted(self) -> dict[str, Any] | None:
        """Return the promoted record, or None when no model is promoted."""
        for record in self.records():
            if record["status"] == ModelStatus.PROMOTED.value:
                return record
        return None

    def promoted_bundle(self) -> ModelBundle:
        """Return the promoted model's verified bundle, or raise ModelError when none is promoted."""
        record = self.promoted()
        if record is None:
            raise ModelError(
                f"no promoted model in {self.root}: train one (acts train) and promote it (acts models promote MODEL --author WHO)"
            )
        return self.bundle(record["version"])

    def transition(self, version: str, trigger: StatusTrigger, reason: str, now_ms: int, *, author: str) -> dict[str, Any]:
        """Apply ``trigger`` to ``version``, append it to the history (with who and why), and return the new record."""
        record = self.load(version)
        status = next_status(ModelStatus(record["status"]), trigger)
        record["status"] = status.value
        entry = {"status": status.value, "at_ms": now_ms, "author": author, "reason": reason}
        record["history"] = [*record["history"], entry]
        _write_json(self.path(version) / "record.json", record)
        return record
