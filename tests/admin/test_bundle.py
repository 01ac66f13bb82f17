"""A bad bundle creates nothing; an export never leaves a file that looks complete when it is not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.admin.conftest import DEST_BUCKET, publish
from tests.support import Artifacts, CliRunner, ImsApi, Snapshot


@pytest.fixture
def bundle(run_cli: CliRunner, small_artifacts: Artifacts, tmp_path: Path) -> Path:
    """A finished bundle of a freshly published image."""
    record = publish(run_cli, small_artifacts, f"bundle-{tmp_path.name}"[:60])
    directory = tmp_path / "bundle"
    result = run_cli("image", "export", record["id"], str(directory))
    assert result.code == 0, result.stderr
    return directory


@pytest.fixture
def dest_snapshot(dest_ims: ImsApi, s3: Any) -> Callable[[], Snapshot]:
    """Records of the destination IMS and objects of its bucket."""

    def take() -> Snapshot:
        listing = s3.list_objects_v2(Bucket=DEST_BUCKET).get("Contents", [])
        uploads = s3.list_multipart_uploads(Bucket=DEST_BUCKET).get("Uploads", [])
        return Snapshot(
            images={i["id"] for i in dest_ims.get("/images")},
            recipes=set(),
            objects={o["Key"] for o in listing},
            uploads={u["Key"] for u in uploads},
        )

    return take


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ims_python_helper: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_bundle_with_one_changed_byte_is_refused_and_nothing_is_created(
    bundle: Path, run_dest: CliRunner, dest_snapshot: Callable[[], Snapshot]
):
    before = dest_snapshot()
    rootfs = bundle / "rootfs"
    data = bytearray(rootfs.read_bytes())
    data[len(data) // 2] ^= 0x01
    rootfs.write_bytes(bytes(data))

    result = run_dest("image", "import", str(bundle))

    assert result.code == 1
    line = _one_error_line(result.stderr)
    assert "rootfs" in line and "md5" in line
    assert dest_snapshot() == before


def test_an_artifact_type_the_publisher_does_not_know_is_refused_not_dropped(
    bundle: Path, run_dest: CliRunner, dest_snapshot: Callable[[], Snapshot]
):
    before = dest_snapshot()
    record = json.loads((bundle / "bundle.json").read_text())
    extra = bundle / "firmware"
    extra.write_bytes(b"firmware blob\n")
    record["artifacts"].append(
        {"file": "firmware", "type": "application/vnd.example.firmware", "md5": "0" * 32, "size": 14}
    )
    (bundle / "bundle.json").write_text(json.dumps(record))

    result = run_dest("image", "import", str(bundle))

    assert result.code == 1
    assert "application/vnd.example.firmware" in _one_error_line(result.stderr)
    assert dest_snapshot() == before


def test_an_unfinished_bundle_is_refused(bundle: Path, run_dest: CliRunner):
    (bundle / "bundle.json").unlink()
    (bundle / ".export.json").write_text("{}")
    result = run_dest("image", "import", str(bundle))
    assert result.code == 1
    assert "unfinished export" in _one_error_line(result.stderr)


def test_export_into_a_path_that_is_a_file_is_one_line(run_cli: CliRunner, small_artifacts: Artifacts, tmp_path: Path):
    record = publish(run_cli, small_artifacts, "export-to-file")
    target = tmp_path / "not-a-directory"
    target.write_text("x")
    result = run_cli("image", "export", record["id"], str(target))
    assert result.code == 1
    assert "cannot create export directory" in _one_error_line(result.stderr)


def test_export_refuses_a_directory_holding_other_things(
    run_cli: CliRunner, small_artifacts: Artifacts, tmp_path: Path
):
    record = publish(run_cli, small_artifacts, "export-non-empty")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "rootfs").write_text("someone else's file")
    result = run_cli("image", "export", record["id"], str(target))
    assert result.code == 1
    assert "not empty" in _one_error_line(result.stderr)
    assert (target / "rootfs").read_text() == "someone else's file"


def test_an_export_whose_bytes_do_not_match_the_manifest_keeps_no_file(
    run_cli: CliRunner, small_artifacts: Artifacts, s3: Any, tmp_path: Path
):
    record = publish(run_cli, small_artifacts, "export-corrupt")
    bucket, _, key = record["link"]["path"][len("s3://") :].partition("/")
    where = {"Bucket": bucket, "Key": key.rpartition("/")[0] + "/kernel"}
    s3.put_object(Body=s3.get_object(**where)["Body"].read()[::-1], **where)
    target = tmp_path / "bundle"

    result = run_cli("image", "export", record["id"], str(target))

    assert result.code == 1
    assert "kernel" in _one_error_line(result.stderr)
    assert not (target / "kernel").exists() and not (target / "kernel.part").exists()
    assert not (target / "bundle.json").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a directory whose disk fills up (needs the right to mount, else the test is skipped)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_one_line_and_leaves_no_file_looking_complete(
    run_cli: CliRunner, artifacts: Artifacts, small_disk: Path
):
    record = publish(run_cli, artifacts, "export-full-disk")
    target = small_disk / "bundle"

    result = run_cli("image", "export", record["id"], str(target))

    assert result.code == 1
    line = _one_error_line(result.stderr)
    assert "No space left on device" in line and str(target) in line
    assert not (target / "rootfs").exists() and not (target / "bundle.json").exists()


@pytest.mark.parametrize("file_name", ["../rootfs", "/etc/passwd", "bundle.json", ".hidden"])
def test_a_bundle_record_naming_a_path_outside_its_directory_is_refused(
    bundle: Path, run_dest: CliRunner, dest_snapshot: Callable[[], Snapshot], file_name: str
):
    before = dest_snapshot()
    record = json.loads((bundle / "bundle.json").read_text())
    record["artifacts"][0]["file"] = file_name
    (bundle / "bundle.json").write_text(json.dumps(record))
    result = run_dest("image", "import", str(bundle))
    assert result.code == 1
    assert "not a plain file name" in _one_error_line(result.stderr)
    assert dest_snapshot() == before
