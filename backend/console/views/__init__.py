"""The console's pages, one module each, found by name: a new page is a new module here.

A page module defines ``TITLE`` (menu text), ``SLUG`` (its URL path), ``ORDER`` (menu position,
lowest first) and ``render()``, which draws the page with Streamlit and calls only ``backend.control``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> list[ModuleType]:
    """Return every page module of this package, in menu order (``ORDER``, then ``SLUG``)."""
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
    return sorted(modules, key=lambda m: (m.ORDER, m.SLUG))


def page(slug: str) -> ModuleType:
    """Return the page module whose ``SLUG`` is ``slug``."""
    for module in discover():
        if module.SLUG == slug:
            return module
    raise KeyError(f"no console page {slug!r}; pages: {[m.SLUG for m in discover()]}")
