"""A bar clock in a file: the Kraken emulator of one process and the session of another share its now."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

BAR_MS = 300_000


class FileBarClock:
    """Now in UTC ms, eight bytes of ``path`` (created with ``now_ms`` when given); ``sleep`` moves it one bar."""

    def __init__(self, path: Path, now_ms: int | None = None, kill_after_ms: int = 0) -> None:
        if now_ms is not None:
            path.write_bytes(struct.pack("<qq", now_ms, kill_after_ms))
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), 16)

    def __call__(self) -> int:
        return self.now_ms()

    def now_ms(self) -> int:
        return int(struct.unpack_from("<q", self._map, 0)[0])

    @property
    def kill_after_ms(self) -> int:
        """The bar time after which the worker's settlement kill may fire."""
        return int(struct.unpack_from("<q", self._map, 8)[0])

    def sleep(self, seconds: float) -> None:
        struct.pack_into("<q", self._map, 0, self.now_ms() + BAR_MS)
