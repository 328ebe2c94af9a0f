"""Subcommands, one module each. A module defines ``register(subparsers)``, which adds its parser
and sets ``handler=fn`` where ``fn(args, out, err) -> int``. ``acts`` finds them here by name, so
a new command never edits ``scripts/cli.py``."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    """Return every command module in this package, sorted by name."""
    names = sorted(info.name for info in pkgutil.iter_modules(__path__))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]
