"""Admin benchmark: export and verify one image ours vs naive, on the local stack (Ceph RGW by default).

    PYTHONPATH=. .venv/bin/python benchmarks/admin_bench.py                  # 1 GiB rootfs, 2 rounds
    PYTHONPATH=. .venv/bin/python benchmarks/admin_bench.py --mib 64 --rounds 1 --s3 moto

Publishes one image (a rootfs of ``--mib`` MiB of incompressible bytes, a 4 MiB
kernel, a 16 MiB initrd) with the client, then in rounds that alternate the
order of the methods:

1. ``export-ours``: ``image export IMAGE_ID DIR`` (ranged parallel download into
   ``NAME.part``, md5 from the network bytes, renamed when it matches);
2. ``export-naive``: boto3 ``download_file`` of each artifact the manifest
   lists, then an md5 pass over each file;
3. ``verify-ours``: ``image verify IMAGE_ID`` (ranged parallel reads into the
   md5 alone, nothing written);
4. ``verify-naive``: boto3 ``download_file`` of each artifact to a temporary
   file, an md5 pass, the file removed.

Each method runs as a child process, measured as ``publish_bench.measure``
does: wall and CPU seconds, ``rchar`` and ``read_bytes`` (bytes from the
block device) per artifact byte, and peak RSS. Caches are not dropped between
runs: a naive md5 pass right after its download is read from the page cache
(``rchar``), ours reads nothing back (its writes bypass the page cache with
O_DIRECT where the file system allows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from copy_floor import start_server  # noqa: E402
from fetch_bench import print_round, print_sample_table  # noqa: E402
from publish_bench import COST_HEADER, MIB, CostFloor, compile_package, cost_row, measure, write_artifact  # noqa: E402

from ims_python_helper.local.stack import LocalStack  # noqa: E402

METHODS = ("export-ours", "export-naive", "verify-ours", "verify-naive")
#: The hashes each method computes over every byte (boto3's download_file checks none with "when_required").
HASHES = dict.fromkeys(METHODS, ("md5",))


# -- the parent ---------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="rootfs size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all four methods (default 2)")
    parser.add_argument("--s3", default="auto", choices=("auto", "ceph", "moto"))
    parser.add_argument("--json", type=Path, help="also write the samples here")
    return parser.parse_args(argv)


def publish_image(stack: LocalStack, work: Path, env: Dict[str, str], rootfs_mib: int) -> Dict[str, Any]:
    """Publish the benchmark's image with the client; returns its record."""
    files = {"rootfs": rootfs_mib * MIB, "kernel": 4 * MIB, "initrd": 16 * MIB}
    flags: List[str] = []
    for seed, (name, size) in enumerate(files.items(), start=1):
        write_artifact(work / name, size, seed=seed)
        flags += [f"--{name}", str(work / name)]
    argv = [sys.executable, "-m", "ims_python_helper", "image", "upload_artifacts", "admin-bench", *flags]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    for name in files:
        (work / name).unlink()
    record: Dict[str, Any] = json.loads(done.stdout)["ims_image_record"]
    return record


def method_argv(method: str, record: Dict[str, Any], out: Path) -> List[str]:
    if method == "export-ours":
        return [sys.executable, "-m", "ims_python_helper", "image", "export", record["id"], str(out)]
    if method == "verify-ours":
        return [sys.executable, "-m", "ims_python_helper", "image", "verify", record["id"]]
    return [sys.executable, str(HERE / "bench_children.py"), "admin", method, record["link"]["path"], str(out)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    compile_package()
    with tempfile.TemporaryDirectory(prefix="admin-bench-", dir=os.environ.get("BENCH_DIR")) as work_dir:
        work = Path(work_dir)
        with LocalStack(data_dir=work / "stack", s3=args.s3) as stack:
            assert stack.s3 is not None
            env = {**os.environ, "PYTHONPATH": str(ROOT), "IMS_PROGRESS": "none", **stack.env(), "IMS_JOB_ID": ""}
            record = publish_image(stack, work, env, args.mib)
            size = (args.mib + 20) * MIB
            samples: Dict[str, List[Any]] = {m: [] for m in METHODS}
            floor_server, floor_port = start_server()
            costs = CostFloor()
            for round_no in range(args.rounds):
                costs.sample(floor_port, work / "absent", ["md5"], download_path=work / "floor-out")
                order = METHODS if round_no % 2 == 0 else tuple(reversed(METHODS))
                for method in order:
                    out = work / f"out-{method}"
                    sample = measure(method_argv(method, record, out), env, work / f"{method}.log", 0.0)
                    shutil.rmtree(out, ignore_errors=True)
                    samples[method].append(sample)
                    print_round(round_no, f"{method:12s}", sample, size)
                    time.sleep(1)  # let the server settle between runs
            engine = stack.s3.name
            floor_server.kill()
            floor_server.wait()
    print(f"\nimage of {args.mib} MiB rootfs + 20 MiB on {engine}, medians of {args.rounds} rounds:")
    print_sample_table(samples, METHODS, size)
    # The download floor writes what it receives; verify writes nothing, so its ratio is an upper bound.
    print(f"\nCPU per GiB, hashes and raw download floor measured in this run (load {os.getloadavg()}):")
    print(COST_HEADER)
    floor = costs.summary()["download_floor_s_per_gib"]
    for method in METHODS:
        good = [s for s in samples[method] if s.exit_code == 0] or samples[method]
        cpu = statistics.median(s.cpu_s for s in good)
        print(cost_row(method, HASHES[method], cpu, size / 1024**3, costs, floor))
    print(f"  ({costs.spread()}; the median is used)")
    for task in ("export", "verify"):
        ours = statistics.median(s.wall_s for s in samples[f"{task}-ours"])
        naive = statistics.median(s.wall_s for s in samples[f"{task}-naive"])
        print(f"{task} ours/naive wall: {ours / naive:.2f}")
    if args.json:
        args.json.write_text(json.dumps({m: [vars(s) for s in v] for m, v in samples.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
