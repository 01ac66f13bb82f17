"""What a ranged download needs beyond a file: no file at all (a hash-only read), or the spans an earlier run kept.

``DiscardWriter`` stands in for ``ranges.FileWriter`` when only the md5 is
wanted (``image verify``): the bytes go through the in-order hasher and
nowhere else. ``SpanLedger`` tells a download how many bytes of each span an
earlier, interrupted run already wrote into the file, and is told as each
span's written count grows, so the next run asks only for the rest
(``image export``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List


class DiscardWriter:
    """A writer that keeps nothing: the bytes are hashed and dropped."""

    def write(self, view: memoryview, offset: int) -> None:
        """Drop ``view``."""

    def close(self) -> None:
        """Nothing to close."""


@dataclass
class SpanLedger:
    """Bytes already in the file per span (from its start), and the call that records new ones.

    ``written[i]`` bytes of span ``i`` are in the file and are read back (and
    hashed in order) instead of being fetched again; ``record(i, n)`` is
    called once span ``i`` has ``n`` bytes in the file.
    """

    written: List[int]
    record: Callable[[int, int], None]

    def kept(self, index: int, size: int) -> int:
        """Bytes of span ``index`` (of ``size`` bytes) that need not be fetched again."""
        return min(self.written[index], size) if index < len(self.written) else 0
