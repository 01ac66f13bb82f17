"""A local Ceph that fills up says so at once, by name, instead of hanging every S3 request (issue 14).

Needs the Debian Ceph packages; skipped without them (failed with ``IMS_REQUIRE_CEPH=1``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from ims_python_helper.clients.storage import describe_s3_error
from ims_python_helper.local.ceph import CephFullError, CephRgw
from tests.support import skip_module_unless_ceph_runs

skip_module_unless_ceph_runs()

MiB = 1024**2
ROOT = Path(__file__).resolve().parent.parent.parent
#: A memstore this small is reported full after 50 to 60 objects of 4 MiB (the OSD's usage reaches the
#: monitor a few seconds late, and the PUTs go on meanwhile); ``fill`` allows for several times that.
TINY_MEMSTORE = 96 * MiB
FULL_MESSAGE = re.compile(r"Ceph cluster is full \(OSD_FULL\b.*osd\.0 (is full|holds \d+ MiB of its 96 MiB)")


def impatient_s3(rgw: Any) -> Any:
    """A plain boto3 client that tries once and waits 20 s at most: a hang shows up as a timeout, not a stall."""
    return boto3.client(
        "s3",
        endpoint_url=rgw.endpoint,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=20,
        ),
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[CephRgw]:
    backend = CephRgw(tmp_path, memstore_bytes=TINY_MEMSTORE)
    backend.start()
    yield backend
    backend.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` twice a second; fail after ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.5)


@dataclass(frozen=True)
class Endpoint:
    """Where an S3 server is and the keys to it (what ``local up`` exports)."""

    endpoint: str
    access_key: str
    secret_key: str


def fill(rgw: Any, objects: int = 200) -> Dict[str, Any]:
    """PUT 4 MiB objects until S3 fails; returns how far it got and how the failure looked."""
    s3 = impatient_s3(rgw)
    body = os.urandom(4 * MiB)
    for number in range(objects):
        started = time.monotonic()
        try:
            s3.put_object(Bucket="boot-images", Key=f"fill/{number}", Body=body)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            return {"stored": number, "error": err, "failed_after": time.monotonic() - started}
    raise AssertionError(f"{objects} objects of 4 MiB fit in a {TINY_MEMSTORE // MiB} MiB memstore")


def test_a_full_cluster_is_named_and_its_s3_fails_at_once_instead_of_hanging(tiny: CephRgw) -> None:
    result = fill(tiny)
    print(f"\n{result['stored']} objects stored; then {result['error']!r} after {result['failed_after']:.1f} s")

    # The request that met the full OSD ends when the watcher stops the gateway, well before the 20 s timeout.
    assert result["failed_after"] < 15, f"the PUT that met the full cluster hung for {result['failed_after']:.1f} s"
    assert result["stored"] >= 10
    # RGW may answer the PUT with an error of its own a moment before the watcher's next look.
    wait_until(lambda: tiny.problem is not None, 10, "the watcher to name the problem")
    assert tiny.problem is not None and FULL_MESSAGE.search(tiny.problem), tiny.problem
    assert "--memstore-mb" in tiny.problem
    with pytest.raises(CephFullError, match=r"Ceph cluster is full \(OSD_FULL"):
        tiny.check_health()
    # Every later request fails at once (the gateway is gone), not after a timeout, and the answer on its
    # port says why: the client's description of the failure names the full cluster (issue 18).
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        impatient_s3(tiny).put_object(Bucket="boot-images", Key="after-full", Body=os.urandom(2 * MiB))
    assert time.monotonic() - started < 5
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert describe_s3_error(refused.value).startswith("InsufficientStorage (HTTP 507) Ceph cluster is full (OSD_FULL")


def test_a_cluster_with_room_reports_no_problem(tiny: CephRgw) -> None:
    impatient_s3(tiny).put_object(Bucket="boot-images", Key="room", Body=os.urandom(MiB))
    usage = tiny.usage()

    assert usage["stat_bytes"] == TINY_MEMSTORE
    assert 0 < usage["stat_bytes_used"] < usage["stat_bytes"]
    assert tiny.full_problem() is None
    tiny.check_health()


def test_deleted_data_is_reclaimed_within_seconds(tiny: CephRgw) -> None:
    """RGW's garbage collector runs every few seconds, so deleting gives the memory back (the default is 2 hours)."""
    s3 = impatient_s3(tiny)
    empty = tiny.usage()["stat_bytes_used"]
    # Larger than RGW's 4 MiB head: the tail of each object is what deletion hands to the collector.
    for number in range(2):
        s3.put_object(Bucket="boot-images", Key=f"reclaim/{number}", Body=os.urandom(16 * MiB))
    wait_until(lambda: tiny.usage()["stat_bytes_used"] > empty + 24 * MiB, 30, "the OSD to count 32 MiB stored")
    for number in range(2):
        s3.delete_object(Bucket="boot-images", Key=f"reclaim/{number}")
    deleted = time.monotonic()

    wait_until(lambda: tiny.usage()["stat_bytes_used"] < empty + 8 * MiB, 60, "the deleted 32 MiB to be reclaimed")
    print(f"\n32 MiB deleted: reclaimed {time.monotonic() - deleted:.1f} s later")


def test_local_up_reports_a_full_cluster_and_exits(tmp_path: Path) -> None:
    """``local up`` on a cluster that fills prints the error naming it and exits non-zero, instead of hanging."""
    argv = ["local", "up", "--s3", "ceph", "--memstore-mb", "96", "--data-dir", str(tmp_path / "stack")]
    process = subprocess.Popen(
        [sys.executable, "-m", "ims_python_helper", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env: Dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                break
            match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
            if match:
                env[match.group(1)] = match.group(2).strip("'")
        fill(Endpoint(env["S3_ENDPOINT"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]))
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 1, err
    assert FULL_MESSAGE.search(err), err
    assert "local up: Ceph memstore of 0.1 GiB in RAM, " in err, err
    assert json.dumps(env["S3_SECRET_KEY"]).strip('"') not in err
