"""What the local Ceph's modules share: names, errors, the cluster's ``ceph.conf`` and process plumbing."""

from __future__ import annotations

import ctypes
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ims_python_helper.local.errors import LocalStackError

#: Environment variable that sizes the in-RAM object store, in MiB, when the caller gives no size.
MEMSTORE_ENV = "IMS_LOCAL_CEPH_MEMSTORE_MB"
#: Environment variable choosing the OSD's object store when the caller does not: one of ``STORES``.
STORE_ENV = "IMS_LOCAL_CEPH_STORE"
#: The object stores: BlueStore keeps objects on disk in one sparse file (the default, as Ceph's own
#: development clusters do); memstore keeps them in RAM (fast, small: the tests' choice).
STORES = ("bluestore", "memstore")
#: Environment variable that sizes BlueStore's sparse file, in MiB, instead of the share of the free disk.
BLUESTORE_ENV = "IMS_LOCAL_CEPH_BLUESTORE_MB"

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

MON_ID = "a"
OSD_ID = 0
RGW_NAME = "client.rgw.local"


class CephError(LocalStackError):
    """The local Ceph RGW could not be installed, started or stopped."""


class CephFullError(CephError):
    """The local Ceph cluster is full: it would block every write, so its gateway was stopped."""


@dataclass
class Daemon:
    """One long-running child process and the files that explain its death."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def exited(self) -> bool:
        # poll() reaps our own child, so a zombie reads as exited here.
        return self.process.poll() is not None


def store_text(store: str, size: int) -> str:
    """The ``ceph.conf`` lines of the OSD's object store (``STORES``) of ``size`` bytes."""
    if store == "memstore":
        return f"""\
# Objects live in RAM; the cap keeps a runaway test from exhausting memory.
osd objectstore = memstore
memstore device bytes = {size}
"""
    return f"""\
# Objects live on disk, in one sparse file ($osd_data/block) made by --mkfs: it takes disk space
# only as data arrives, and Ceph counts the OSD full against its size.
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {size}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
# A developer's machine: a small cache instead of the 4 GiB an OSD takes on a storage server.
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
"""


def config_text(root: Path, fsid: str, host: str, ports: Tuple[int, int, int], store: str, size: int) -> str:
    """The ``ceph.conf`` of one throw-away cluster: every path under ``root``; ports (mon v1, mon v2, rgw)."""
    mon_v1, mon_v2, rgw_port = ports
    return f"""\
# Written by ims_python_helper.local.ceph for one throw-away cluster; every path stays in {root}.
[global]
fsid = {fsid}
mon host = [v2:{host}:{mon_v2},v1:{host}:{mon_v1}]
mon initial members = {MON_ID}
public addr = {host}
cluster addr = {host}
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
{store_text(store, size)}# One OSD: replicate once, and place replicas per OSD rather than per host
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

[{RGW_NAME}]
rgw frontends = beast endpoint={host}:{rgw_port}
rgw data = {root}/rgw
# Reclaim deleted, overwritten and aborted objects' RAM within seconds, not after the
# default 2 hours: collectable at once, a collector pass every few seconds, and a pass
# may run as long as the period (its lease) before the next one takes over.
rgw gc obj min wait = 0
rgw gc processor period = {GC_PERIOD_S}
rgw gc processor max time = {GC_PERIOD_S}
"""


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
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


def admin_socket(path: Path, command: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
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


def describe_command(argv: Sequence[str]) -> str:
    """A command for an error message: without the ``-c CONF`` every call carries, at most six words."""
    words = [word for i, word in enumerate(argv) if word != "-c" and (i == 0 or argv[i - 1] != "-c")]
    return " ".join(words[:6]) + (" ..." if len(words) > 6 else "")


def die_with_parent() -> Optional[Callable[[], None]]:
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


def free_ports(host: str, count: int) -> List[int]:
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
