"""SIGTERM and SIGINT in the CLI: clean up within a fixed time, say what is left, then end at once.

A pod gets SIGKILL 30 s after SIGTERM, so a signalled run must be over well
before that whatever S3 and IMS do. The signal becomes ``Interrupted`` in the
main thread; the run's undo then gets ``Interrupted.CLEANUP_SECONDS`` with
short S3 timeouts and names what it could not remove in the final line. Once
that line is written the process ends (``os._exit``): threads still waiting on
a server that does not answer never get to run after it. Should anything hang
even so, a timer writes the final line at ``EXIT_AFTER_SIGNAL`` and ends the
process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Dict, Optional

from ..errors import ExitStatus, Interrupted
from . import collector

#: Seconds after SIGTERM/SIGINT by which the process has ended, whatever S3 and IMS do.
EXIT_AFTER_SIGNAL = 20.0
#: Set once a signal interrupted a run in this process: it then ends right after its final line.
INTERRUPTED = threading.Event()
_FINAL_LINE = threading.Lock()
_final_line_written = threading.Event()


def write_final_line(write: Callable[[], None]) -> None:
    """Run ``write`` (the CLI's last words); after a signal only the first caller writes, the watchdog or the run."""
    with _FINAL_LINE:
        if INTERRUPTED.is_set() and _final_line_written.is_set():
            return
        _final_line_written.set()
        write()


class SignalGuard:
    """Turns the first SIGINT/SIGTERM into ``Interrupted`` (later ones are ignored while cleanup runs).

    ``report(message)`` writes a failure as the final line; the watchdog timer
    uses it when cleanup is still not over ``EXIT_AFTER_SIGNAL`` s after the signal.
    """

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.previous: Dict[int, Any] = {}
        self.fired = False
        self.timer: Optional[threading.Timer] = None

    def __enter__(self) -> SignalGuard:
        # A new run in this process (tests drive the CLI in-process): its own final line, its own signal.
        INTERRUPTED.clear()
        _final_line_written.clear()
        if hasattr(signal, "SIGTERM"):
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.previous[signum] = signal.signal(signum, self._handle)
                except ValueError:  # not the main thread: leave signals alone
                    pass
        return self

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.fired:
            return
        self.fired = True
        INTERRUPTED.set()
        interrupted = Interrupted(signal.Signals(signum).name)
        self.timer = threading.Timer(EXIT_AFTER_SIGNAL, self._cut_short, (interrupted,))
        self.timer.daemon = True
        self.timer.start()
        raise interrupted

    def _cut_short(self, interrupted: Interrupted) -> None:
        """The watchdog: cleanup is still running; say what it had not removed and end the process."""
        left = ", ".join(interrupted.pending) or "unknown"
        self.report(f"{interrupted} (cleanup cut short after {EXIT_AFTER_SIGNAL:g} s; may still be present: {left})")
        end_process(int(ExitStatus.FAILURE))

    def __exit__(self, *exc: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def end_process(code: int) -> None:
    """Flush stdout and stderr and end the process at once, without joining any thread."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def exit_process(code: int) -> None:
    """End the CLI process with ``code``: at once after a signal (``end_process``), else as usual."""
    if INTERRUPTED.is_set():
        end_process(code)
    collector.before_exit()
    sys.exit(code)
