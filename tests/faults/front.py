"""The local stack's servers behind fault proxies, the CLI as a child process, and checks on what a run left.

The checks read IMS and S3 directly (not through the client under test): an
image counts as published when exactly one record of that name carries the
job's metadata, it is linked, its manifest lists each given file with the
file's md5, every object holds exactly those bytes, the job points at it, and
no unfinished multipart upload is left under its prefix.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Union

import botocore.exceptions

from ims_python_helper.artifacts import KIND_BY_NAME, MANIFEST_KEY
from ims_python_helper.clients.ims import JOB_METADATA_KEY
from ims_python_helper.local.stack import LocalStack
from tests.faults import ledger
from tests.faults.proxy import FaultProxy, Observer
from tests.support import ROOT, Artifacts


@dataclass
class ProxiedStack:
    """IMS, the token endpoint and S3 of a running stack, each reached through a ``FaultProxy``.

    ``env()`` gives the variables that point the client at the proxies instead of the servers.
    """

    stack: LocalStack
    ims: FaultProxy
    tokens: FaultProxy
    s3: FaultProxy

    @classmethod
    def start(cls, stack: LocalStack, observer: Optional[Observer] = None) -> ProxiedStack:
        """Put a proxy in front of each server of ``stack``."""
        assert stack.ims is not None and stack.tokens is not None and stack.s3 is not None
        return cls(
            stack,
            FaultProxy(stack.ims.url, "ims", observer=observer).start(),
            FaultProxy(stack.tokens.base_url, "token", observer=observer).start(),
            FaultProxy(stack.s3.endpoint, "s3", observer=observer).start(),
        )

    @property
    def proxies(self) -> List[FaultProxy]:
        """The three proxies."""
        return [self.ims, self.tokens, self.s3]

    def env(self) -> Dict[str, str]:
        """``IMS_URL``, ``OAUTH_CLIENT_ENDPOINT`` and ``S3_ENDPOINT`` through the proxies."""
        assert self.stack.tokens is not None
        return {
            "IMS_URL": self.ims.url,
            "OAUTH_CLIENT_ENDPOINT": self.tokens.url_for(self.stack.tokens.url),
            "S3_ENDPOINT": self.s3.url,
        }

    @property
    def faults_fired(self) -> int:
        """Faults applied by all three proxies."""
        return sum(p.faults_fired for p in self.proxies)

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until none of the proxies has an exchange in flight."""
        return all(p.idle(timeout) for p in self.proxies)

    def stop(self) -> None:
        """Stop all three proxies."""
        for proxy in self.proxies:
            proxy.stop()


@contextmanager
def proxied_stack(stack: LocalStack, observer: Optional[Observer] = None) -> Iterator[ProxiedStack]:
    """``ProxiedStack.start`` for a with-block: the faults fired go into the ledger, then the proxies stop."""
    front = ProxiedStack.start(stack, observer=observer)
    try:
        yield front
    finally:
        ledger.note(faults=front.faults_fired)
        front.stop()


# -- the CLI ---------------------------------------------------------------------------


def tiny_artifacts(directory: Path, seed: int) -> Artifacts:
    """All five kinds, as small as a publish with a multipart rootfs can be (5 MiB parts: two of them)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"rootfs": 5 * 1024 * 1024 + 4096, "kernel": 96 * 1024, "initrd": 160 * 1024, "debug": 64 * 1024}
    paths = {}
    for kind, size in sizes.items():
        paths[kind] = directory / kind
        paths[kind].write_bytes(bytes(rng.getrandbits(8) for _ in range(64)) * (size // 64))
    paths["boot_parameters"] = directory / "boot_parameters"
    paths["boot_parameters"].write_text(f"console=ttyS0,115200 seed={seed}\n")
    return Artifacts(paths)


def publish_argv(name: str, job_id: Optional[str], artifacts: Artifacts, *extra: str) -> List[str]:
    """``image upload_artifacts NAME [JOB] <every artifact> --part-size 5 EXTRA...`` (5 MiB parts: small multipart)."""
    job = [job_id] if job_id else []
    return ["image", "upload_artifacts", name, *job, *artifacts.flags(), "--part-size", "5", *extra]


def start_cli(argv: List[str], env: Dict[str, str], stdout: Union[int, IO[Any]], stderr: Union[int, IO[Any]]) -> Any:
    """``python -m ims_python_helper ARGV`` as a child process (a real process to signal or kill)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ims_python_helper", *argv], env=env, cwd=ROOT, stdout=stdout, stderr=stderr, text=True
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms; fail the test after ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


# -- what is stored --------------------------------------------------------------------


def images_of_job(images: List[Dict[str, Any]], name: str, job_id: str, s3: Any = None) -> List[Dict[str, Any]]:
    """Image records named ``name`` that a run for ``job_id`` made (by the metadata the client records).

    IMS before 3.16 keeps no image metadata: with ``s3`` given, a record without
    any counts when its rootfs object carries the job id in its S3 metadata.
    """
    return [i for i in images if i.get("name") == name and _made_by_job(i, job_id, s3)]


def _made_by_job(record: Dict[str, Any], job_id: str, s3: Any) -> bool:
    if "metadata" in record or s3 is None:
        return (record.get("metadata") or {}).get(JOB_METADATA_KEY) == job_id
    try:
        head = s3.head_object(Bucket="boot-images", Key=f"{record['id']}/rootfs")
    except botocore.exceptions.ClientError:
        return False
    return bool(head.get("Metadata", {}).get("x-shasta-ims-job-id") == job_id)


def manifest_of(s3: Any, record: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest an image record links to, read straight from S3."""
    bucket, _, key = record["link"]["path"][len("s3://") :].partition("/")
    return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def stored_md5(s3: Any, s3_path: str) -> str:
    """md5 of an object's bytes as stored (read back, not taken from its metadata)."""
    bucket, _, key = s3_path[len("s3://") :].partition("/")
    digest = hashlib.md5()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def keys_under(s3: Any, prefix: str, bucket: str = "boot-images") -> List[str]:
    """Object keys under ``prefix``."""
    keys: List[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def uploads_under(s3: Any, prefix: str = "", bucket: str = "boot-images") -> List[str]:
    """Keys with an unfinished multipart upload under ``prefix``."""
    listing = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(u["Key"] for u in listing.get("Uploads", []))


def expected_keys(image_id: str, artifacts: Artifacts) -> List[str]:
    """The objects a publish of ``artifacts`` stores under ``IMAGE_ID/``."""
    return sorted([f"{image_id}/{KIND_BY_NAME[name].key}" for name in artifacts.paths] + [f"{image_id}/{MANIFEST_KEY}"])


def assert_published(ims_api: Any, s3: Any, name: str, job_id: str, artifacts: Artifacts) -> Dict[str, Any]:
    """Check that ``job_id`` published ``artifacts`` as exactly one linked image ``name``; returns its record."""
    ours = images_of_job(ims_api.get("/images"), name, job_id, s3)
    assert len(ours) == 1, f"{len(ours)} image records named {name!r} for job {job_id}: {[i['id'] for i in ours]}"
    record = ours[0]
    image_id = record["id"]
    assert record.get("link"), f"image {image_id} of job {job_id} is not linked"
    assert ims_api.get(f"/jobs/{job_id}").get("resultant_image_id") == image_id
    manifest = manifest_of(s3, record)
    listed = {entry["type"]: entry["md5"] for entry in manifest["artifacts"]}
    given = {KIND_BY_NAME[name].mime_type: artifacts.md5(name) for name in artifacts.paths}
    assert listed == given, f"manifest of image {image_id} does not list the given files' md5s"
    for entry in manifest["artifacts"]:
        assert stored_md5(s3, entry["link"]["path"]) == entry["md5"], f"{entry['link']['path']} holds other bytes"
    assert keys_under(s3, f"{image_id}/") == expected_keys(image_id, artifacts)
    assert uploads_under(s3, f"{image_id}/") == [], f"unfinished multipart uploads left under {image_id}/"
    ledger.note(images_verified=1)
    return record
