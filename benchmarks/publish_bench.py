"""Publish benchmark: ``image upload_artifacts`` against two baselines, on the local stack.

    PYTHONPATH=. .venv/bin/python benchmarks/publish_bench.py                        # 1 GiB rootfs, 5 rounds
    PYTHONPATH=. .venv/bin/python benchmarks/publish_bench.py --rootfs-mib 1024 4096 --markdown
    PYTHONPATH=. .venv/bin/python benchmarks/publish_bench.py --methods ours --ours 8x8 16x8 32x4  # tune

Starts the local stack (Ceph RGW when its packages are installed, else moto;
``--s3`` chooses), writes artifact files of the given sizes (default: 1 GiB
rootfs, 16 MiB kernel, 64 MiB initrd; incompressible bytes) and measures, in
rounds that alternate the methods:

1. ``floor``: boto3 ``upload_file`` of the same files one after another,
   default ``TransferConfig``, no hashing, no IMS (``baselines.py floor``);
2. ``naive``: md5 of each file, then ``upload_file``, artifact after artifact,
   then the IMS calls: the earlier clients' algorithm (``baselines.py naive``);
3. ``ours``: ``python -m ims_python_helper image upload_artifacts`` end to end
   (token, IMS record, uploads, verification, manifest, link, job).

Every method runs as a child process of this one and is measured the same way:
wall seconds from start to exit; CPU seconds (user + system) from ``wait4``;
peak RSS from ``VmHWM``, sampled every 20 ms while it runs; bytes read through read(2) (``rchar``) and from the block
device (``read_bytes``) from ``/proc/PID/io``, read after the child exits but
before it is reaped. ``rchar`` includes the interpreter and library files a
process loads (about 20 to 40 MB, measured with ``--startup``), so it is a
little above the artifact bytes even for a single read. The files are read
once before the first round, so every method reads them from the page cache
(``read_bytes`` 0): the disk is not what is measured. CPU seconds of the S3
server (all child processes of the stack) are reported too: on a small machine
client and server share the cores.

After each run the objects are deleted (and, on Ceph, garbage-collected, so the
in-memory object store does not fill). Other work on a 2-core machine moves
the figures more than anything measured here, so before each run the benchmark
waits up to ``--quiet-wait`` seconds for the machine to be idle, and a run
counts only when everything else on the machine (all CPU time minus the child's
the S3 server's and this process's, which runs the stack's IMS) used at most ``--max-foreign-cpu`` of one CPU while it
ran; rounds go on until each method has ``--repeats`` such runs (at most three
times as many rounds). Every run, counted or not, is in the JSON.

It also times the copy in place that adds the ``md5sum`` metadata after a
multipart upload (CopyObject onto the same key, MetadataDirective REPLACE) on
an object of the rootfs size, to show whether the server copies data.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import boto3

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # runs from a checkout that is not installed

sys.path.insert(0, str(HERE))
from copy_floor import start_server  # noqa: E402

from ims_python_helper.local.s3client import backend_s3_client  # noqa: E402
from ims_python_helper.local.stack import LocalStack  # noqa: E402

MIB = 1024 * 1024
BUCKET = "boot-images"
#: How often a running child's peak memory is sampled.
POLL_S = 0.02


# -- measuring a child process ----------------------------------------------------------


@dataclass
class Sample:
    """What one run of one method cost."""

    wall_s: float
    cpu_s: float
    rchar: int
    read_bytes: int
    max_rss_mb: float
    server_cpu_s: float
    busy_before: float
    exit_code: int
    #: CPU seconds the rest of the machine used during the run (not this child, not the S3 server).
    foreign_cpu_s: float = 0.0

    def clean(self, limit: float) -> bool:
        """True when the run succeeded and other work took less than ``limit`` of one CPU meanwhile."""
        return self.exit_code == 0 and self.foreign_cpu_s <= limit * self.wall_s


def proc_io(pid: int) -> Dict[str, int]:
    """``/proc/PID/io`` as a dict (readable while the process is a zombie)."""
    fields = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = int(value)
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    values = stat.rsplit(")", 1)[1].split()
    return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")


def high_water_kib(pid: int) -> int:
    """Peak resident memory of a running process since its exec (``VmHWM``), in KiB.

    ``ru_maxrss`` from wait4 is no good here: it keeps the high-water mark of
    the address space the child was forked from, i.e. this (larger) process.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def server_pids() -> List[int]:
    """Processes this one started for the stack (Ceph daemons or the moto server)."""
    me = str(os.getpid())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return pids


def cpu_ticks() -> Tuple[int, int]:
    """All CPU time and idle time of the machine so far, in clock ticks (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]


def task_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used (user, nice, system; not interrupts or idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (values[0] + values[1] + values[2]) / os.sysconf("SC_CLK_TCK")


def machine_busy(seconds: float = 0.5) -> float:
    """Fraction of all CPUs busy over ``seconds``."""
    total0, idle0 = cpu_ticks()
    time.sleep(seconds)
    total1, idle1 = cpu_ticks()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(limit_s: float, threshold: float = 0.10) -> float:
    """Wait (at most ``limit_s``) until the machine is nearly idle; returns the last load seen."""
    deadline = time.monotonic() + limit_s
    busy = machine_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy(1.0)
    return busy


def pin_process(pid: int, cpus: Set[int]) -> None:
    """Keep every thread of ``pid`` on ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            continue  # the thread ended meanwhile


#: With ``--pin``: the CPUs of the S3 server (and this process, which runs IMS) and of the client.
SERVER_CPUS: Set[int] = set()
CLIENT_CPUS: Set[int] = set()


def _pin_client() -> None:
    if CLIENT_CPUS:
        os.sched_setaffinity(0, CLIENT_CPUS)


def measure(argv: Sequence[str], env: Dict[str, str], log: Path, busy_before: float) -> Sample:
    """Run ``argv`` as a child and measure it (see the module docstring)."""
    servers = server_pids()
    server_before = sum(cpu_seconds(pid) for pid in servers)
    machine_before = task_cpu_seconds()
    self_before = cpu_seconds(os.getpid())  # the stack's IMS and token servers run in this process
    with open(log, "wb") as output:
        started = time.perf_counter()
        child = subprocess.Popen(
            list(argv), env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_pin_client
        )
        peak_kib = 0
        # Wait for the exit but leave the child unreaped, so its /proc entry (and io counters) stay.
        while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            peak_kib = max(peak_kib, high_water_kib(child.pid))
            time.sleep(POLL_S)
        wall = time.perf_counter() - started
        io = proc_io(child.pid)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    server_after = sum(cpu_seconds(pid) for pid in servers)
    machine_s = task_cpu_seconds() - machine_before
    own_s = usage.ru_utime + usage.ru_stime + server_after - server_before + cpu_seconds(os.getpid()) - self_before
    return Sample(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        rchar=io["rchar"],
        read_bytes=io["read_bytes"],
        max_rss_mb=peak_kib / 1024,
        server_cpu_s=server_after - server_before,
        busy_before=busy_before,
        exit_code=child.returncode,
        # This process's own polling is in here too (well under 1 % of a CPU).
        foreign_cpu_s=max(0.0, machine_s - own_s),
    )


# -- what every transfer pays: the raw copy floor and the hashes, measured in the same run ----

#: The hashes each method computes over every artifact byte: ours the file's md5 and the parts' md5s;
#: boto3 over plain HTTP the SigV4 payload SHA-256 (ours sends Content-MD5 with unsigned payloads).
HASHES = {"floor": ("sha256",), "naive": ("md5", "sha256"), "ours": ("md5", "md5")}


def run_on_client_cpu(*args: str) -> Dict[str, Any]:
    """Run a ``copy_floor.py`` command on the client's CPU(s); its JSON result."""
    done = subprocess.run(
        [sys.executable, str(HERE / "copy_floor.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_pin_client,
    )
    result: Dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


#: Copy-floor measurements per round (the median of all of them is used).
FLOOR_REPEATS = 5


@dataclass
class CostFloor:
    """The raw copy floor and the hash costs, in CPU seconds per GiB, sampled in every round.

    The copy floors move by about 20 % from one measurement to the next, so
    each round takes ``FLOOR_REPEATS`` of each and the tables use the median
    of all of them; ``spread`` gives their range for the printout.
    """

    upload_s: List[float] = field(default_factory=list)
    download_s: List[float] = field(default_factory=list)
    hash_s: Dict[str, List[float]] = field(default_factory=dict)
    hash_wall_s: Dict[str, List[float]] = field(default_factory=dict)

    def sample(self, port: int, path: Path, hashes: Sequence[str], download_path: Optional[Path] = None) -> None:
        """Measure the floors (upload of ``path``, download of as many bytes) and each hash."""
        from copy_floor import per_gib

        size = path.stat().st_size if path.exists() else 0
        for _ in range(FLOOR_REPEATS):
            if size:
                self.upload_s.append(per_gib(run_on_client_cpu("send", str(path), str(port))))
            if download_path is not None:
                result = run_on_client_cpu("receive", str(download_path), str(port), str(size or 1024 * MIB))
                self.download_s.append(per_gib(result))
        for name, result in run_on_client_cpu("hash", *sorted(set(hashes)), "--mib", "512").items():
            self.hash_s.setdefault(name, []).append(per_gib(result))
            self.hash_wall_s.setdefault(name, []).append(per_gib(result, "wall_s"))

    def spread(self) -> str:
        """The range of the copy floors sampled, e.g. for a line under a table."""
        parts = [
            f"{name} floor {min(values):.2f} to {max(values):.2f} s/GiB over {len(values)} samples"
            for name, values in (("upload", self.upload_s), ("download", self.download_s))
            if values
        ]
        return "; ".join(parts)

    def hashes_s(self, names: Sequence[str]) -> float:
        """CPU seconds per GiB of computing each of ``names`` (repeats count) over every byte."""
        return sum(statistics.median(self.hash_s[name]) for name in names)

    def summary(self) -> Dict[str, Any]:
        """Medians, for the JSON and the tables."""
        median = statistics.median
        return {
            "upload_floor_s_per_gib": median(self.upload_s) if self.upload_s else None,
            "download_floor_s_per_gib": median(self.download_s) if self.download_s else None,
            "hash_s_per_gib": {name: median(values) for name, values in self.hash_s.items()},
            "hash_wall_s_per_gib": {name: median(values) for name, values in self.hash_wall_s.items()},
            "samples": asdict(self),
        }


def cost_row(label: str, hashes: Sequence[str], cpu_s: float, gib: float, floor: CostFloor, copy_floor: float) -> str:
    """A Markdown row: client CPU per GiB, its hashes, the rest, the raw copy floor, and the rest over the floor."""
    client = cpu_s / gib
    hashed = floor.hashes_s(hashes)
    beyond = client - hashed
    names = " + ".join(hashes) or "none"
    return (
        f"| {label} | {client:.2f} | {names} = {hashed:.2f} | {beyond:.2f} | {copy_floor:.2f} "
        f"| {beyond / copy_floor:.2f} |"
    )


COST_HEADER = (
    "| method | client CPU s/GiB | its hashes (in-run hashlib) s/GiB | beyond the hashes | raw copy floor "
    "| ratio |\n| --- | --- | --- | --- | --- | --- |"
)


# -- the stack and the files ------------------------------------------------------------


def write_artifact(path: Path, size: int, seed: int) -> None:
    """``size`` incompressible bytes, different in every MiB (so parts differ)."""
    block = os.urandom(MIB)
    with open(path, "wb") as handle:
        for index in range(size // MIB):
            handle.write(seed.to_bytes(4, "little") + index.to_bytes(8, "little") + block[12:])
        handle.write(block[: size % MIB])


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Read each file once so every method reads it from memory, not the disk."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(8 * MIB):
                pass


def s3_client(stack: LocalStack) -> Any:
    """A plain client for housekeeping (deleting what a run stored, the copy-in-place timing)."""
    assert stack.s3 is not None
    return backend_s3_client(stack.s3, read_timeout=600)


def empty_bucket(stack: LocalStack, client: Any) -> None:
    """Delete every object and unfinished upload; on Ceph also free the deleted data's memory now."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    conf = getattr(stack.s3, "conf", None)
    if conf is not None:
        env = {k: v for k, v in os.environ.items() if k != "CEPH_ARGS"}
        subprocess.run(
            ["radosgw-admin", "-c", str(conf), "gc", "process", "--include-all"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )


def time_copy_in_place(stack: LocalStack, client: Any, path: Path, repeats: int = 3) -> Dict[str, Any]:
    """Seconds a CopyObject onto the same key (new metadata) takes for an object of ``path``'s size."""
    from boto3.s3.transfer import TransferConfig

    key = "bench/copy-in-place"
    size = path.stat().st_size
    config = TransferConfig(multipart_threshold=16 * MIB, multipart_chunksize=16 * MIB, max_concurrency=8)
    client.upload_file(str(path), BUCKET, key, Config=config)
    etag_before = client.head_object(Bucket=BUCKET, Key=key)["ETag"]
    seconds = []
    for round_number in range(repeats):
        started = time.perf_counter()
        if size <= 5 * 1024**3:
            client.copy_object(
                Bucket=BUCKET,
                Key=key,
                CopySource={"Bucket": BUCKET, "Key": key},
                MetadataDirective="REPLACE",
                Metadata={"md5sum": f"round-{round_number}"},
                ContentType="application/vnd.cray.image.rootfs.squashfs",
            )
        seconds.append(time.perf_counter() - started)
    head = client.head_object(Bucket=BUCKET, Key=key)
    empty_bucket(stack, client)
    return {
        "object_bytes": size,
        "seconds": [round(s, 4) for s in seconds],
        "median_s": round(statistics.median(seconds), 4),
        "etag_unchanged": head["ETag"] == etag_before,
        "metadata_after": head.get("Metadata", {}),
    }


# -- the methods --------------------------------------------------------------------------


@dataclass
class Method:
    """One way of publishing the files: a label and how to start it."""

    label: str
    kind: str  # floor, naive, ours
    part_mib: Optional[int] = None
    concurrency: Optional[int] = None
    samples: List[Sample] = field(default_factory=list)

    def argv(self, files: Dict[str, Path]) -> List[str]:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        paths = [str(files["rootfs"]), str(files["kernel"]), str(files["initrd"])]
        if self.kind == "floor":
            return [sys.executable, str(HERE / "baselines.py"), "floor", *paths]
        if self.kind == "naive":
            return [sys.executable, str(HERE / "baselines.py"), "naive", name, *paths]
        argv = [sys.executable, "-m", "ims_python_helper", "image", "upload_artifacts", name]
        argv += ["-r", paths[0], "-k", paths[1], "-i", paths[2]]
        if self.part_mib:
            argv += ["--part-size", str(self.part_mib)]
        if self.concurrency:
            argv += ["--concurrency", str(self.concurrency)]
        return argv


def parse_variant(text: str) -> Tuple[int, int]:
    """``16x8``: 16 MiB parts, 8 requests at once."""
    part, _, concurrency = text.lower().partition("x")
    return int(part), int(concurrency)


def summarize(method: Method, artifact_bytes: int, foreign_limit: float) -> Dict[str, Any]:
    good = [s for s in method.samples if s.clean(foreign_limit)]
    failed = sum(1 for s in method.samples if s.exit_code != 0)
    if not good:
        return {"label": method.label, "failed": failed, "disturbed": len(method.samples) - failed}
    wall = statistics.median(s.wall_s for s in good)
    return {
        "label": method.label,
        "runs": len(good),
        "failed": failed,
        "disturbed": len(method.samples) - len(good) - failed,
        "wall_median_s": wall,
        "wall_min_s": min(s.wall_s for s in good),
        "wall_max_s": max(s.wall_s for s in good),
        "MiB_per_s": artifact_bytes / MIB / wall,
        "cpu_s": statistics.median(s.cpu_s for s in good),
        "server_cpu_s": statistics.median(s.server_cpu_s for s in good),
        "rchar_per_byte": statistics.median(s.rchar for s in good) / artifact_bytes,
        "read_bytes_per_byte": statistics.median(s.read_bytes for s in good) / artifact_bytes,
        "max_rss_mb": max(s.max_rss_mb for s in good),
    }


def print_table(title: str, rows: List[Dict[str, Any]], markdown: bool) -> None:
    headers = [
        "method",
        "runs",
        "wall s (median)",
        "min-max",
        "MiB/s",
        "client CPU s",
        "server CPU s",
        "rchar / artifact byte",
        "peak RSS MB",
    ]
    lines = []
    for row in rows:
        if "wall_median_s" not in row:
            lines.append([row["label"], "none clean", "", "", "", "", "", "", ""])
            continue
        lines.append(
            [
                row["label"],
                str(row["runs"]),
                f"{row['wall_median_s']:.2f}",
                f"{row['wall_min_s']:.2f}-{row['wall_max_s']:.2f}",
                f"{row['MiB_per_s']:.0f}",
                f"{row['cpu_s']:.2f}",
                f"{row['server_cpu_s']:.2f}",
                f"{row['rchar_per_byte']:.3f}",
                f"{row['max_rss_mb']:.0f}",
            ]
        )
    print(f"\n{title}")
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join(" --- " for _ in headers) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        for line in lines:
            print("  ".join(v.ljust(w) for v, w in zip(line, widths)))


def ratios(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    by_label = {row["label"]: row for row in rows if "wall_median_s" in row}
    ours = next((row for row in rows if row["label"].startswith("ours") and "wall_median_s" in row), None)
    result: Dict[str, float] = {}
    if ours is None:
        return result
    for base in ("floor", "naive"):
        if base in by_label:
            result[f"{ours['label']} / {base} (wall)"] = ours["wall_median_s"] / by_label[base]["wall_median_s"]
    return result


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs-mib", type=int, nargs="+", default=[1024], help="rootfs sizes to run (MiB)")
    parser.add_argument("--kernel-mib", type=int, default=16)
    parser.add_argument("--initrd-mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each runs every method once)")
    parser.add_argument("--s3", choices=("auto", "ceph", "moto"), default="auto")
    parser.add_argument("--methods", default="floor,naive,ours", help="comma-separated subset of floor,naive,ours")
    parser.add_argument(
        "--ours", nargs="+", default=[], metavar="PARTxCONC", help="measure ours with these settings (e.g. 16x8)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="where the artifacts and stack live")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="seconds to wait for an idle machine per run")
    parser.add_argument(
        "--max-foreign-cpu",
        type=float,
        default=0.15,
        metavar="FRACTION",
        help="a run counts only if other work used at most this fraction of one CPU meanwhile",
    )
    parser.add_argument("--no-copy-timing", action="store_true", help="skip timing the copy in place")
    parser.add_argument(
        "--pin",
        metavar="SERVER_CPU:CLIENT_CPU",
        default="",
        help="keep the S3 server and IMS on one CPU and the client on another (as on separate hosts), e.g. 1:0",
    )
    parser.add_argument("--startup", action="store_true", help="also measure the CLI's fixed cost (tiny upload)")
    parser.add_argument("--json", type=Path, default=None, help="write every sample here")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    return parser.parse_args(argv)


def build_methods(args: argparse.Namespace) -> List[Method]:
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods: List[Method] = []
    for kind in wanted:
        if kind in ("floor", "naive"):
            methods.append(Method(kind, kind))
        elif kind == "ours":
            if not args.ours:
                methods.append(Method("ours", "ours"))
            for variant in args.ours:
                part, concurrency = parse_variant(variant)
                methods.append(Method(f"ours {part}x{concurrency}", "ours", part, concurrency))
        else:
            raise SystemExit(f"unknown method {kind!r}")
    return methods


def run_size(args: argparse.Namespace, stack: LocalStack, work: Path, rootfs_mib: int, client: Any) -> Dict[str, Any]:
    files = {"rootfs": work / "rootfs", "kernel": work / "kernel", "initrd": work / "initrd"}
    sizes = {"rootfs": rootfs_mib * MIB, "kernel": args.kernel_mib * MIB, "initrd": args.initrd_mib * MIB}
    for seed, (name, path) in enumerate(files.items()):
        if not path.exists() or path.stat().st_size != sizes[name]:
            write_artifact(path, sizes[name], seed)
    warm_page_cache(list(files.values()))
    artifact_bytes = sum(sizes.values())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    env.update(stack.env())
    env["IMS_PROGRESS"] = "log"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")

    methods = build_methods(args)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    limit = args.max_foreign_cpu
    costs = CostFloor()
    hashes = [name for m in methods for name in HASHES[m.kind]]
    round_number = 0
    # Rounds go on until every method has --repeats clean runs (no failure, the machine otherwise
    # quiet), or three times that many rounds have run.
    while round_number < 3 * args.repeats:
        wanted = [m for m in methods if sum(s.clean(limit) for s in m.samples) < args.repeats]
        if not wanted:
            break
        # Rotate the order each round so no method always runs first (or right after the same one).
        shift = round_number % len(wanted)
        costs.sample(args.floor_port, files["rootfs"], hashes)
        for method in wanted[shift:] + wanted[:shift]:
            busy = wait_until_quiet(args.quiet_wait)
            log = logs / f"{rootfs_mib}-{method.label.replace(' ', '_')}-{round_number}.log"
            sample = measure(method.argv(files), env, log, busy)
            method.samples.append(sample)
            if sample.exit_code != 0:
                status = f"FAILED (exit {sample.exit_code}, see {log})"
            elif not sample.clean(limit):
                status = "disturbed (not counted)"
            else:
                status = "ok"
            print(
                f"  {rootfs_mib} MiB round {round_number + 1} {method.label:12s} "
                f"{sample.wall_s:6.2f} s  cpu {sample.cpu_s:5.2f}  rss {sample.max_rss_mb:4.0f} MB  "
                f"other work {sample.foreign_cpu_s / sample.wall_s:4.0%} of a CPU  {status}",
                flush=True,
            )
            empty_bucket(stack, client)
        round_number += 1

    rows = [summarize(m, artifact_bytes, limit) for m in methods]
    result: Dict[str, Any] = {
        "rootfs_mib": rootfs_mib,
        "kernel_mib": args.kernel_mib,
        "initrd_mib": args.initrd_mib,
        "artifact_bytes": artifact_bytes,
        "rows": rows,
        "ratios": ratios(rows),
        "cost_floor": costs.summary(),
        "samples": {m.label: [asdict(s) for s in m.samples] for m in methods},
    }
    if not args.no_copy_timing:
        result["copy_in_place"] = time_copy_in_place(stack, client, files["rootfs"])
    if args.startup:
        tiny = work / "tiny"
        tiny.write_bytes(os.urandom(4096))
        startup = Method("ours", "ours")
        argv = startup.argv({"rootfs": tiny, "kernel": tiny, "initrd": tiny})
        samples = [measure(argv, env, logs / "startup.log", wait_until_quiet(args.quiet_wait)) for _ in range(3)]
        result["startup"] = {
            "wall_s": statistics.median(s.wall_s for s in samples),
            "rchar_mb": statistics.median(s.rchar for s in samples) / 1e6,
            "max_rss_mb": max(s.max_rss_mb for s in samples),
            "cpu_s": statistics.median(s.cpu_s for s in samples),
        }
        empty_bucket(stack, client)
    result["cost_rows"] = cost_rows(methods, rows, artifact_bytes, costs, result.get("startup"))
    result["floor_spread"] = costs.spread()
    return result


def cost_rows(
    methods: List[Method], rows: List[Dict[str, Any]], artifact_bytes: int, costs: CostFloor, startup: Any
) -> List[str]:
    """The CPU-per-GiB rows; with ``--startup`` also ours without the CLI's fixed cost (a 4 KiB publish's CPU)."""
    gib = artifact_bytes / 1024**3
    floor = costs.summary()["upload_floor_s_per_gib"]
    lines = []
    for method, row in zip(methods, rows):
        if "cpu_s" not in row:
            continue
        lines.append(cost_row(method.label, HASHES[method.kind], row["cpu_s"], gib, costs, floor))
        if startup and method.kind == "ours":
            label = f"{method.label}, less the CLI's fixed {startup['cpu_s']:.2f} CPU s"
            lines.append(cost_row(label, HASHES["ours"], row["cpu_s"] - startup["cpu_s"], gib, costs, floor))
    return lines


def describe_machine(stack: LocalStack) -> Dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    info: Dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "s3": stack.s3.name if stack.s3 is not None else "",
    }
    if info["s3"] == "ceph":
        version = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, check=False)
        info["radosgw"] = version.stdout.strip()
    return info


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so the stack is stopped on the way out


def compile_package() -> None:
    """Byte-compile the package, as pip does when it installs it.

    Run from a checkout, a module whose source changed since its ``.pyc`` was
    written is compiled again by every process that imports it, and never
    written back where ``PYTHONDONTWRITEBYTECODE`` is set (it is on these
    machines): up to 0.08 CPU s more per command with no ``.pyc`` at all.
    """
    compileall.compile_dir(str(ROOT / "ims_python_helper"), quiet=1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    compile_package()
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return run_benchmark(args, args.work_dir)
    # A directory of its own is removed at the end: each run writes the artifacts of every size (GiBs).
    with tempfile.TemporaryDirectory(prefix="publish-bench-") as work:
        return run_benchmark(args, Path(work))


def run_benchmark(args: argparse.Namespace, work: Path) -> int:
    """Start the stack in ``work``, measure every size, print the tables."""
    largest = max(args.rootfs_mib) + args.kernel_mib + args.initrd_mib
    # Room for one publish plus the copy-in-place object; memstore takes RAM only as it fills.
    memstore = (2 * largest + 1024) * MIB
    stack = LocalStack(data_dir=work / "stack", s3=args.s3, memstore_bytes=memstore)
    stack.start()
    floor_server = None
    try:
        if args.pin:
            server_cpu, _, client_cpu = args.pin.partition(":")
            SERVER_CPUS.add(int(server_cpu))
            CLIENT_CPUS.add(int(client_cpu))
            for pid in [os.getpid(), *server_pids()]:
                pin_process(pid, SERVER_CPUS)
        # The far end of the raw copy floor, on the server's CPU (started after pinning, so it inherits it).
        floor_server, args.floor_port = start_server()
        machine = describe_machine(stack)
        machine["pinned"] = args.pin or "no"
        print(f"machine: {json.dumps(machine)}", flush=True)
        client = s3_client(stack)
        results = [run_size(args, stack, work, size, client) for size in args.rootfs_mib]
    finally:
        if floor_server is not None:
            floor_server.kill()
            floor_server.wait()
        stack.stop()
    for result in results:
        title = (
            f"rootfs {result['rootfs_mib']} MiB + kernel {result['kernel_mib']} MiB + initrd "
            f"{result['initrd_mib']} MiB on {machine['s3']} ({machine['cpus']} CPUs)"
        )
        print_table(title, result["rows"], args.markdown)
        for name, value in result["ratios"].items():
            print(f"  {name}: {value:.2f}")
        print(f"\nCPU per GiB of artifacts, hashes and raw copy floor measured in this run (load {os.getloadavg()}):")
        print(COST_HEADER)
        for row in result["cost_rows"]:
            print(row)
        print(f"  ({result['floor_spread']}; the median is used)")
        if "copy_in_place" in result:
            copy = result["copy_in_place"]
            print(
                f"  copy in place of a {copy['object_bytes'] / MIB:.0f} MiB object: {copy['median_s']:.3f} s "
                f"(ETag unchanged: {copy['etag_unchanged']})"
            )
        if "startup" in result:
            start = result["startup"]
            print(
                f"  CLI fixed cost (4 KiB artifacts): {start['wall_s']:.2f} s, "
                f"{start['cpu_s']:.2f} CPU s, {start['rchar_mb']:.0f} MB read, {start['max_rss_mb']:.0f} MB RSS"
            )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
