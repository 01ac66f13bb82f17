"""Fetch benchmark: download a rootfs through a presigned URL three ways, on the local stack (Ceph RGW by default).

    PYTHONPATH=. .venv/bin/python benchmarks/fetch_bench.py                 # 1 GiB, 2 rounds
    PYTHONPATH=. .venv/bin/python benchmarks/fetch_bench.py --mib 256 --rounds 3 --s3 moto
    PYTHONPATH=. .venv/bin/python benchmarks/fetch_bench.py --pin 1:0        # server on CPU 1, client on CPU 0

Puts one object of incompressible bytes in the stack's S3 and, in rounds that
alternate the methods, fetches it with:

1. ``naive``: one ``requests`` stream in 1 MiB chunks to a file, then an md5
   pass over the file (the earlier clients' algorithm);
2. ``floor``: boto3 ``download_file`` of the same object (no md5);
3. ``ours``: ``ims_python_helper.pod.download.download_file`` on the presigned URL,
   md5 verified against the object's.

Each method runs as a child process, measured as ``publish_bench.measure`` does:
wall and CPU seconds, ``rchar`` and ``read_bytes`` per object byte (``rchar``
includes the interpreter and libraries the child loads, some tens of MB), and
peak RSS. The downloaded file is removed after each run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import publish_bench  # noqa: E402
from bench_children import BUCKET, BUFFERED_ENV, SETTINGS_ENV  # noqa: E402
from bench_children import FETCH_KEY as KEY  # noqa: E402
from copy_floor import start_server  # noqa: E402
from publish_bench import (  # noqa: E402
    COST_HEADER,
    MIB,
    CostFloor,
    cost_row,
    measure,
    pin_process,
    s3_client,
    server_pids,
    write_artifact,
)

from ims_python_helper.local.presign import presigned_get_url  # noqa: E402
from ims_python_helper.local.stack import LocalStack  # noqa: E402

METHODS = ("naive", "floor", "ours")
#: The hashes each method computes over every byte (boto3 checks no checksum with "when_required").
HASHES = {"naive": ("md5",), "floor": (), "ours": ("md5",)}
#: The children run from this light module (no harness imports in what is measured).
CHILDREN = str(HERE / "bench_children.py")


# -- the parent -----------------------------------------------------------------------


def print_costs(samples: Dict[str, List[Any]], costs: Any, mib: int, fixed_s: float) -> None:
    """The CPU per GiB table and the wall bound: the larger of boto3's download and the md5 in memory."""
    summary = costs.summary()
    gib = mib / 1024
    print(f"\nCPU per GiB, hashes and raw copy floor measured in this run (load {os.getloadavg()}):")
    print(COST_HEADER)
    for method in METHODS:
        good = [s for s in samples[method] if s.exit_code == 0] or samples[method]
        cpu = statistics.median(s.cpu_s for s in good)
        print(cost_row(method, HASHES[method], cpu, gib, costs, summary["download_floor_s_per_gib"]))
        if method == "ours":
            label = f"ours, less its {fixed_s:.2f} CPU s of start and imports"
            print(cost_row(label, HASHES[method], cpu - fixed_s, gib, costs, summary["download_floor_s_per_gib"]))
    print(f"  ({costs.spread()}; the median is used)")
    floor_wall = statistics.median(s.wall_s for s in samples["floor"])
    md5_wall = summary["hash_wall_s_per_gib"]["md5"] * gib
    ours = statistics.median(s.wall_s for s in samples["ours"])
    bound = max(floor_wall, md5_wall)
    print(
        f"\nwall bound = max(floor {floor_wall:.2f} s, md5 in memory {md5_wall:.2f} s) = {bound:.2f} s; "
        f"ours {ours:.2f} s = {ours / bound:.2f} x the bound"
    )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="object size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all three methods (default 2)")
    parser.add_argument("--s3", default="auto", choices=("auto", "ceph", "moto"))
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument(
        "--pin",
        metavar="SERVER_CPU:CLIENT_CPU",
        help="keep the S3 server on one CPU and each fetching client on another (as on separate hosts), e.g. 1:0",
    )
    parser.add_argument(
        "--buffered", action="store_true", help="ours writes through the page cache (DownloadOptions(direct_io=False))"
    )
    parser.add_argument(
        "--ours",
        metavar="PARTxCONC[xWINDOW]",
        help="ours with these part MiB, parallel ranges and (optionally) parts ahead of the hasher, e.g. 8x8 or 32x2x3",
    )
    return parser.parse_args(argv)


def print_round(round_no: int, method: str, sample: Any, size: int) -> None:
    """One line per measured run: exit status, wall, CPU, bytes read per byte, peak RSS and the load."""
    print(
        f"round {round_no + 1} {method} exit {sample.exit_code} wall {sample.wall_s:6.2f} s "
        f"cpu {sample.cpu_s:6.2f} s rchar/B {sample.rchar / size:.3f} "
        f"read_bytes/B {sample.read_bytes / size:.3f} peak RSS {sample.max_rss_mb:6.1f} MB "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def print_sample_table(samples: Dict[str, List[Any]], methods: Sequence[str], size: int) -> None:
    """The medians of each method's good runs: wall, CPU, bytes read per byte, peak RSS (a markdown table)."""
    print("| method | wall s | CPU s | rchar / byte | read_bytes / byte | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in methods:
        good = [s for s in samples[method] if s.exit_code == 0] or samples[method]
        print(
            f"| {method} | {statistics.median(s.wall_s for s in good):.2f} "
            f"| {statistics.median(s.cpu_s for s in good):.2f} "
            f"| {statistics.median(s.rchar for s in good) / size:.3f} "
            f"| {statistics.median(s.read_bytes for s in good) / size:.3f} "
            f"| {statistics.median(s.max_rss_mb for s in good):.0f} |"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    publish_bench.compile_package()
    if args.buffered:
        os.environ[BUFFERED_ENV] = "1"
    if args.ours:
        os.environ[SETTINGS_ENV] = args.ours
    with tempfile.TemporaryDirectory(prefix="fetch-bench-") as work_dir:
        work = Path(work_dir)
        with LocalStack(
            data_dir=work / "stack", s3=args.s3, ceph_store="memstore", memstore_bytes=(args.mib + 1024) * MIB
        ) as stack:
            assert stack.s3 is not None
            if args.pin:
                server_cpu, _, client_cpu = args.pin.partition(":")
                publish_bench.SERVER_CPUS.add(int(server_cpu))
                publish_bench.CLIENT_CPUS.add(int(client_cpu))
                for pid in [os.getpid(), *server_pids()]:
                    pin_process(pid, publish_bench.SERVER_CPUS)
            client = s3_client(stack)
            # The far end of the raw copy floor, on the server's CPU (started after pinning, so it inherits it).
            floor_server, floor_port = start_server()
            costs = CostFloor()
            source = work / "rootfs"
            write_artifact(source, args.mib * MIB, seed=1)
            md5 = hashlib.md5(source.read_bytes()).hexdigest()
            client.upload_file(str(source), BUCKET, KEY)
            source.unlink()
            url = presigned_get_url(client, BUCKET, KEY, 3600)
            size = args.mib * MIB
            samples: Dict[str, List[Any]] = {m: [] for m in METHODS}
            for round_no in range(args.rounds):
                costs.sample(floor_port, work / "absent", ["md5"], download_path=work / "floor-out")
                order = METHODS if round_no % 2 == 0 else tuple(reversed(METHODS))
                for method in order:
                    out = work / f"out-{method}"
                    argv_child = [
                        sys.executable,
                        CHILDREN,
                        "fetch",
                        method,
                        url,
                        str(out),
                        md5,
                        stack.s3.endpoint,
                        stack.s3.access_key,
                        stack.s3.secret_key,
                    ]
                    env = dict(os.environ, PYTHONPATH=str(ROOT))
                    sample = measure(argv_child, env, work / f"{method}.log", 0.0)
                    if out.exists():
                        out.unlink()
                    samples[method].append(sample)
                    print_round(round_no, f"{method:5s}", sample, size)
                    time.sleep(1)  # let the server settle between runs
            engine = stack.s3.name
            # The fixed part of ours' CPU: starting Python and importing the download engine.
            imports = [sys.executable, "-c", "import ims_python_helper.pod.download"]
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            fixed_s = statistics.median(measure(imports, env, work / "imports.log", 0.0).cpu_s for _ in range(3))
            floor_server.kill()
            floor_server.wait()
    pinned = f", pinned server:client CPUs {args.pin}" if args.pin else ""
    load = os.getloadavg()
    print(f"\n{args.mib} MiB object on {engine}{pinned}, medians of {args.rounds} rounds (load average now {load}):")
    print_sample_table(samples, METHODS, size)
    ours = statistics.median(s.wall_s for s in samples["ours"])
    naive = statistics.median(s.wall_s for s in samples["naive"])
    print(f"\nours/naive wall: {ours / naive:.2f}")
    print_costs(samples, costs, args.mib, fixed_s)
    if args.json:
        args.json.write_text(json.dumps({m: [vars(s) for s in v] for m, v in samples.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
