"""The local Ceph's health: garbage collection on demand, and a watcher that names a full cluster.

A full Ceph cluster does not refuse writes: it blocks them, and every S3
request hangs. The watcher reads the OSD's usage from its admin socket every
``HEALTH_POLL_S``; near full it asks the monitor, and once the cluster is full
it stops the gateway (so S3 requests fail at once instead of hanging) and
records the problem for ``local up`` and the tests to report. The gateway's
port then answers every request with HTTP 507 and an S3 error whose message
is that problem, so a client says the cluster is full, not that it cannot
connect.
"""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import escape

from ims_python_helper.local import ceph_base as base
from ims_python_helper.local.ceph_base import Daemon, admin_socket

LOGGER = logging.getLogger("ims_python_helper.local.ceph")


class _FullAnswer(http.server.BaseHTTPRequestHandler):
    """Every request: 507 with an S3 error naming the full cluster (``server.problem``)."""

    server: FullAnswerServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        # With Expect: 100-continue the client waits for this answer before sending the body.
        if length and "100-continue" not in self.headers.get("Expect", "").lower():
            while length > 0:
                chunk = self.rfile.read(min(length, 1024 * 1024))
                if not chunk:
                    break
                length -= len(chunk)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InsufficientStorage</Code>'
            f"<Message>{escape(self.server.problem)}</Message></Error>"
        ).encode()
        self.send_response(507)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FullAnswerServer(http.server.ThreadingHTTPServer):
    """Serves :class:`_FullAnswer` on the stopped gateway's address."""

    daemon_threads = True

    def __init__(self, address: Any, problem: str) -> None:
        self.problem = problem
        super().__init__(address, _FullAnswer)


class HealthWatch:
    """The health methods of ``CephRgw`` (a mixin: the daemons and the commands that reach them are the subclass's)."""

    root: Path
    log_dir: Path
    host: str
    _rgw_port: int
    _full_answer: Optional[FullAnswerServer]
    store: str
    store_bytes: int
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
        if self.store == "memstore":
            more = f"a larger --memstore-mb or {base.MEMSTORE_ENV}, or --ceph-store bluestore"
        else:
            more = f"more free disk or a larger {base.BLUESTORE_ENV}"
        return (
            f"Ceph cluster is full ({', '.join(checks)}): {'; '.join(details)}; "
            f"its {self.store_bytes // 1024**2} MiB {self.store} holds no more, so its gateway was stopped "
            f"(start the stack again, with {more}; logs in {self.log_dir})"
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
                self._answer_full(problem)
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

    def _answer_full(self, problem: str) -> None:
        """Answer on the gateway's port that the cluster is full, until stop() (best effort: the port may be taken)."""
        try:
            server = FullAnswerServer((self.host, self._rgw_port), problem)
        except OSError as err:
            LOGGER.warning("cannot answer on the gateway's port %s that the cluster is full: %s", self._rgw_port, err)
            return
        self._full_answer = server
        threading.Thread(target=server.serve_forever, name="ceph-full-answer", daemon=True).start()

    def _stop_full_answer(self) -> None:
        server, self._full_answer = self._full_answer, None
        if server is not None:
            server.shutdown()
            server.server_close()
