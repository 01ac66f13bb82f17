"""A single-node Ceph RADOS Gateway on loopback, started from the distribution's packages.

Production IMS keeps its artifacts in Ceph RGW, so tests and benchmarks that
want the real server (its ETags, checksum handling and multipart rules) start
one here: one monitor, one OSD (BlueStore on a sparse file, or memstore in RAM:
``ceph_store``) and one ``radosgw``, each a child process of this one, with
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
import http.client
import json
import logging
import os
import secrets
import shutil
import string
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ims_python_helper.local.ceph_base import (
    BLUESTORE_ENV,
    FULL_CHECK_RATIO,
    FULL_CHECKS,
    FULL_RATIO,
    GC_PERIOD_S,
    HEALTH_POLL_S,
    MEMSTORE_ENV,
    MON_ID,
    OSD_ID,
    RGW_NAME,
    STOP_TIMEOUT_S,
    STORE_ENV,
    STORES,
    CephError,
    CephFullError,
    Daemon,
    config_text,
    describe_command,
    die_with_parent,
    free_ports,
    terminate,
)
from ims_python_helper.local.ceph_health import HealthWatch
from ims_python_helper.local.ceph_store import (
    BLUESTORE_SHARE,
    DEFAULT_MEMSTORE_BYTES,
    MIN_BLUESTORE_BYTES,
    bluestore_bytes_for,
    memstore_bytes_from_env,
    store_from_env,
)
from ims_python_helper.local.errors import undone_on_error
from ims_python_helper.local.s3backend import DEFAULT_BUCKETS

#: The local Ceph's public names (some live in ceph_base and ceph_health, and are imported from here).
__all__ = [
    "CephRgw",
    "CephError",
    "CephFullError",
    "ceph_available",
    "bluestore_bytes_for",
    "memstore_bytes_from_env",
    "store_from_env",
    "DEFAULT_MEMSTORE_BYTES",
    "FULL_CHECK_RATIO",
    "FULL_CHECKS",
    "FULL_RATIO",
    "GC_PERIOD_S",
    "HEALTH_POLL_S",
    "INSTALL_COMMAND",
    "MEMSTORE_ENV",
    "REQUIRED_PROGRAMS",
    "BLUESTORE_ENV",
    "BLUESTORE_SHARE",
    "MIN_BLUESTORE_BYTES",
    "STORE_ENV",
    "STORES",
]

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

#: Bounds on each step; start-up normally takes under 2 s in total.
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0

LOGGER = logging.getLogger(__name__)

_CLUSTER = "ceph"
_S3_UID = "ims-local"


def ceph_available() -> bool:
    """Return True when every program the backend runs is on ``PATH``."""
    return all(shutil.which(program) for program in REQUIRED_PROGRAMS)


class CephRgw(HealthWatch):
    """A Ceph monitor, OSD and RADOS Gateway on 127.0.0.1, owned by this process.

    ``data_dir/ceph/`` holds the configuration, keys, daemon data, logs
    (``log/*.log``) and the daemons' console output (``log/*.out``). ``store``:
    ``bluestore`` (a sparse file of ``store_bytes``, default from
    :func:`bluestore_bytes_for`) or ``memstore`` (RAM, ``memstore_bytes``,
    default from :func:`memstore_bytes_from_env`); None: :func:`store_from_env`.
    """

    name = "ceph"

    def __init__(
        self,
        data_dir: Path,
        memstore_bytes: Optional[int] = None,
        host: str = "127.0.0.1",
        store: Optional[str] = None,
        store_bytes: Optional[int] = None,
    ) -> None:
        self.root = Path(data_dir) / "ceph"
        self.store = store if store is not None else store_from_env(memstore_bytes)
        if self.store not in STORES:
            raise CephError(f"unknown Ceph object store {self.store!r}; choose one of {', '.join(STORES)}")
        if self.store == "memstore":
            self.store_bytes = memstore_bytes if memstore_bytes is not None else memstore_bytes_from_env()
        else:
            #: 0 until start() sizes it from the free disk.
            self.store_bytes = store_bytes or 0
        self.host = host
        self.conf = self.root / "ceph.conf"
        self.log_dir = self.root / "log"
        self._fsid = ""
        self._rgw_port = 0
        self._access_key = ""
        self._secret_key = ""
        self._daemons: List[Daemon] = []
        self._started = False
        #: Why the cluster cannot take writes ("Ceph cluster is full (OSD_FULL): ..."), once the watcher saw it.
        self.problem: Optional[str] = None
        self._watching = threading.Event()
        self._quit = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._full_answer = None

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

    def describe_store(self) -> str:
        """One line for ``local up``: the object store, its size and what is free in it now."""
        usage = self.usage()
        capacity, used = usage["stat_bytes"], usage["stat_bytes_used"]
        where = f"a sparse file {self.root / 'osd' / 'ceph-0' / 'block'}" if self.store == "bluestore" else "RAM"
        return (
            f"Ceph {self.store} of {capacity / 1024**3:.1f} GiB in {where}, {(capacity - used) / 1024**3:.1f} GiB free"
        )

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
        mon_v1, mon_v2, self._rgw_port = free_ports(self.host, 3)
        ports = (mon_v1, mon_v2, self._rgw_port)
        if not self.store_bytes:
            self.store_bytes = bluestore_bytes_for(self.root)
        self.conf.write_text(config_text(self.root, self._fsid, self.host, ports, self.store, self.store_bytes))
        self._make_keys()
        monmap = self.root / "monmap"
        self._run(
            "monmaptool",
            "--create",
            "--fsid",
            self._fsid,
            "--addv",
            MON_ID,
            f"[v2:{self.host}:{mon_v2},v1:{self.host}:{mon_v1}]",
            str(monmap),
        )
        self._run(
            "ceph-mon",
            "-c",
            str(self.conf),
            "--mkfs",
            "-i",
            MON_ID,
            "--monmap",
            str(monmap),
            "--keyring",
            str(self._keyring("mon.")),
        )
        mon = self._spawn(f"mon.{MON_ID}", "ceph-mon", "-f", "-i", MON_ID)
        self._wait_until(mon, deadline, "answer `ceph mon stat`", lambda: self._ceph_ok("mon", "stat"))

        osd_uuid = str(uuid.uuid4())
        (self.root / "osd" / f"{_CLUSTER}-{OSD_ID}").mkdir()
        self._ceph("osd", "new", osd_uuid, str(OSD_ID))
        self._run(
            "ceph-osd", "-c", str(self.conf), "-i", str(OSD_ID), "--mkfs", "--osd-uuid", osd_uuid, "--no-mon-config"
        )
        osd = self._spawn(f"osd.{OSD_ID}", "ceph-osd", "-f", "-i", str(OSD_ID))
        self._wait_until(osd, deadline, "come up in `ceph osd dump`", self._osd_up)

        rgw = self._spawn(RGW_NAME, "radosgw", "-f", "-n", RGW_NAME)
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

    def _keyring(self, entity: str) -> Path:
        return self.root / "keys" / f"{entity.rstrip('.')}.keyring"

    def _make_keys(self) -> None:
        mon_keyring = self._keyring("mon.")
        self._run(
            "ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"
        )
        entities: Dict[str, List[str]] = {
            "client.admin": ["mon", "allow *", "osd", "allow *", "mds", "allow *", "mgr", "allow *"],
            f"osd.{OSD_ID}": ["mon", "allow profile osd", "mgr", "allow profile osd", "osd", "allow *"],
            RGW_NAME: ["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"],
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
        return any(osd.get("osd") == OSD_ID and osd.get("up") == 1 for osd in osds)

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

    def _wait_until(self, daemon: Daemon, deadline: float, what: str, ready: Callable[[], bool]) -> None:
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

    # -- processes -----------------------------------------------------------

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("CEPH_ARGS", None)  # A caller's CEPH_ARGS could point at another cluster.
        env["CEPH_CONF"] = str(self.conf)
        return env

    def _console_file(self, daemon_name: str) -> Path:
        return self.log_dir / f"{daemon_name}.out"

    def _spawn(self, daemon_name: str, program: str, *args: str) -> Daemon:
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
                preexec_fn=die_with_parent(),
            )
        daemon = Daemon(daemon_name, process, self.log_dir / f"{daemon_name}.log")
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
                f"`{describe_command(argv)}` did not finish within {timeout:.0f} s (logs in {self.log_dir})"
            ) from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise CephError(
                f"`{describe_command(argv)}` failed with status {result.returncode}: "
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
        self._stop_full_answer()
        order = {RGW_NAME: 0, f"osd.{OSD_ID}": 1, f"mon.{MON_ID}": 2}
        for daemon in sorted(self._daemons, key=lambda d: order.get(d.name, -1)):
            terminate(daemon.process, STOP_TIMEOUT_S)
        self._daemons.clear()
        self._started = False
