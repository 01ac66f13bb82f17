"""One publish of a rootfs past AWS's 5 GiB single-copy limit to the local Ceph RGW, checked from outside.

    PYTHONPATH=. .venv/bin/python benchmarks/large_publish.py --rootfs-mib 6144

Starts the local stack on Ceph RGW with a memstore large enough for the file
(RAM: about 1.8 times the data stored), writes an incompressible rootfs of the
given size (and a 16 MiB kernel, 64 MiB initrd), runs
``python -m ims_python_helper image upload_artifacts`` once as a child process
(measured as in ``publish_bench.py``), then reads the stored rootfs' HEAD with
a plain boto3 client and compares its size and ``md5sum`` metadata with the
file's md5 taken separately. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.publish_bench import (  # noqa: E402
    MIB,
    Method,
    measure,
    s3_client,
    warm_page_cache,
    write_artifact,
)
from ims_python_helper.local.stack import LocalStack  # noqa: E402


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs-mib", type=int, default=6144)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="large-publish-"))
    work.mkdir(parents=True, exist_ok=True)
    files = {"rootfs": work / "rootfs", "kernel": work / "kernel", "initrd": work / "initrd"}
    for seed, (name, mib) in enumerate((("rootfs", args.rootfs_mib), ("kernel", 16), ("initrd", 64))):
        if not files[name].exists() or files[name].stat().st_size != mib * MIB:
            write_artifact(files[name], mib * MIB, seed)
    expected_md5 = file_md5(files["rootfs"])
    warm_page_cache(list(files.values()))
    stack = LocalStack(data_dir=work / "stack", s3="ceph", memstore_bytes=(args.rootfs_mib + 2048) * MIB)
    stack.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
        env.update(stack.env())
        env["IMS_PROGRESS"] = "log"
        env["PYTHONPATH"] = str(HERE.parent)
        log = work / "publish.log"
        sample = measure(Method("ours", "ours").argv(files), env, log, 0.0)
        output = log.read_text()
        answer = json.loads(output[output.index("{") :])
        rootfs = next(a for a in answer["ims_image_artifacts"] if a["type"].endswith("rootfs.squashfs"))
        key = rootfs["link"]["path"].split("/", 3)[3]
        head = s3_client(stack).head_object(Bucket="boot-images", Key=key)
    finally:
        stack.stop()
    report = {
        "rootfs_bytes": files["rootfs"].stat().st_size,
        "exit_code": sample.exit_code,
        "wall_s": round(sample.wall_s, 2),
        "client_cpu_s": round(sample.cpu_s, 2),
        "server_cpu_s": round(sample.server_cpu_s, 2),
        "rchar_per_byte": round(sample.rchar / sum(p.stat().st_size for p in files.values()), 3),
        "peak_rss_mb": round(sample.max_rss_mb),
        "stored_bytes": head["ContentLength"],
        "stored_etag": head["ETag"].strip('"'),
        "md5sum_metadata": head.get("Metadata", {}).get("md5sum"),
        "file_md5": expected_md5,
        "manifest_md5": rootfs["md5"],
    }
    report["validated"] = (
        sample.exit_code == 0
        and report["stored_bytes"] == report["rootfs_bytes"]
        and report["md5sum_metadata"] == expected_md5 == rootfs["md5"]
    )
    print(json.dumps(report, indent=2))
    return 0 if report["validated"] else 1


if __name__ == "__main__":
    sys.exit(main())
