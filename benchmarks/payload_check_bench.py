"""What it costs to have the server check every byte of a part upload, per mechanism, on the local stack.

    PYTHONPATH=. .venv/bin/python benchmarks/payload_check_bench.py --mib 1024 --rounds 3

Uploads ``--mib`` MiB of incompressible bytes as one multipart upload of 8 MiB
parts, 8 at once (the client's defaults), with plain boto3 ``upload_part``
calls over plain HTTP, in three ways, alternating:

- ``sha256``: the body SHA-256-signed (botocore's default over plain HTTP);
  the server recomputes the SHA-256 of every part;
- ``md5``: body unsigned, a Content-MD5 per part, taken in the sending thread
  (what the client does); the server compares it with the md5 it computes for
  the part's ETag anyway;
- ``none``: body unsigned, no checksum: nothing checked (the reference).

Prints wall seconds, client CPU seconds (this process) and S3 server CPU
seconds (the stack's daemons), each per GiB, medians over the rounds.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import boto3
from botocore.config import Config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.publish_bench import cpu_seconds, empty_bucket, pin_process, server_pids  # noqa: E402
from ims_python_helper.local.stack import LocalStack  # noqa: E402

MIB = 1024 * 1024
PART = 8 * MIB
BUCKET = "boot-images"
MODES = ("sha256", "md5", "none")


def client_for(stack: LocalStack, signed: bool) -> Any:
    assert stack.s3 is not None
    return boto3.client(
        "s3",
        endpoint_url=stack.s3.endpoint,
        aws_access_key_id=stack.s3.access_key,
        aws_secret_access_key=stack.s3.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path", "payload_signing_enabled": signed},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=12,
        ),
    )


def upload(client: Any, parts: List[bytes], mode: str) -> None:
    key = f"payload-check/{mode}"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]

    def send(number: int) -> Dict[str, Any]:
        extra = {}
        if mode == "md5":
            extra["ContentMD5"] = base64.b64encode(hashlib.md5(parts[number - 1]).digest()).decode()
        answer = client.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=parts[number - 1], **extra
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(send, range(1, len(parts) + 1)))
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", default="", metavar="SERVER_CPU:CLIENT_CPU")
    args = parser.parse_args()
    block = os.urandom(MIB)
    parts = [
        b"".join(i.to_bytes(8, "little") + block[8:] for i in range(n * 8, n * 8 + 8)) for n in range(args.mib // 8)
    ]
    stack = LocalStack(data_dir=Path(tempfile.mkdtemp(prefix="payload-bench-")), s3="ceph", memstore_bytes=4096 * MIB)
    stack.start()
    results: Dict[str, List[Any]] = {mode: [] for mode in MODES}
    try:
        servers = server_pids()
        if args.pin:
            server_cpu, _, client_cpu = args.pin.partition(":")
            for pid in servers:
                pin_process(pid, {int(server_cpu)})
            pin_process(os.getpid(), {int(client_cpu)})
        clients = {mode: client_for(stack, mode == "sha256") for mode in MODES}
        for round_number in range(args.rounds):
            for mode in MODES[round_number % 3 :] + MODES[: round_number % 3]:
                server_before = sum(cpu_seconds(pid) for pid in servers)
                cpu_before, started = time.process_time(), time.perf_counter()
                upload(clients[mode], parts, mode)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
                server = sum(cpu_seconds(pid) for pid in servers) - server_before
                results[mode].append((wall, cpu, server))
                print(f"round {round_number + 1} {mode:6s} wall {wall:6.2f} client {cpu:5.2f} server {server:5.2f}")
                empty_bucket(stack, clients["none"])
    finally:
        stack.stop()
    gib = args.mib / 1024
    print("\n| check | wall s / GiB | client CPU s / GiB | server CPU s / GiB |\n| --- | --- | --- | --- |")
    for mode in MODES:
        wall, cpu, server = (statistics.median(r[i] for r in results[mode]) / gib for i in range(3))
        print(f"| {mode} | {wall:.2f} | {cpu:.2f} | {server:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
