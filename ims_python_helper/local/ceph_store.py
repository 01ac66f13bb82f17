"""The local Ceph's object store: which one (BlueStore on disk, or memstore in RAM) and how big.

BlueStore, the default, keeps objects in one sparse file in the data
directory, sized from the free disk as Ceph's own development clusters do, so
a developer's day of images fits; memstore keeps them in RAM, small and fast,
for the tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from ims_python_helper.local.ceph_base import BLUESTORE_ENV, MEMSTORE_ENV, STORE_ENV, STORES, CephError

#: Default memstore capacity. Memstore allocates as objects arrive, so the cap
#: costs nothing until it is used; RAM use is about 1.8 times the data stored.
#: 2 GiB holds a typical boot image (rootfs, kernel, initrd) with room for one
#: overwrite, while a runaway test fills the OSD (a clear S3 error) before it
#: can exhaust a CI machine's memory. Set ``IMS_LOCAL_CEPH_MEMSTORE_MB`` for more.
DEFAULT_MEMSTORE_BYTES = 2 * 1024**3

#: Share of the data directory's free disk that BlueStore's sparse file is sized to. The file takes
#: space only as data arrives; sized below the free space, Ceph says full before the disk is, and the
#: rest of the machine keeps room to work.
BLUESTORE_SHARE = 0.5
#: The smallest BlueStore worth starting (its own metadata takes a few hundred MiB).
MIN_BLUESTORE_BYTES = 2 * 1024**3


def memstore_bytes_from_env(default: int = DEFAULT_MEMSTORE_BYTES) -> int:
    """Memstore capacity from ``IMS_LOCAL_CEPH_MEMSTORE_MB``, or ``default`` when it is unset."""
    raw = os.environ.get(MEMSTORE_ENV, "").strip()
    if not raw:
        return default
    # isdecimal() is exactly what int() reads as a plain number (no sign, no underscores, no spaces).
    if not raw.isdecimal() or int(raw) < 64:
        raise CephError(f"{MEMSTORE_ENV} must be a whole number of MiB, at least 64, not {raw!r}")
    return int(raw) * 1024**2


def store_from_env(memstore_bytes: Optional[int] = None) -> str:
    """The object store: memstore when a memstore size is given, else ``IMS_LOCAL_CEPH_STORE``, else bluestore."""
    if memstore_bytes is not None:
        return "memstore"
    raw = os.environ.get(STORE_ENV, "").strip().lower() or STORES[0]
    if raw not in STORES:
        raise CephError(f"{STORE_ENV} must be one of {', '.join(STORES)}, not {raw!r}")
    return raw


def bluestore_bytes_for(directory: Path) -> int:
    """BlueStore's size: ``IMS_LOCAL_CEPH_BLUESTORE_MB``, else ``BLUESTORE_SHARE`` of the free disk there."""
    raw = os.environ.get(BLUESTORE_ENV, "").strip()
    if raw:
        if not raw.isdecimal() or int(raw) * 1024**2 < MIN_BLUESTORE_BYTES:
            raise CephError(f"{BLUESTORE_ENV} must be a whole number of MiB, at least 2048, not {raw!r}")
        return int(raw) * 1024**2
    free = shutil.disk_usage(directory).free
    size = int(free * BLUESTORE_SHARE) // 1024**2 * 1024**2
    if size < MIN_BLUESTORE_BYTES:
        raise CephError(
            f"only {free / 1024**3:.1f} GiB free under {directory}: too little for the local Ceph's BlueStore "
            f"(half the free disk, at least {MIN_BLUESTORE_BYTES // 1024**3} GiB); free some space, or keep the "
            f"data in RAM with --ceph-store memstore ({STORE_ENV}=memstore)"
        )
    return size
