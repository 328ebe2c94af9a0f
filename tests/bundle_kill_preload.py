"""Imported once by the forkserver of the install-kill trials, so each forked trial starts warm in milliseconds.

numba's GNU OpenMP layer refuses to run after a fork, so this server uses the fork-safe workqueue layer (the
scores are the same). The install code is imported and the scoring kernel loaded from numba's cache; nothing
runs polars here, whose thread pool does not survive a fork.
"""

import os

os.environ["NUMBA_THREADING_LAYER"] = "workqueue"

import bundle_helpers  # noqa: E402,F401
from backend.models import forest  # noqa: E402

forest.warm()
