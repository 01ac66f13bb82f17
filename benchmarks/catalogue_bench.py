"""Catalogue benchmark: a publish against an empty IMS and against one holding many image records.

    PYTHONPATH=. .venv/bin/python benchmarks/catalogue_bench.py                  # 10,000 records, 5 rounds
    PYTHONPATH=. .venv/bin/python benchmarks/catalogue_bench.py --records 2000 --rounds 3 --mib 64

Two local IMS servers share one S3 (moto by default): one empty, one seeded
with ``--records`` image records (written straight into its store). In
alternating rounds the real CLI publishes the same artifacts for a new job
into each, as a child process, through a small relay in front of IMS that
counts the requests and the bytes IMS answers with. Printed per IMS: wall
seconds (median and range), requests to IMS, bytes read from IMS, and whether
an image list (``GET /images``) was read. A publish should cost the same
whatever the catalogue holds: issue 13 asks for the seeded one within 10 % of
the empty one, with no image list read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # runs from a checkout that is not installed

from ims_python_helper.local.stack import LocalStack  # noqa: E402

MIB = 1024 * 1024


class CountingRelay:
    """An HTTP relay to ``upstream`` that counts requests, answer bytes and image-list reads."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_read = 0
        self.lists = 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(
                    self.command, relay.upstream + self.path, data=body, headers=headers, timeout=120
                )
                content = answer.content
                relay.count(self.command, self.path, len(content))
                self.send_response(answer.status_code)
                for key in ("Content-Type", "WWW-Authenticate"):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _relay

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Where the client should send its IMS requests."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, method: str, path: str, size: int) -> None:
        """Note one answered request."""
        with self.lock:
            self.requests += 1
            self.bytes_read += size
            self.lists += method == "GET" and path.rstrip("/").endswith("/images")

    def take(self) -> Dict[str, int]:
        """The counts since the last call, then start again from zero."""
        with self.lock:
            counts = {"requests": self.requests, "bytes_read": self.bytes_read, "lists": self.lists}
            self.requests = self.bytes_read = self.lists = 0
        return counts

    def stop(self) -> None:
        """Stop relaying."""
        self.server.shutdown()
        self.server.server_close()


def make_artifacts(directory: Path, mib: int) -> List[str]:
    """A rootfs of ``mib`` MiB and a small kernel and initrd; returns the CLI flags."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"rootfs": mib * MIB, "kernel": 8 * MIB, "initrd": 16 * MIB}
    flags = []
    for kind, size in sizes.items():
        path = directory / kind
        with open(path, "wb") as handle:
            handle.write(os.urandom(size))
        flags += [f"--{kind}", str(path)]
    return flags


def publish(stack: LocalStack, relay: CountingRelay, flags: List[str], name: str) -> Dict[str, Any]:
    """One publish for a new job through the relay; wall time and the relay's counts."""
    job = requests.post(
        f"{stack.ims.url}/jobs",  # type: ignore[union-attr]
        json={
            "job_type": "create",
            "image_root_archive_name": name,
            "artifact_id": str(uuid.uuid4()),
            "public_key_id": str(uuid.uuid4()),
        },
        headers={"Authorization": f"Bearer {stack.issue_token(600)}"},
        timeout=30,
    ).json()["id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_"))}
    env.update(stack.env())
    env.update({"IMS_URL": relay.url, "IMS_PROGRESS": "log", "LOG_LEVEL": "WARNING"})
    relay.take()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ims_python_helper", "image", "upload_artifacts", name, job, *flags],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"publish failed: {done.stderr.strip().splitlines()[-1]}")
    return {"wall": wall, **relay.take()}


def report(label: str, runs: List[Dict[str, Any]]) -> Dict[str, float]:
    """Print one table row; returns the medians."""
    walls = [r["wall"] for r in runs]
    median = {key: statistics.median(r[key] for r in runs) for key in ("wall", "requests", "bytes_read", "lists")}
    print(
        f"| {label} | {len(runs)} | {median['wall']:.2f} | {min(walls):.2f}-{max(walls):.2f} | "
        f"{median['requests']:.0f} | {median['bytes_read']:.0f} | {max(r['lists'] for r in runs)} |"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10000, help="image records in the seeded IMS")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (one publish into each IMS)")
    parser.add_argument("--mib", type=int, default=128, help="rootfs size in MiB")
    parser.add_argument("--s3", default="moto", choices=("moto", "ceph"), help="S3 engine")
    args = parser.parse_args()
    with contextlib.ExitStack() as resources:
        base = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="catalogue-bench-")))
        flags = make_artifacts(base / "artifacts", args.mib)
        empty = resources.enter_context(LocalStack(data_dir=base / "empty", s3=args.s3, ceph_store="memstore"))
        seeded = resources.enter_context(LocalStack(data_dir=base / "seeded", s3_backend=empty.s3))
        assert empty.ims is not None and seeded.ims is not None
        seeded.ims.seed_images(args.records)
        stacks = {"empty": empty, "seeded": seeded}
        relays = {label: CountingRelay(local.ims.url) for label, local in stacks.items()}  # type: ignore[union-attr]
        for relay in relays.values():
            resources.callback(relay.stop)
        runs: Dict[str, List[Dict[str, Any]]] = {"empty": [], "seeded": []}
        for number in range(args.rounds):
            order = ("empty", "seeded") if number % 2 == 0 else ("seeded", "empty")
            for label in order:
                runs[label].append(publish(stacks[label], relays[label], flags, f"bench-{label}"))
    print(f"\n{args.mib} MiB rootfs + 24 MiB kernel/initrd, {args.rounds} alternating rounds, S3 {args.s3}\n")
    print("| IMS | runs | wall s (median) | min-max | requests to IMS | bytes read from IMS | image lists read |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    first = report("empty", runs["empty"])
    second = report(f"{args.records} image records", runs["seeded"])
    print(f"\nseeded / empty wall: {second['wall'] / first['wall']:.3f}")


if __name__ == "__main__":
    main()
