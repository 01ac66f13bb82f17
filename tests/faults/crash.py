"""Killing the client at chosen moments of its conversation with the servers.

The proxies call a ``KillSwitch`` at every *moment*: each request's arrival
(before it is forwarded) and each answer from the server (before it is
relayed). Armed with a process and a moment number, the switch sends that
process SIGKILL right there and the exchange is dropped, so the server either
never saw the request or acted on it while the client never learned the answer
-- the two ways a crash can cut a call. With a delay the kill lands that long
after the moment instead, while traffic (a throttled upload, say) is flowing.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import List, Optional

from tests.faults.proxy import ProxyEvent

#: Moments every plan kills at as well: IMS acted (or is about to) and the client never hears of it.
IMS_WRITE_MOMENTS = (
    "response ims POST /images",
    "request ims PATCH /images/{id}",
    "response ims PATCH /images/{id}",
    "response ims PATCH /jobs/{id}",
)


@dataclass(frozen=True)
class KillPoint:
    """Where one kill lands: at moment ``moment`` (1-based) or the first moment named ``label``, ``delay`` s later.

    A label reads ``"<stage> <proxy> <kind>"``, e.g. ``"response ims PATCH /images/{id}"``.
    """

    moment: int = 0
    delay: float = 0.0
    label: str = ""

    def describe(self, trace: List[str]) -> str:
        """The moment as a calibration run saw it, e.g. ``"13 (response ims POST /images)"``."""
        if self.label:
            return f"{self.label} (fixed)"
        seen = trace[self.moment - 1] if 0 < self.moment <= len(trace) else "past the calibrated end"
        later = f" +{self.delay * 1000:.0f} ms" if self.delay else ""
        return f"{self.moment} ({seen}){later}"

    def hits(self, moment: int, label: str) -> bool:
        """True when the kill belongs at this moment."""
        return label == self.label if self.label else moment == self.moment


def plan_kill_points(seed: int, moments: int, count: int) -> List[KillPoint]:
    """``count`` kill points spread over ``moments``, then one at each of ``IMS_WRITE_MOMENTS``.

    One random moment in each of ``count`` equal slices keeps every phase covered
    (token, record, uploads, manifest, link, job) whatever the seed; about every
    third of those is delayed a random few tens of milliseconds past its moment.
    """
    rng = random.Random(seed)
    points = []
    for index in range(count):
        low = 1 + index * moments // count
        high = max(low, (index + 1) * moments // count)
        delay = rng.uniform(0.0, 0.08) if rng.random() < 0.35 else 0.0
        points.append(KillPoint(rng.randint(low, high), round(delay, 3)))
    return points + [KillPoint(label=label) for label in IMS_WRITE_MOMENTS]


class KillSwitch:
    """The proxies' observer: counts moments and SIGKILLs the armed process at its kill point."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._point: Optional[KillPoint] = None
        self.moments = 0
        self.trace: List[str] = []
        #: What the kill cut, once it has fired.
        self.fired_at = ""

    def arm(self, process: Optional[subprocess.Popen], point: Optional[KillPoint]) -> None:
        """Start counting moments from zero; kill ``process`` at ``point`` (None: only count)."""
        with self._lock:
            self._process, self._point = process, point
            self.moments = 0
            self.trace = []
            self.fired_at = ""

    def disarm(self) -> None:
        """Stop killing (counting goes on)."""
        with self._lock:
            self._process = self._point = None

    def __call__(self, event: ProxyEvent) -> Optional[str]:
        exchange = event.exchange
        with self._lock:
            self.moments += 1
            here = f"{event.stage} {exchange.proxy} {exchange.kind}"
            self.trace.append(here)
            if self.fired_at and self._point is not None and not self._point.delay:
                return "drop"  # what a dead client still had in flight goes nowhere
            if self._point is None or self._process is None or not self._point.hits(self.moments, here):
                return None
            process, delay = self._process, self._point.delay
            self.fired_at = here
        if delay:
            threading.Timer(delay, _kill, (process,)).start()
            return None
        _kill(process)
        return "drop"


def _kill(process: subprocess.Popen) -> None:
    # send_signal does nothing once the process has been reaped, so a late timer cannot hit a reused pid.
    process.send_signal(signal.SIGKILL)
