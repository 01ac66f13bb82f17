"""Ten publish-kill-rerun rounds of a 400 MiB image on the default local Ceph keep ten images (issues 14, 18).

Each round publishes a 400 MiB rootfs (plus the small artifacts) for a new job,
SIGKILLs the client halfway through the rootfs (its parts stay behind), runs
the same command again (it aborts them and uploads everything anew) and
checks the image. The images stay, as a developer's day of builds would:
about 6 GiB written and 4 GiB kept, which the old default (a 2 GiB memstore)
could not hold (OSD_FULL in round 5, issue 18). The stack's Ceph is the
default one, BlueStore on a sparse file sized from the free disk, not the
memstore the other tests use. At the end there are ten linked images and
nothing else: no other object, no unfinished multipart upload, and the
killed runs' parts given back by RGW's garbage collector within a minute.

Select it with ``-m soak`` (or leave it out with ``-m "not soak"``);
``IMS_SOAK_ROUNDS`` and ``IMS_SOAK_MB`` change the rounds and the rootfs size.
Needs Ceph; skipped without it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from ims_python_helper.local.ceph import CephRgw, ceph_available
from ims_python_helper.local.stack import LocalStack
from tests.faults import ledger
from tests.faults.front import (
    ProxiedStack,
    assert_published,
    keys_under,
    publish_argv,
    start_cli,
    uploads_under,
    wait_for,
)
from tests.support import make_artifacts

MiB = 1024 * 1024
ROUNDS = int(os.environ.get("IMS_SOAK_ROUNDS", "10"))
ROOTFS_MB = int(os.environ.get("IMS_SOAK_MB", "400"))

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not ceph_available(), reason="Ceph RGW not installed"),
    pytest.mark.skipif(
        "ceph" not in os.environ.get("IMS_TEST_S3", "moto,ceph").split(","), reason="IMS_TEST_S3 leaves out ceph"
    ),
    pytest.mark.timeout(1800),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack on the default local Ceph: BlueStore on disk (the suite's other stacks use memstore)."""
    with LocalStack(data_dir=tmp_path_factory.mktemp("soak-stack"), s3="ceph", ceph_store="bluestore") as local:
        yield local


def used(ceph: CephRgw) -> int:
    return ceph.usage()["stat_bytes_used"]


class PeakUsage:
    """Samples the OSD's usage four times a second in a thread and keeps the highest value seen."""

    def __init__(self, ceph: CephRgw) -> None:
        self.ceph = ceph
        self.peak = used(ceph)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="ceph-usage", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.peak = max(self.peak, used(self.ceph))
            except OSError:
                pass  # the OSD is busy; the next sample counts

    def __enter__(self) -> PeakUsage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_publish_kill_rerun_rounds_of_a_large_image_keep_every_image_and_nothing_else(
    stack: LocalStack, proxied: ProxiedStack, stack_env: Dict[str, str], run_cli, ims_api, s3, tmp_path: Path
) -> None:
    ceph = stack.s3
    assert isinstance(ceph, CephRgw) and ceph.store == "bluestore"
    capacity = ceph.usage()["stat_bytes"]
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=MiB, seed=14)
    with open(artifacts.paths["rootfs"], "wb") as rootfs:  # written a MiB at a time: randbytes stops at 256 MiB
        for _ in range(ROOTFS_MB):
            rootfs.write(os.urandom(MiB))
    baseline = used(ceph)
    images: List[str] = []
    started = time.monotonic()
    with PeakUsage(ceph) as usage:
        for number in range(1, ROUNDS + 1):
            images.append(_round(number, proxied, stack_env, run_cli, ims_api, s3, artifacts, tmp_path))
            assert ceph.problem is None, ceph.problem
            print(
                f"\nround {number}: {used(ceph) / MiB:.0f} MiB used after it, peak so far {usage.peak / MiB:.0f}"
                f" MiB of {capacity / MiB:.0f} MiB ({time.monotonic() - started:.0f} s)"
            )
    peak = usage.peak

    linked = [image for image in ims_api.get("/images") if image.get("link")]
    assert sorted(image["id"] for image in linked) == sorted(images)
    assert keys_under(s3, "") == sorted(key for image in images for key in keys_under(s3, f"{image}/"))
    assert uploads_under(s3) == []
    kept = ROUNDS * os.path.getsize(artifacts.paths["rootfs"])
    # The killed runs' parts are given back within a minute, without a manual collector run.
    wait_for(lambda: used(ceph) < baseline + kept * 1.1 + 256 * MiB, 60, "the killed runs' parts to be reclaimed")
    written = ROUNDS * ROOTFS_MB * MiB * 3 // 2
    print(
        f"{ROUNDS} rounds of {ROOTFS_MB} MiB ({written / MiB:.0f} MiB written, {kept / MiB:.0f} MiB kept, into a"
        f" {capacity / MiB:.0f} MiB {ceph.store}): peak {peak / MiB:.0f} MiB, {used(ceph) / MiB:.0f} MiB at the end,"
        f" {time.monotonic() - started:.0f} s; {ceph.describe_store()}"
    )


def _round(
    number: int,
    proxied: ProxiedStack,
    stack_env: Dict[str, str],
    run_cli: Any,
    ims_api: Any,
    s3: Any,
    artifacts: Any,
    tmp_path: Path,
) -> str:
    """One round: publish, SIGKILL halfway through the rootfs, run again, check the image; returns its id."""
    job = ims_api.new_job()
    proxied.s3.clear()  # body_bytes counts this round's rootfs only
    argv = publish_argv(f"soak-{number}", job, artifacts, "--deadline", "600")
    argv[argv.index("--part-size") + 1] = "8"
    with open(tmp_path / f"killed-{number}.log", "w") as err:
        process = start_cli(argv, {**stack_env, **proxied.env()}, subprocess.DEVNULL, err)
        try:
            wait_for(
                lambda: proxied.s3.body_bytes(r"/rootfs\?") > ROOTFS_MB * MiB // 2 or process.poll() is not None,
                300,
                "the rootfs to be halfway up",
            )
        finally:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == -9, f"round {number}: the run ended before the kill"
    assert proxied.s3.body_bytes(r"/rootfs\?") < ROOTFS_MB * MiB, f"round {number}: the kill came too late"
    assert proxied.idle(30)

    rerun = run_cli(*argv)
    ledger.note(runs=2, kills=1, reruns=1)
    assert rerun.code == 0, f"round {number}: {rerun.stderr}"
    record = assert_published(ims_api, s3, f"soak-{number}", job, artifacts)
    return str(record["id"])
