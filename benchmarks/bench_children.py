"""The measured children of the fetch and admin benchmarks: each method, in a process of its own.

    python benchmarks/bench_children.py fetch METHOD URL OUT MD5 ENDPOINT ACCESS SECRET
    python benchmarks/bench_children.py admin METHOD MANIFEST_PATH OUT_DIR

This module imports nothing at start but the standard library, so a child's
CPU and wall are its method's own: Python's start and the imports the method
itself needs (boto3 for boto3's methods, the download engine for ours). The
benchmarks' own modules import the local stack, boto3 and the floor tools;
until the third session of issue 20 the children ran from them, and every
child paid 0.15 to 0.2 CPU s for those imports (BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, List

MIB = 1024 * 1024
BUCKET = "boot-images"
#: Where the fetch benchmark puts its object.
FETCH_KEY = "fetch-bench/rootfs"
#: Set by ``fetch_bench.py --buffered``: ours writes through the page cache.
BUFFERED_ENV = "FETCH_BENCH_BUFFERED"
#: Set by ``fetch_bench.py --ours PARTxCONC[xWINDOW]``.
SETTINGS_ENV = "FETCH_BENCH_OURS"


def md5_of(path: str) -> str:
    """Hex md5 of a file, read in 1 MiB blocks (the earlier clients' separate pass)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def boto3_client(endpoint: str, access: str, secret: str) -> Any:
    """boto3's S3 client as every baseline uses it: boto3 as it comes, but for what Ceph RGW needs.

    Path-style addressing, and CRC32 checksums only where an operation requires
    them (as ims-facts.md prescribes for RGW). Deliberately independent of
    ``ims_python_helper.local.s3client``: the baseline is boto3, not our settings.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def fetch(method: str, url: str, out: str, md5: str, endpoint: str, access: str, secret: str) -> int:
    """One fetch of the benchmark's object: naive (one requests stream, then an md5 pass), boto3's, or ours."""
    if method == "naive":
        import requests

        with requests.get(url, stream=True, timeout=600) as response, open(out, "wb") as handle:
            response.raise_for_status()
            for chunk in response.iter_content(MIB):
                handle.write(chunk)
        return 0 if md5_of(out) == md5 else 3
    if method == "floor":
        boto3_client(endpoint, access, secret).download_file(BUCKET, FETCH_KEY, out)
        return 0
    from dataclasses import replace

    from ims_python_helper.pod.download import DownloadOptions, download_file

    settings = [int(n) for n in os.environ.get(SETTINGS_ENV, "").split("x") if n]
    options = DownloadOptions(direct_io=not os.environ.get(BUFFERED_ENV))
    if settings:
        part_mib, concurrency = settings[:2]
        window = settings[2] if len(settings) > 2 else 0
        options = replace(options, part_size=part_mib * MIB, concurrency=concurrency, window=window)
    download_file(url, out, expected_md5=md5, options=options)
    return 0


def admin_naive(method: str, manifest_path: str, out_dir: str) -> int:
    """Download every artifact of the manifest with boto3, then md5 each file (export keeps them, verify not)."""
    client = boto3_client(os.environ["S3_ENDPOINT"], os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"])
    bucket, _, key = manifest_path[len("s3://") :].partition("/")
    manifest = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    os.makedirs(out_dir, exist_ok=True)
    bad = 0
    for entry in manifest["artifacts"]:
        a_bucket, _, a_key = entry["link"]["path"][len("s3://") :].partition("/")
        target = os.path.join(out_dir, a_key.rpartition("/")[2])
        client.download_file(a_bucket, a_key, target)
        bad += md5_of(target) != entry["md5"]
        if method == "verify-naive":
            os.unlink(target)
    return 3 if bad else 0


def main(argv: List[str]) -> int:
    kind, args = argv[0], argv[1:]
    if kind == "fetch" and len(args) == 7:
        return fetch(*args)
    if kind == "admin" and len(args) == 3:
        return admin_naive(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
