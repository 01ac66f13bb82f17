"""An export killed mid-way is finished by the next run, which fetches what is missing and little more.

The S3 side is a fault proxy that counts the bytes it serves. The second range
of the rootfs is held there, so the first run is killed (SIGKILL) with the
first range on disk and everything after it missing; the bytes the second run
is served are then compared with the bytes missing by the export's own record.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ims_python_helper.local.stack import LocalStack
from ims_python_helper.pod.download import DownloadOptions
from tests.admin.conftest import bundle_files, manifest_md5s, publish
from tests.faults.proxy import FaultProxy, ProxyEvent
from tests.support import ROOT, CliRunner, make_artifacts

PART = DownloadOptions().part_size


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll an observable state (a file the child writes) until it holds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def span_counts(path: Path) -> List[int]:
    """The export's record of bytes on disk per span (8-byte counts)."""
    data = path.read_bytes() if path.exists() else b""
    return [struct.unpack_from("<q", data, i)[0] for i in range(0, len(data) - len(data) % 8, 8)]


def missing_bytes(directory: Path, sizes: Dict[str, int]) -> int:
    """Bytes the bundle still lacks, by the export's own record (finished files, then the spans on disk)."""
    missing = 0
    for name, size in sizes.items():
        if (directory / name).exists():
            continue
        missing += size - sum(span_counts(directory / f"{name}.part.spans"))
    return missing


def test_an_export_killed_mid_way_fetches_only_the_missing_bytes_when_run_again(
    stack: LocalStack, stack_env: Dict[str, str], run_cli: CliRunner, s3: Any, tmp_path: Path
):
    # A rootfs of three ranges at the engine's part size: the second one is held.
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=2 * PART + 3 * 1024 * 1024, seed=7)
    record = publish(run_cli, artifacts, "export-killed")
    target = tmp_path / "bundle"
    held, release = threading.Event(), threading.Event()

    def hold_second_range(event: ProxyEvent) -> Optional[str]:
        ranged = event.exchange.headers.get("range", "")
        if event.stage == "request" and ranged.startswith(f"bytes={PART}-") and not release.is_set():
            held.set()
            release.wait(60)
            return "drop"
        return None

    assert stack.s3 is not None
    with FaultProxy(stack.s3.endpoint, name="s3", observer=hold_second_range) as proxy:
        argv = [sys.executable, "-m", "ims_python_helper", "image", "export", record["id"], str(target)]
        env = {**stack_env, "S3_ENDPOINT": proxy.url}
        child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert held.wait(60), "the export never asked for the rootfs' second range"
            spans = target / "rootfs.part.spans"
            wait_until(lambda: span_counts(spans)[:1] == [PART], "the first range on disk")
        finally:
            child.kill()
            child.communicate()
            release.set()
        assert not (target / "rootfs").exists() and not (target / "bundle.json").exists()
        sizes = {name: path.stat().st_size for name, path in artifacts.paths.items()}
        sizes["debug_kernel"] = sizes.pop("debug")
        missing = missing_bytes(target, sizes)
        assert 0 < missing < sum(sizes.values()) - PART // 2

        proxy.reset()
        again = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        served = sum(e.answer_bytes for e in proxy.exchanges if e.method == "GET" and "manifest.json" not in e.path)

    assert served <= missing * 1.10, f"served {served} bytes for {missing} missing"
    assert bundle_files(target) == manifest_md5s(s3, record)
    assert sorted(os.listdir(target)) == sorted([*sizes, "bundle.json", "manifest.json"])
