"""Progress of artifact uploads: bars on a terminal, periodic log lines in pods, a summary at the end."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, TextIO, Tuple

LOGGER = logging.getLogger(__name__)
MB = 1000 * 1000


class Progress:
    """Receives transfer events; the base class ignores them (``--progress none``)."""

    def start(self, name: str, total: int) -> None:
        """An artifact of ``total`` bytes begins."""

    def advance(self, name: str, amount: int) -> None:
        """``amount`` more bytes of ``name`` were sent (negative when a part is retried)."""

    def finish(self, name: str) -> None:
        """An artifact is stored and verified."""

    def close(self, succeeded: bool) -> None:
        """All transfers ended."""


class _Totals:
    """Byte counts per artifact, shared by the displays."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: Dict[str, int] = {}
        self.done: Dict[str, int] = {}
        #: When the first artifact started (so the summary's rate is of the transfers alone).
        self.started: Optional[float] = None

    def add(self, name: str, total: int) -> None:
        with self.lock:
            if self.started is None:
                self.started = time.monotonic()
            self.totals[name] = total
            self.done[name] = 0

    def advance(self, name: str, amount: int) -> int:
        with self.lock:
            self.done[name] = max(0, min(self.totals.get(name, 0), self.done.get(name, 0) + amount))
            return self.done[name]

    def overall(self) -> tuple:
        with self.lock:
            return sum(self.done.values()), sum(self.totals.values())


def _rate(done: int, seconds: float) -> float:
    return done / MB / seconds if seconds > 0 else 0.0


class LogProgress(Progress):
    """For pods and pipes: a log line per artifact at most every ``interval`` seconds, and a summary."""

    def __init__(
        self, interval: float = 5.0, logger: Optional[logging.Logger] = None, direction: str = "upload"
    ) -> None:
        #: ``upload`` or ``download``: only the words of the log lines differ.
        self.direction = direction
        self.interval = interval
        self.logger = logger or LOGGER
        self.counts = _Totals()
        self._last: Dict[str, float] = {}
        self._begun: Dict[str, float] = {}

    def start(self, name: str, total: int) -> None:
        self.counts.add(name, total)
        now = time.monotonic()
        self._last[name] = now
        self._begun[name] = now

    def advance(self, name: str, amount: int) -> None:
        done = self.counts.advance(name, amount)
        now = time.monotonic()
        if now - self._last.get(name, 0.0) >= self.interval:
            self._last[name] = now
            self._report(name, done, now)

    def _report(self, name: str, done: int, now: float) -> None:
        total = self.counts.totals.get(name, 0) or 1
        self.logger.info(
            "%s: %d of %d bytes (%.0f%%), %.1f MB/s",
            name,
            done,
            total,
            100.0 * done / total,
            _rate(done, now - self._begun.get(name, now)),
        )

    def finish(self, name: str) -> None:
        total = self.counts.totals.get(name, 0)
        self.counts.advance(name, total)
        seconds = time.monotonic() - self._begun.get(name, time.monotonic())
        verb = "stored" if self.direction == "upload" else "downloaded"
        self.logger.info("%s: %s %d bytes in %.1f s (%.1f MB/s)", name, verb, total, seconds, _rate(total, seconds))

    def close(self, succeeded: bool) -> None:
        done, total = self.counts.overall()
        if self.counts.started is None:
            return
        seconds = time.monotonic() - self.counts.started
        if succeeded:
            self.logger.info(
                "%sed %d bytes in %.1f s (%.1f MB/s)", self.direction, total, seconds, _rate(total, seconds)
            )
        else:
            self.logger.info("%s stopped after %d of %d bytes in %.1f s", self.direction, done, total, seconds)


class _AroundBars:
    """A stream for log handlers while bars are shown: each record is written through ``tqdm.write``.

    tqdm clears the bars, prints the line and draws the bars again below it, so a
    log line never lands inside a bar line.
    """

    def __init__(self, stream: TextIO, write: Any) -> None:
        self.stream = stream
        self._write = write

    def write(self, text: str) -> None:
        self._write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def route_logs_around_bars(stream: TextIO, write: Any) -> List[Tuple[logging.StreamHandler, Any]]:
    """Point the root logger's handlers that write to ``stream`` (or a terminal) through ``write``.

    Returns what ``restore_log_streams`` needs to undo it.
    """
    swapped = []
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
            continue
        target = handler.stream
        if isinstance(target, _AroundBars):
            continue
        if target is stream or getattr(target, "isatty", lambda: False)():
            swapped.append((handler, handler.setStream(_AroundBars(target, write))))  # type: ignore[arg-type]
    return swapped


def restore_log_streams(swapped: List[Tuple[logging.StreamHandler, Any]]) -> None:
    """Undo ``route_logs_around_bars``."""
    for handler, stream in swapped:
        handler.setStream(stream)


class BarProgress(LogProgress):
    """For terminals: one tqdm bar per artifact and one for the total (needs the ``progress`` extra)."""

    def __init__(self, stream: TextIO, direction: str = "upload") -> None:
        super().__init__(interval=float("inf"), direction=direction)
        import tqdm  # optional dependency, checked by make_progress

        self._tqdm = tqdm.tqdm
        self._stream = stream
        self._bars: Dict[str, Any] = {}
        self._total_bar: Any = None
        self._lock = threading.Lock()
        self._routed: List[Tuple[logging.StreamHandler, Any]] = []

    def start(self, name: str, total: int) -> None:
        super().start(name, total)
        with self._lock:
            if self._total_bar is None:
                self._routed = route_logs_around_bars(self._stream, self._tqdm.write)
                self._total_bar = self._tqdm(
                    total=0, unit="B", unit_scale=True, desc="total", file=self._stream, position=0, leave=True
                )
            self._total_bar.total += total
            self._total_bar.refresh()
            self._bars[name] = self._tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=name,
                file=self._stream,
                position=len(self._bars) + 1,
                leave=True,
            )

    def advance(self, name: str, amount: int) -> None:
        self.counts.advance(name, amount)
        with self._lock:
            if name in self._bars:
                self._bars[name].update(amount)
            if self._total_bar is not None:
                self._total_bar.update(amount)

    def finish(self, name: str) -> None:
        with self._lock:
            bar = self._bars.get(name)
            if bar is not None:
                bar.update(bar.total - bar.n)
        super().finish(name)

    def close(self, succeeded: bool) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            if self._total_bar is not None:
                self._total_bar.close()
            restore_log_streams(self._routed)
            self._routed = []
        super().close(succeeded)


def make_progress(mode: str, stream: TextIO, direction: str = "upload") -> Progress:
    """Choose the display: ``bar`` on a terminal when tqdm is installed, ``log`` otherwise."""
    if mode == "none":
        return Progress()
    if mode in ("auto", "bar"):
        interactive = getattr(stream, "isatty", lambda: False)()
        if mode == "bar" or interactive:
            try:
                return BarProgress(stream, direction)
            except ImportError:
                if mode == "bar":
                    LOGGER.warning(
                        "progress bars need tqdm (pip install 'ims-python-helper[progress]'); using log lines"
                    )
    return LogProgress(direction=direction)
