"""Re-running a publish with --skip-existing: one linked image, each file read once, nothing uploaded.

What a run sent to S3 is counted by a proxy in front of the stack's S3
(``faults/proxy.py``); what it read from disk by ``/proc/self/io`` of a CLI
child process (``read_probe.py``); what it asked of IMS by the local IMS's
request log. Run alone with ``pytest tests/test_idempotency.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from ims_python_helper.cli import Environment, main
from ims_python_helper.local.stack import LocalStack
from tests.faults.proxy import FaultProxy
from tests.support import Artifacts, CliResult, artifact_bytes_sent

ROOT = Path(__file__).resolve().parent.parent
ALL_KINDS = ("rootfs", "kernel", "initrd", "debug", "boot_parameters")
#: Above the 5 MiB part size the rootfs goes up in parts, so its ETag says nothing about the file.
MULTIPART_ROOTFS = 6 * 1024 * 1024
PART_SIZE_FLAGS = ("--part-size", "5")
#: Every artifact is at least this big, so reading any of them twice shows in the byte count.
SMALLEST_ARTIFACT = 256 * 1024
#: How far the bytes a run reads besides the artifacts may vary between runs.
READ_NOISE = 64 * 1024


def sample_artifacts(directory: Path, seed: int, rootfs_size: int = 4 * SMALLEST_ARTIFACT) -> Artifacts:
    """All five kinds, random bytes, none smaller than ``SMALLEST_ARTIFACT``."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"rootfs": rootfs_size, "kernel": 2 * SMALLEST_ARTIFACT, "initrd": 3 * SMALLEST_ARTIFACT}
    sizes.update(debug=SMALLEST_ARTIFACT, boot_parameters=SMALLEST_ARTIFACT)
    paths = {}
    for kind, size in sizes.items():
        paths[kind] = directory / kind
        paths[kind].write_bytes(rng.randbytes(size))
    return Artifacts(paths)


def total_size(artifacts: Artifacts, kinds: Tuple[str, ...] = ALL_KINDS) -> int:
    return sum(artifacts.paths[kind].stat().st_size for kind in kinds)


def change_one_byte(path: Path, offset: int = 100) -> None:
    """Same size, different content (and md5)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def stack_environment(stack: LocalStack) -> Dict[str, str]:
    """The environment a CLI run against the stack gets (without a job: these runs publish on their own)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    environ.update(stack.env())
    environ["IMS_PROGRESS"] = "log"
    del environ["IMS_JOB_ID"]
    return environ


@dataclass
class Publisher:
    """Publishes through the real CLI, in-process or as a child process, with S3 at ``s3_endpoint``."""

    environ: Dict[str, str]
    s3_endpoint: str
    work_dir: Path

    def argv(self, name: str, artifacts: Artifacts, kinds: Tuple[str, ...], skip: bool) -> List[str]:
        flags = ["--skip-existing"] if skip else []
        return ["image", "upload_artifacts", name, *artifacts.flags(*kinds), *flags, *PART_SIZE_FLAGS]

    def env(self, job_id: Optional[str]) -> Dict[str, str]:
        environ = dict(self.environ, S3_ENDPOINT=self.s3_endpoint)
        if job_id:
            environ["IMS_JOB_ID"] = job_id
        return environ

    def publish(
        self,
        name: str,
        artifacts: Artifacts,
        kinds: Tuple[str, ...] = ALL_KINDS,
        skip: bool = True,
        job_id: Optional[str] = None,
    ) -> CliResult:
        """One in-process CLI run."""
        out, err = io.StringIO(), io.StringIO()
        code = main(self.argv(name, artifacts, kinds, skip), Environment(out, err, self.env(job_id)))
        assert code == 0, err.getvalue()
        return CliResult(code, out.getvalue(), err.getvalue())

    def publish_probed(
        self, name: str, artifacts: Artifacts, kinds: Tuple[str, ...] = ALL_KINDS, skip: bool = True
    ) -> Tuple[CliResult, int]:
        """One CLI run in a child process; also returns the bytes it read from files."""
        report = self.work_dir / "read-report.json"
        probe = [sys.executable, str(ROOT / "tests" / "read_probe.py"), str(report)]
        done = subprocess.run(
            [*probe, *self.argv(name, artifacts, kinds, skip)],
            env=self.env(None),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return CliResult(done.returncode, done.stdout, done.stderr), int(json.loads(report.read_text())["rchar"])


@pytest.fixture
def publisher(stack: LocalStack, s3_proxy: FaultProxy, tmp_path: Path) -> Publisher:
    """Publishes with S3 traffic going through ``s3_proxy``."""
    return Publisher(stack_environment(stack), s3_proxy.url, tmp_path)


@pytest.fixture(scope="module")
def read_overhead(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> int:
    """Bytes a matching --skip-existing run reads besides its artifacts (botocore data files and such).

    Measured once per S3 engine with one-byte artifacts, so it is almost nothing but overhead.
    """
    assert stack.s3 is not None
    work_dir = tmp_path_factory.mktemp("read-overhead")
    publisher = Publisher(stack_environment(stack), stack.s3.endpoint, work_dir)
    tiny = sample_artifacts(work_dir, seed=1)
    for kind in ALL_KINDS:
        tiny.paths[kind].write_bytes(kind[:1].encode())
    # The first run in a child process also warms caches a later run would otherwise read differently (.pyc files).
    publisher.publish_probed("read-overhead", tiny)
    _, read = publisher.publish_probed("read-overhead", tiny)
    return read - total_size(tiny)


@contextlib.contextmanager
def ims_calls(stack: LocalStack) -> Iterator[List[str]]:
    """Collect the ``METHOD /path`` lines the local IMS logged inside the ``with`` block."""
    assert stack.ims is not None
    log = stack.ims.request_log
    start = log.stat().st_size if log.exists() else 0
    calls: List[str] = []
    yield calls
    with open(log, encoding="utf-8") as handle:
        handle.seek(start)
        calls.extend(" ".join(line.split()[1:3]) for line in handle if line.strip())


def image_objects(s3: Any, image_id: str) -> Dict[str, str]:
    """Key to ETag of everything stored under an image's prefix."""
    listing = s3.list_objects_v2(Bucket="boot-images", Prefix=f"{image_id}/")
    return {item["Key"]: item["ETag"] for item in listing.get("Contents", [])}


# -- the done criterion ---------------------------------------------------------------


def test_second_publish_with_skip_existing_reads_each_file_once_uploads_nothing_and_returns_the_image(
    publisher, s3_proxy, tmp_path, read_overhead, ims_api, s3, stack
):
    files = sample_artifacts(tmp_path / "a", seed=11, rootfs_size=MULTIPART_ROOTFS)
    first = publisher.publish("twice", files)
    first_upload = s3_proxy.exchanges
    image = first.json["ims_image_record"]
    stored = image_objects(s3, image["id"])
    s3_proxy.reset()

    with ims_calls(stack) as calls:
        second, read = publisher.publish_probed("twice", files)

    # The first run really uploaded, the rootfs in parts (so its ETag is not its md5).
    assert sum(r.body_bytes for r in first_upload if r.method in ("PUT", "POST")) >= total_size(files)
    assert any(r.method == "POST" and r.path.endswith("/rootfs?uploads") for r in first_upload)
    # The second read every file exactly once (to hash it) ...
    assert read - read_overhead == pytest.approx(total_size(files), abs=READ_NOISE)
    # ... sent nothing to S3 and read back only the manifest, never an artifact ...
    assert s3_proxy.bytes_sent == 0
    assert s3_proxy.writes() == []
    assert [r.path.rsplit("/", 1)[-1] for r in s3_proxy.exchanges if r.method == "GET"] == ["manifest.json"]
    # ... returned the existing record, and created or changed nothing in IMS or S3.
    assert second.json["ims_image_record"] == image
    assert not [c for c in calls if not c.startswith("GET ")], calls
    assert [i["id"] for i in ims_api.images_named("twice")] == [image["id"]]
    assert ims_api.get(f"/images/{image['id']}")["link"] == image["link"]
    assert image_objects(s3, image["id"]) == stored
    # The result has the shape of a publish: the manifest's entries, then the manifest itself.
    assert second.json["result"] == "success"
    assert [a["type"] for a in second.json["ims_image_artifacts"]] == [
        a["type"] for a in first.json["ims_image_artifacts"]
    ]
    assert [a["md5"] for a in second.json["ims_image_artifacts"][:-1]] == [files.md5(k) for k in ALL_KINDS]


def test_a_publish_reads_each_file_once(publisher, s3_proxy, tmp_path, read_overhead):
    files = sample_artifacts(tmp_path / "a", seed=12, rootfs_size=MULTIPART_ROOTFS)

    _, read = publisher.publish_probed("read-once", files)

    # Hashed as it is read: no separate pass to compute the md5. Every file is counted twice: read by the
    # client for its hashes, then by sendfile (the kernel, from the page cache) to send it, in parts or whole.
    assert read - read_overhead == pytest.approx(2 * total_size(files), abs=READ_NOISE)
    assert s3_proxy.bytes_sent >= total_size(files)


# -- what --skip-existing reuses and what it leaves alone -------------------------------


def test_without_skip_existing_a_second_publish_makes_a_second_image(publisher, s3_proxy, tmp_path, ims_api):
    files = sample_artifacts(tmp_path / "a", seed=13)
    first = publisher.publish("no-skip", files, skip=False)
    s3_proxy.reset()

    second = publisher.publish("no-skip", files, skip=False)

    assert second.json["ims_image_record"]["id"] != first.json["ims_image_record"]["id"]
    assert s3_proxy.bytes_sent >= total_size(files)
    assert len([i for i in ims_api.images_named("no-skip") if i.get("link")]) == 2


def test_skip_existing_reuses_an_image_record_without_a_link(publisher, tmp_path, ims_api):
    empty = ims_api.post("/images", {"name": "left-empty", "arch": "aarch64"})
    files = sample_artifacts(tmp_path / "a", seed=14)

    result = publisher.publish("left-empty", files)

    assert result.json["ims_image_record"]["id"] == empty["id"]
    assert [i["id"] for i in ims_api.images_named("left-empty")] == [empty["id"]]
    linked = ims_api.get(f"/images/{empty['id']}")
    assert linked["link"]["path"] == f"s3://boot-images/{empty['id']}/manifest.json"
    assert linked["arch"] == "aarch64"


def test_skip_existing_leaves_an_image_with_other_content_alone_and_makes_a_new_one(
    publisher, s3_proxy, tmp_path, ims_api, s3
):
    files = sample_artifacts(tmp_path / "a", seed=15)
    old = publisher.publish("changed-kernel", files).json["ims_image_record"]
    old_objects = image_objects(s3, old["id"])
    change_one_byte(files.paths["kernel"])
    s3_proxy.reset()

    new = publisher.publish("changed-kernel", files).json["ims_image_record"]

    assert new["id"] != old["id"]
    assert ims_api.get(f"/images/{old['id']}") == old
    assert image_objects(s3, old["id"]) == old_objects
    assert {i["id"] for i in ims_api.images_named("changed-kernel")} == {old["id"], new["id"]}
    assert s3_proxy.bytes_sent >= total_size(files)


@pytest.mark.parametrize(
    ("published", "given"),
    [(("rootfs", "kernel", "initrd"), ("rootfs", "kernel")), (("rootfs", "kernel"), ("rootfs", "kernel", "initrd"))],
    ids=["fewer-files", "more-files"],
)
def test_a_different_set_of_files_is_not_a_match(publisher, tmp_path, ims_api, published, given):
    files = sample_artifacts(tmp_path / "a", seed=16)
    name = f"file-set-{len(published)}-{len(given)}"
    old = publisher.publish(name, files, kinds=published).json["ims_image_record"]

    new = publisher.publish(name, files, kinds=given).json["ims_image_record"]

    assert new["id"] != old["id"]
    assert len(ims_api.images_named(name)) == 2


def test_a_size_mismatch_is_decided_without_hashing(publisher, s3_proxy, tmp_path, read_overhead):
    files = sample_artifacts(tmp_path / "a", seed=17)
    publisher.publish("grown-rootfs", files)
    with open(files.paths["rootfs"], "ab") as handle:
        handle.write(b"one more block" * 100)
    s3_proxy.reset()

    _, read = publisher.publish_probed("grown-rootfs", files)

    # Read to upload (by the client for its hashes, by sendfile to send it); not once more to hash for a
    # comparison the sizes had already decided.
    assert read - read_overhead == pytest.approx(2 * total_size(files), abs=READ_NOISE)
    assert s3_proxy.bytes_sent >= total_size(files)


def test_each_file_is_hashed_once_however_many_images_share_the_name(publisher, s3_proxy, tmp_path, read_overhead):
    files = sample_artifacts(tmp_path / "a", seed=18)
    change_one_byte(files.paths["initrd"])
    other = publisher.publish("two-candidates", files, skip=False).json["ims_image_record"]
    change_one_byte(files.paths["initrd"])  # back to the original bytes
    match = publisher.publish("two-candidates", files, skip=False).json["ims_image_record"]
    s3_proxy.reset()

    result, read = publisher.publish_probed("two-candidates", files)

    assert result.json["ims_image_record"]["id"] == match["id"] != other["id"]
    assert read - read_overhead == pytest.approx(total_size(files), abs=READ_NOISE)
    assert s3_proxy.bytes_sent == 0


@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_an_image_whose_stored_rootfs_no_longer_matches_is_not_reused(publisher, tmp_path, s3, damage):
    files = sample_artifacts(tmp_path / "a", seed=19)
    name = f"damaged-{damage}"
    old = publisher.publish(name, files).json["ims_image_record"]
    key = f"{old['id']}/rootfs"
    if damage == "deleted":
        s3.delete_object(Bucket="boot-images", Key=key)
    else:
        # Same size, other bytes, and md5sum metadata that says so; the manifest still lists the old md5.
        other = bytearray(files.paths["rootfs"].read_bytes())
        other[0] ^= 0xFF
        md5 = hashlib.md5(other).hexdigest()
        s3.put_object(Bucket="boot-images", Key=key, Body=bytes(other), Metadata={"md5sum": md5})

    new = publisher.publish(name, files).json["ims_image_record"]

    assert new["id"] != old["id"]


def test_skip_existing_with_a_new_job_points_that_job_at_the_existing_image(publisher, s3_proxy, tmp_path, ims_api):
    files = sample_artifacts(tmp_path / "a", seed=20)
    first_job, second_job = ims_api.new_job(), ims_api.new_job()
    image = publisher.publish("job-reuse", files, job_id=first_job).json["ims_image_record"]
    s3_proxy.reset()

    result = publisher.publish("job-reuse", files, job_id=second_job)

    assert result.json["ims_image_record"]["id"] == image["id"]
    assert result.json["ims_job_record"]["id"] == second_job
    assert ims_api.get(f"/jobs/{second_job}")["resultant_image_id"] == image["id"]
    assert artifact_bytes_sent(s3_proxy) == 0
    assert len(ims_api.images_named("job-reuse")) == 1
