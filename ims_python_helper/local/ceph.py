"""A single-node Ceph RADOS Gateway on loopback, started from the distribution's packages.

Production IMS keeps its artifacts in Ceph RGW, so tests and benchmarks that
want the real server (its ETags, checksum handling and multipart rules) start
one here: one monitor, one OSD on ``memstore`` (objects live in RAM, nothing
touches a disk) and one ``radosgw``, each a child process of this one, with
every file under ``data_dir/ceph/``. Nothing reads or writes ``/etc/ceph``.

Debian 12 provides the programs::

    apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common

Start-up takes about 1.7 s; :meth:`CephRgw.stop` stops the gateway, then the
OSD, then the monitor (the gateway blocks for two minutes on shutdown when the
OSD has gone first), and runs at interpreter exit if the caller forgets.

A full Ceph cluster does not refuse writes: it blocks them, and every S3
request hangs. So the cluster does not fill silently: RGW's garbage collector
runs every few seconds (deleted, overwritten and aborted data is reclaimed in
about ``rgw gc processor period`` seconds, not after the default two hours),
and a watcher thread reads the OSD's usage from its admin socket every second
(no process is started for that). When the OSD is nearly full it asks the
monitor; once the monitor reports ``OSD_FULL`` or ``POOL_FULL`` the watcher
records the problem (:attr:`CephRgw.problem`, "Ceph cluster is full
(OSD_FULL): ...") and stops the gateway, so every S3 request fails at once
instead of hanging; ``local up`` and the test suite report it.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ims_python_helper.local.errors import LocalStackError, undone_on_error
from ims_python_helper.local.s3backend import DEFAULT_BUCKETS

#: Every program the backend runs; all come from the four packages in ``INSTALL_COMMAND``.
REQUIRED_PROGRAMS: Sequence[str] = (
    "radosgw",
    "ceph-mon",
    "ceph-osd",
    "ceph-authtool",
    "monmaptool",
    "ceph",
    "radosgw-admin",
)

#: How to get them on Debian 12 (about 64 MB download, 16 s).
INSTALL_COMMAND = "apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common"

#: Environment variable that sizes the in-RAM object store, in MiB, when the caller gives no size.
MEMSTORE_ENV = "IMS_LOCAL_CEPH_MEMSTORE_MB"

#: Default memstore capacity. Memstore allocates as objects arrive, so the cap
#: costs nothing until it is used; RAM use is about 1.8 times the data stored.
#: 2 GiB holds a typical boot image (rootfs, kernel, initrd) with room for one
#: overwrite, while a runaway test fills the OSD (a clear S3 error) before it
#: can exhaust a CI machine's memory. Set ``IMS_LOCAL_CEPH_MEMSTORE_MB`` for more.
DEFAULT_MEMSTORE_BYTES = 2 * 1024**3

#: Bounds on each step; start-up normally takes under 2 s in total.
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

#: How often the watcher reads the OSD's usage (one admin-socket round trip, no process).
HEALTH_POLL_S = 1.0
#: Share of the OSD's capacity from which the watcher asks the monitor whether the cluster is full
#: (Ceph's own ``mon osd nearfull ratio``; the OSD stops taking writes at 0.95).
FULL_CHECK_RATIO = 0.85
#: Ceph's ``mon osd full ratio``: past it the OSD takes no more writes. Memstore itself does not
#: stop at its size, so the watcher also acts on this when the monitor is slow to say so.
FULL_RATIO = 0.95
#: Health checks that mean writes block.
FULL_CHECKS = ("OSD_FULL", "POOL_FULL")
#: RGW's garbage collector runs this often (seconds); deleted data waits at most about that long.
GC_PERIOD_S = 5

LOGGER = logging.getLogger(__name__)

_CLUSTER = "ceph"
_MON_ID = "a"
_OSD_ID = 0
_RGW_NAME = "client.rgw.local"
_S3_UID = "ims-local"


class CephError(LocalStackError):
    """The local Ceph RGW could not be installed, started or stopped."""


class CephFullError(CephError):
    """The local Ceph cluster is full: it would block every write, so its gateway was stopped."""


def ceph_available() -> bool:
    """Return True when every program the backend runs is on ``PATH``."""
    return all(shutil.which(program) for program in REQUIRED_PROGRAMS)


def memstore_bytes_from_env(default: int = DEFAULT_MEMSTORE_BYTES) -> int:
    """Memstore capacity from ``IMS_LOCAL_CEPH_MEMSTORE_MB``, or ``default`` when it is unset."""
    raw = os.environ.get(MEMSTORE_ENV, "").strip()
    if not raw:
        return default
    # isdecimal() is exactly what int() reads as a plain number (no sign, no underscores, no spaces).
    if not raw.isdecimal() or int(raw) < 64:
        raise CephError(f"{MEMSTORE_ENV} must be a whole number of MiB, at least 64, not {raw!r}")
    return int(raw) * 1024**2


@dataclass
class _Daemon:
    """One long-running child process and the files that explain its death."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def exited(self) -> bool:
        # poll() reaps our own child, so a zombie reads as exited here.
        return self.process.poll() is not None


class CephRgw:
    """A Ceph monitor, OSD (memstore) and RADOS Gateway on 127.0.0.1, owned by this process.

    ``data_dir/ceph/`` holds the configuration, keys, daemon data, logs
    (``log/*.log``) and the daemons' console output (``log/*.out``).
    ``memstore_bytes`` caps the RAM the object store may fill; ``None`` takes
    ``IMS_LOCAL_CEPH_MEMSTORE_MB`` or :data:`DEFAULT_MEMSTORE_BYTES`.
    """

    name = "ceph"

    def __init__(self, data_dir: Path, memstore_bytes: Optional[int] = None, host: str = "127.0.0.1") -> None:
        self.root = Path(data_dir) / "ceph"
        self.memstore_bytes = memstore_bytes if memstore_bytes is not None else memstore_bytes_from_env()
        self.host = host
        self.conf = self.root / "ceph.conf"
        self.log_dir = self.root / "log"
        self._fsid = ""
        self._rgw_port = 0
        self._access_key = ""
        self._secret_key = ""
        self._daemons: List[_Daemon] = []
        self._started = False
        #: Why the cluster cannot take writes ("Ceph cluster is full (OSD_FULL): ..."), once the watcher saw it.
        self.problem: Optional[str] = None
        self._watching = threading.Event()
        self._quit = threading.Event()
        self._watcher: Optional[threading.Thread] = None

    @property
    def endpoint(self) -> str:
        """Base URL of the gateway, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self._rgw_port}"

    @property
    def access_key(self) -> str:
        """Access key id of the S3 user created at start-up."""
        return self._access_key

    @property
    def secret_key(self) -> str:
        """Secret key of that user."""
        return self._secret_key

    # -- start ---------------------------------------------------------------

    def start(self) -> None:
        """Create a fresh cluster under ``data_dir/ceph/``, start it, and create ``DEFAULT_BUCKETS``.

        Raises :class:`CephError` naming the apt command when the programs are
        missing, and naming the log file when a daemon dies or does not answer.
        Whatever was started is stopped again before the error propagates.
        """
        if self._started:
            return
        missing = [program for program in REQUIRED_PROGRAMS if not shutil.which(program)]
        if missing:
            raise CephError(
                f"Ceph programs not found on PATH ({', '.join(missing)}); install them with: {INSTALL_COMMAND}"
            )
        if self.root.exists():
            # A previous cluster's monitor store would clash with the new fsid.
            shutil.rmtree(self.root)
        for sub in ("log", "run", "keys", "mon", "osd", "rgw", "crash"):
            (self.root / sub).mkdir(parents=True)
        self._started = True
        atexit.register(self.stop)
        with undone_on_error(self.stop):
            self._bring_up()

    def _bring_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        self._fsid = str(uuid.uuid4())
        mon_v1, mon_v2, self._rgw_port = _free_ports(self.host, 3)
        self.conf.write_text(self._config_text(mon_v1, mon_v2))
        self._make_keys()
        monmap = self.root / "monmap"
        self._run(
            "monmaptool",
            "--create",
            "--fsid",
            self._fsid,
            "--addv",
            _MON_ID,
            f"[v2:{self.host}:{mon_v2},v1:{self.host}:{mon_v1}]",
            str(monmap),
        )
        self._run(
            "ceph-mon",
            "-c",
            str(self.conf),
            "--mkfs",
            "-i",
            _MON_ID,
            "--monmap",
            str(monmap),
            "--keyring",
            str(self._keyring("mon.")),
        )
        mon = self._spawn(f"mon.{_MON_ID}", "ceph-mon", "-f", "-i", _MON_ID)
        self._wait_until(mon, deadline, "answer `ceph mon stat`", lambda: self._ceph_ok("mon", "stat"))

        osd_uuid = str(uuid.uuid4())
        (self.root / "osd" / f"{_CLUSTER}-{_OSD_ID}").mkdir()
        self._ceph("osd", "new", osd_uuid, str(_OSD_ID))
        self._run(
            "ceph-osd", "-c", str(self.conf), "-i", str(_OSD_ID), "--mkfs", "--osd-uuid", osd_uuid, "--no-mon-config"
        )
        osd = self._spawn(f"osd.{_OSD_ID}", "ceph-osd", "-f", "-i", str(_OSD_ID))
        self._wait_until(osd, deadline, "come up in `ceph osd dump`", self._osd_up)

        rgw = self._spawn(_RGW_NAME, "radosgw", "-f", "-n", _RGW_NAME)
        self._wait_until(rgw, deadline, f"answer HTTP on {self.endpoint}", self._rgw_answers)

        self._access_key = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(20))
        self._secret_key = secrets.token_urlsafe(30)
        self._radosgw_admin(
            "user",
            "create",
            f"--uid={_S3_UID}",
            "--display-name=IMS local stack",
            f"--access-key={self._access_key}",
            f"--secret-key={self._secret_key}",
        )
        self._create_buckets(DEFAULT_BUCKETS)
        self._start_watcher()

    def _config_text(self, mon_v1: int, mon_v2: int) -> str:
        root = self.root
        return f"""\
# Written by ims_python_helper.local.ceph for one throw-away cluster; every path stays in {root}.
[global]
fsid = {self._fsid}
mon host = [v2:{self.host}:{mon_v2},v1:{self.host}:{mon_v1}]
mon initial members = {_MON_ID}
public addr = {self.host}
cluster addr = {self.host}
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {root}/keys/$name.keyring
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
log to stderr = false
err to stderr = true
crash dir = {root}/crash
mon data = {root}/mon/$cluster-$id
osd data = {root}/osd/$cluster-$id
# Objects live in RAM; the cap keeps a runaway test from exhausting memory.
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
# One OSD: replicate once, and place replicas per OSD rather than per host
# (the crush rule is made with the monitor, so this must be here from the start).
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# A nearly full host disk must not stop the monitor; its store is tiny.
mon data avail warn = 1
mon data avail crit = 0
# Throw-away cluster on loopback: the reclaim warning would keep health at WARN for nothing.
mon warn on insecure global id reclaim allowed = false
# Pool creation waits on paxos rounds: 0.05 s makes start-up 1.5 s instead of 13 s.
paxos propose interval = 0.05

[mon]
keyring = $mon_data/keyring

[{_RGW_NAME}]
rgw frontends = beast endpoint={self.host}:{self._rgw_port}
rgw data = {root}/rgw
# Reclaim deleted, overwritten and aborted objects' RAM within seconds, not after the
# default 2 hours: collectable at once, a collector pass every few seconds, and a pass
# may run as long as the period (its lease) before the next one takes over.
rgw gc obj min wait = 0
rgw gc processor period = {GC_PERIOD_S}
rgw gc processor max time = {GC_PERIOD_S}
"""

    def _keyring(self, entity: str) -> Path:
        return self.root / "keys" / f"{entity.rstrip('.')}.keyring"

    def _make_keys(self) -> None:
        mon_keyring = self._keyring("mon.")
        self._run(
            "ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"
        )
        entities: Dict[str, List[str]] = {
            "client.admin": ["mon", "allow *", "osd", "allow *", "mds", "allow *", "mgr", "allow *"],
            f"osd.{_OSD_ID}": ["mon", "allow profile osd", "mgr", "allow profile osd", "osd", "allow *"],
            _RGW_NAME: ["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"],
        }
        for entity, caps in entities.items():
            keyring = self._keyring(entity)
            cap_args: List[str] = []
            for service, cap in zip(caps[::2], caps[1::2]):
                cap_args += ["--cap", service, cap]
            self._run("ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n", entity, *cap_args)
            # The monitor is made from this keyring, so it knows every key from its first start.
            self._run("ceph-authtool", str(mon_keyring), "--import-keyring", str(keyring))

    def _create_buckets(self, buckets: Sequence[str]) -> None:
        # Imported here: boto3 costs a noticeable part of a second, and only start-up needs it.
        from ims_python_helper.local.s3client import backend_s3_client

        client = backend_s3_client(self)
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)

    # -- readiness probes ----------------------------------------------------

    def _ceph_ok(self, *args: str) -> bool:
        return self._ceph(*args, check=False).returncode == 0

    def _osd_up(self) -> bool:
        result = self._ceph("osd", "dump", "--format=json", check=False)
        if result.returncode != 0:
            return False
        osds = json.loads(result.stdout or "{}").get("osds", [])
        return any(osd.get("osd") == _OSD_ID and osd.get("up") == 1 for osd in osds)

    def _rgw_answers(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self._rgw_port, timeout=1)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
            return True  # Any HTTP answer, even 403, means the frontend is serving.
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _wait_until(self, daemon: _Daemon, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        delay = 0.02
        while True:
            if daemon.exited():
                raise CephError(
                    f"{daemon.name} exited with status {daemon.process.returncode} during start-up; "
                    f"see {daemon.log_file} and {self._console_file(daemon.name)}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise CephError(f"{daemon.name} did not {what} within {START_TIMEOUT_S:.0f} s; see {daemon.log_file}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # -- health ----------------------------------------------------------------

    def usage(self) -> Dict[str, int]:
        """The OSD's ``stat_bytes`` (capacity) and ``stat_bytes_used``, read from its admin socket."""
        answer = _admin_socket(self.root / "run" / f"osd.{_OSD_ID}.asok", {"prefix": "perf dump"})
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
        full = [name for name in FULL_CHECKS if name in checks]
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
            f"(start the stack again, with a larger --memstore-mb or {MEMSTORE_ENV}; logs in {self.log_dir})"
        )

    def check_health(self) -> None:
        """Raise :class:`CephFullError` naming the problem once the watcher has found the cluster full."""
        if self.problem:
            raise CephFullError(self.problem)

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
                problem = self.full_problem() if used >= FULL_CHECK_RATIO * capacity else None
                if problem is None and used >= FULL_RATIO * capacity:
                    # The OSD's own count says full; the monitor (busy, or not yet told) has not said so yet.
                    problem = self._full_message(
                        ["OSD_FULL"],
                        [
                            f"osd.{_OSD_ID} holds {used // 1024**2} MiB of its {capacity // 1024**2} MiB "
                            f"({used / capacity:.0%}; Ceph takes no writes past {FULL_RATIO:.0%})"
                        ],
                    )
            except (OSError, ValueError, CephError):
                problem = None  # a daemon is stopping or busy; the next round asks again
            if problem and self._watching.is_set():
                self._stop_gateway()  # first: whoever reads ``problem`` finds the gateway gone
                self.problem = problem
                LOGGER.error("%s", problem)
                return
            self._quit.wait(HEALTH_POLL_S)

    def _stop_gateway(self) -> None:
        """SIGKILL radosgw: a blocked gateway would hold every request (and its own SIGTERM) until the OSD frees."""
        for daemon in self._daemons:
            if daemon.name == _RGW_NAME and not daemon.exited():
                daemon.process.kill()
                daemon.process.wait(timeout=STOP_TIMEOUT_S)

    # -- processes -----------------------------------------------------------

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("CEPH_ARGS", None)  # A caller's CEPH_ARGS could point at another cluster.
        env["CEPH_CONF"] = str(self.conf)
        return env

    def _console_file(self, daemon_name: str) -> Path:
        return self.log_dir / f"{daemon_name}.out"

    def _spawn(self, daemon_name: str, program: str, *args: str) -> _Daemon:
        with open(self._console_file(daemon_name), "wb") as console:
            process = subprocess.Popen(
                [program, "-c", str(self.conf), *args],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.root,
                # Own session: a Ctrl-C in the terminal reaches only us, and stop()
                # then ends the daemons in the order that does not hang radosgw.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        daemon = _Daemon(daemon_name, process, self.log_dir / f"{daemon_name}.log")
        self._daemons.append(daemon)
        return daemon

    def _run(
        self, *argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                argv,
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=self._env(),
                cwd=self.root,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise CephError(
                f"`{_describe(argv)}` did not finish within {timeout:.0f} s (logs in {self.log_dir})"
            ) from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise CephError(
                f"`{_describe(argv)}` failed with status {result.returncode}: "
                f"{detail[-1] if detail else 'no output'} (logs in {self.log_dir})"
            )
        return result

    def _ceph(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(
            "ceph", "-c", str(self.conf), "--connect-timeout", "10", *args, check=check, timeout=COMMAND_TIMEOUT_S
        )

    def _radosgw_admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(
            "radosgw-admin",
            "-c",
            str(self.conf),
            "--client-mount-timeout=10",
            "--rados-mon-op-timeout=10",
            "--rados-osd-op-timeout=10",
            *args,
        )

    # -- stop ----------------------------------------------------------------

    def stop(self) -> None:
        """Stop the gateway, then the OSD, then the monitor; safe to call twice.

        Each daemon gets ``SIGTERM`` and :data:`STOP_TIMEOUT_S` seconds, then
        ``SIGKILL``. The data directory is left for post-mortems; the next
        :meth:`start` replaces it.
        """
        atexit.unregister(self.stop)
        self._watching.clear()
        self._quit.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=COMMAND_TIMEOUT_S)
        order = {_RGW_NAME: 0, f"osd.{_OSD_ID}": 1, f"mon.{_MON_ID}": 2}
        for daemon in sorted(self._daemons, key=lambda d: order.get(d.name, -1)):
            _terminate(daemon.process, STOP_TIMEOUT_S)
        self._daemons.clear()
        self._started = False


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """End one child: SIGTERM, a bounded wait, then SIGKILL; reaps it so no zombie stays."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
    except ProcessLookupError:
        process.poll()


def _admin_socket(path: Path, command: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
    """One command on a daemon's admin socket (what ``ceph daemon`` does, without starting a process).

    The daemon reads a JSON command ended by a NUL byte and answers with a
    4-byte big-endian length and that many bytes of JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(command).encode() + b"\0")
        (length,) = struct.unpack(">I", _receive(sock, 4))
        answer: Dict[str, Any] = json.loads(_receive(sock, length) or b"{}")
    return answer


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the admin socket closed early")
        data += chunk
    return data


def _describe(argv: Sequence[str]) -> str:
    """A command for an error message: without the ``-c CONF`` every call carries, at most six words."""
    words = [word for i, word in enumerate(argv) if word != "-c" and (i == 0 or argv[i - 1] != "-c")]
    return " ".join(words[:6]) + (" ..." if len(words) > 6 else "")


def _die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that has Linux SIGKILL the child when this process dies, else None.

    atexit covers normal exits and exceptions; this covers SIGTERM and SIGKILL of
    the test run, which would otherwise leave daemons holding their RAM. Linux
    sends the signal when the *thread* that started the child ends, so it is only
    armed from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    kill = int(signal.SIGKILL)

    def arm() -> None:
        prctl(pr_set_pdeathsig, kill, 0, 0, 0)

    return arm


def _free_ports(host: str, count: int) -> List[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
