"""The run's deadline: one point in time every wait, retry and request of a run is cut to fit before.

Kept apart from the OAuth2 session so the job pods' download engine can use
it without importing oauthlib (a few hundredths of a CPU second per start,
issue 20).
"""

from __future__ import annotations

import time
from typing import Optional

from ..errors import DeadlineExceeded


class Deadline:
    """A point in time the whole run must finish by; every wait is cut to fit before it."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds
        self._ends = None if seconds is None else time.monotonic() + seconds
        #: True once a signal cut the run short (``interrupt``): the time left is cleanup's, and fixed.
        self.interrupted = False

    def remaining(self) -> Optional[float]:
        """Seconds left, or None for no deadline."""
        if self._ends is None:
            return None
        return self._ends - time.monotonic()

    def check(self, doing: str) -> None:
        """Raise ``DeadlineExceeded`` if the deadline has passed."""
        left = self.remaining()
        if left is not None and left <= 0:
            if self.interrupted:
                raise DeadlineExceeded(f"the time cleanup gets after a signal ran out while {doing}")
            raise DeadlineExceeded(f"the run's deadline of {self.seconds:g} s passed while {doing}; raise --deadline")

    def allow_cleanup(self, seconds: float = 60.0) -> None:
        """Give cleanup after a failure ``seconds`` more, even when the deadline has passed (not after a signal)."""
        if self._ends is not None and not self.interrupted:
            self._ends = max(self._ends, time.monotonic() + seconds)

    def interrupt(self, until: float) -> None:
        """A signal arrived: cleanup ends every wait and request by ``until`` (a ``time.monotonic()`` time).

        Before or after the run's own deadline: like ``allow_cleanup``, this is cleanup's time, but fixed.
        """
        self.interrupted = True
        self._ends = until

    def cap(self, timeout: Optional[float]) -> Optional[float]:
        """``timeout`` shortened so it ends no later than the deadline (at least 0.1 s)."""
        left = self.remaining()
        if left is None:
            return timeout
        left = max(left, 0.1)
        return left if timeout is None else min(timeout, left)
