"""The local Ceph's health: garbage collection on demand, and a watcher that names a full cluster.

A full Ceph cluster does not refuse writes: it blocks them, and every S3
request hangs. The watcher reads the OSD's usage from its admin socket every
``HEALTH_POLL_S``; near full it asks the monitor, and once the cluster is full
it stops the gateway (so S3 requests fail at once instead of hanging) and
records the problem for ``local up`` and the tests to report.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

from ims_python_helper.local import ceph_base as base
from ims_python_helper.local.ceph_base import Daemon, admin_socket

LOGGER = logging.getLogger("ims_python_helper.local.ceph")


class HealthWatch:
    """The health methods of ``CephRgw`` (a mixin: the daemons and the commands that reach them are the subclass's)."""

    root: Path
    log_dir: Path
    memstore_bytes: int
    problem: Optional[str]
    _daemons: List[Daemon]
    _quit: threading.Event
    _watching: threading.Event
    _watcher: Optional[threading.Thread]

    def _ceph(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def _radosgw_admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def usage(self) -> Dict[str, int]:
        """The OSD's ``stat_bytes`` (capacity) and ``stat_bytes_used``, read from its admin socket."""
        answer = admin_socket(self.root / "run" / f"osd.{base.OSD_ID}.asok", {"prefix": "perf dump"})
        counters = answer.get("osd", {})
        return {
            "stat_bytes": int(counters.get("stat_bytes", 0)),
            "stat_bytes_used": int(counters.get("stat_bytes_used", 0)),
        }

    def full_problem(self) -> Optional[str]:
        """Ask the monitor: a one-line error when it reports the cluster full, else None."""
        result = self._ceph("health", "detail", "--format=json", check=False)
        if result.returncode != 0:
            return None
        checks: Dict[str, Any] = json.loads(result.stdout or "{}").get("checks", {})
        full = [name for name in base.FULL_CHECKS if name in checks]
        if not full:
            return None
        details = [
            item.get("message", "")
            for name in full
            for item in [checks[name].get("summary", {}), *checks[name].get("detail", [])[:1]]
        ]
        return self._full_message(full, [d for d in details if d])

    def _full_message(self, checks: List[str], details: List[str]) -> str:
        return (
            f"Ceph cluster is full ({', '.join(checks)}): {'; '.join(details)}; "
            f"its {self.memstore_bytes // 1024**2} MiB memstore holds no more, so its gateway was stopped "
            f"(start the stack again, with a larger --memstore-mb or {base.MEMSTORE_ENV}; logs in {self.log_dir})"
        )

    def check_health(self) -> None:
        """Raise :class:`CephFullError` naming the problem once the watcher has found the cluster full."""
        if self.problem:
            raise base.CephFullError(self.problem)

    def collect_garbage(self) -> None:
        """Run RGW's garbage collector now over everything deleted, instead of waiting for its next pass."""
        self._radosgw_admin("gc", "process", "--include-all")

    def _start_watcher(self) -> None:
        self._quit.clear()
        self._watching.set()
        self._watcher = threading.Thread(target=self._watch, name="ceph-health", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while self._watching.is_set():
            try:
                usage = self.usage()
                used, capacity = usage["stat_bytes_used"], max(usage["stat_bytes"], 1)
                problem = self.full_problem() if used >= base.FULL_CHECK_RATIO * capacity else None
                if problem is None and used >= base.FULL_RATIO * capacity:
                    # The OSD's own count says full; the monitor (busy, or not yet told) has not said so yet.
                    problem = self._full_message(
                        ["OSD_FULL"],
                        [
                            f"osd.{base.OSD_ID} holds {used // 1024**2} MiB of its {capacity // 1024**2} MiB "
                            f"({used / capacity:.0%}; Ceph takes no writes past {base.FULL_RATIO:.0%})"
                        ],
                    )
            except (OSError, ValueError, base.CephError):
                problem = None  # a daemon is stopping or busy; the next round asks again
            if problem and self._watching.is_set():
                self._stop_gateway()  # first: whoever reads ``problem`` finds the gateway gone
                self.problem = problem
                LOGGER.error("%s", problem)
                return
            self._quit.wait(base.HEALTH_POLL_S)

    def _stop_gateway(self) -> None:
        """SIGKILL radosgw: a blocked gateway would hold every request (and its own SIGTERM) until the OSD frees."""
        for daemon in self._daemons:
            if daemon.name == base.RGW_NAME and not daemon.exited():
                daemon.process.kill()
                daemon.process.wait(timeout=base.STOP_TIMEOUT_S)
