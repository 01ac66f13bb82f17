"""The two baselines ``publish_bench.py`` measures the client against, each run as its own process.

    python benchmarks/baselines.py floor FILE...
    python benchmarks/baselines.py naive IMAGE_NAME ROOTFS KERNEL INITRD

Both read the S3 and IMS settings from the environment the local stack gives
(``S3_ENDPOINT``, ``S3_ACCESS_KEY``, ``S3_SECRET_KEY``, ``S3_BUCKET``,
``IMS_URL``, ``OAUTH_CLIENT_ID``, ``OAUTH_CLIENT_SECRET``,
``OAUTH_CLIENT_ENDPOINT``, ``IMS_JOB_ID``) and use nothing from
``ims_python_helper``:

- ``floor``: plain boto3 ``upload_file`` of each file, one after another, with
  the default ``TransferConfig``; no hashing, no IMS. What the S3 server and
  boto3 give without any extra work.
- ``naive``: the algorithm of earlier IMS clients, written out as the
  baseline: for each artifact in turn, read the file for its md5, then
  ``upload_file`` it with that md5 in the metadata (default ``TransferConfig``);
  then write the manifest, link the image record and point the job at it.

The S3 client differs from boto3's defaults only where Ceph RGW needs it
(path-style addressing; CRC32 checksums only when an operation requires them,
as ims-facts.md prescribes for RGW).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from typing import Any, Dict, List

import requests
from bench_children import boto3_client, md5_of

MIB = 1024 * 1024
ARTIFACTS = (
    ("rootfs", "application/vnd.cray.image.rootfs.squashfs"),
    ("kernel", "application/vnd.cray.image.kernel"),
    ("initrd", "application/vnd.cray.image.initrd"),
)


def s3_client() -> Any:
    """boto3's S3 client on the stack's endpoint (``bench_children.boto3_client``)."""
    return boto3_client(os.environ["S3_ENDPOINT"], os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"])


def floor(paths: List[str]) -> None:
    """Upload each file with ``upload_file`` and nothing else."""
    client = s3_client()
    bucket = os.environ.get("S3_BUCKET", "boot-images")
    run = uuid.uuid4().hex
    for path in paths:
        client.upload_file(path, bucket, f"floor/{run}/{os.path.basename(path)}")


def naive(image_name: str, paths: List[str]) -> None:
    """Publish an image the way earlier clients did: md5, then upload, artifact after artifact."""
    ims = os.environ["IMS_URL"].rstrip("/")
    bucket = os.environ.get("S3_BUCKET", "boot-images")
    job_id = os.environ.get("IMS_JOB_ID", "")
    token = requests.post(
        os.environ["OAUTH_CLIENT_ENDPOINT"],
        data={"grant_type": "client_credentials"},
        auth=(os.environ["OAUTH_CLIENT_ID"], os.environ["OAUTH_CLIENT_SECRET"]),
        timeout=60,
    )
    token.raise_for_status()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    created = http.post(f"{ims}/images", json={"name": image_name}, timeout=60)
    created.raise_for_status()
    image_id = created.json()["id"]

    client = s3_client()
    entries: List[Dict[str, Any]] = []
    for (key, mime_type), path in zip(ARTIFACTS, paths):
        md5 = md5_of(path)
        metadata = {"md5sum": md5, "x-shasta-ims-image-name": image_name, "x-shasta-ims-image-id": image_id}
        if job_id:
            metadata["x-shasta-ims-job-id"] = job_id
        s3_key = f"{image_id}/{key}"
        client.upload_file(path, bucket, s3_key, ExtraArgs={"ContentType": mime_type, "Metadata": metadata})
        etag = client.head_object(Bucket=bucket, Key=s3_key)["ETag"].strip('"')
        entries.append(
            {"link": {"path": f"s3://{bucket}/{s3_key}", "etag": etag, "type": "s3"}, "type": mime_type, "md5": md5}
        )

    manifest = json.dumps(
        {"version": "1.0", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "artifacts": entries}, indent=4
    ).encode()
    manifest_key = f"{image_id}/manifest.json"
    client.put_object(
        Bucket=bucket,
        Key=manifest_key,
        Body=manifest,
        ContentType="application/json",
        Metadata={"md5sum": hashlib.md5(manifest).hexdigest()},
    )
    etag = client.head_object(Bucket=bucket, Key=manifest_key)["ETag"].strip('"')
    link = {"path": f"s3://{bucket}/{manifest_key}", "etag": etag, "type": "s3"}
    http.patch(f"{ims}/images/{image_id}", json={"link": link}, timeout=60).raise_for_status()
    if job_id:
        http.patch(f"{ims}/jobs/{job_id}", json={"resultant_image_id": image_id}, timeout=60).raise_for_status()
    print(json.dumps({"result": "success", "image_id": image_id}))


def main(argv: List[str]) -> int:
    """Run the baseline named by ``argv[0]``."""
    if len(argv) >= 2 and argv[0] == "floor":
        floor(argv[1:])
        return 0
    if len(argv) == 5 and argv[0] == "naive":
        naive(argv[1], argv[2:])
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
