"""``image verify`` names the artifact that no longer matches its manifest, with both md5s, and exits 1."""

from __future__ import annotations

import hashlib
from typing import Any, Dict

from tests.admin.conftest import publish
from tests.support import Artifacts, CliRunner


def _object(s3: Any, record: Dict[str, Any], name: str) -> Dict[str, str]:
    bucket, _, prefix = record["link"]["path"][len("s3://") :].rpartition("/")[0].partition("/")
    return {"Bucket": bucket, "Key": f"{prefix}/{name}"}


def _rewrite(s3: Any, where: Dict[str, str], body: bytes, keep_metadata: bool = True) -> None:
    """Put other bytes under the key, keeping its metadata (md5sum included): only the bytes tell."""
    head = s3.head_object(**where)
    metadata = head["Metadata"] if keep_metadata else {}
    s3.put_object(Body=body, Metadata=metadata, ContentType=head["ContentType"], **where)


def test_same_size_other_bytes_fail_the_full_check_naming_both_md5s(
    run_cli: CliRunner, small_artifacts: Artifacts, s3: Any
):
    record = publish(run_cli, small_artifacts, "verify-overwritten")
    where = _object(s3, record, "rootfs")
    original = s3.get_object(**where)["Body"].read()
    changed = bytes([original[0] ^ 0xFF]) + original[1:]
    _rewrite(s3, where, changed)

    result = run_cli("image", "verify", record["id"])

    assert result.code == 1
    rootfs = next(a for a in result.json["artifacts"] if a["name"] == "rootfs")
    assert rootfs["status"] != "ok"
    assert rootfs["md5"] == hashlib.md5(changed).hexdigest()
    assert rootfs["expected_md5"] == small_artifacts.md5("rootfs")
    assert {a["status"] for a in result.json["artifacts"] if a["name"] != "rootfs"} == {"ok"}
    line = result.stderr.strip().splitlines()[-1]
    assert "rootfs" in line and hashlib.md5(changed).hexdigest() in line and small_artifacts.md5("rootfs") in line


def test_the_full_check_reads_the_bytes_even_when_etag_and_metadata_agree(
    run_cli: CliRunner, small_artifacts: Artifacts, s3: Any, tmp_path: Any
):
    """The md5 of the bytes is what the full check stands on: with the manifest's ETag faked to the new object's,
    only the bytes can tell (and the quick check, which reads none, cannot)."""
    record = publish(run_cli, small_artifacts, "verify-bytes")
    where = _object(s3, record, "kernel")
    original = s3.get_object(**where)["Body"].read()
    _rewrite(s3, where, original[::-1])
    new_etag = s3.head_object(**where)["ETag"].strip('"')
    manifest_at = {"Bucket": where["Bucket"], "Key": where["Key"].rpartition("/")[0] + "/manifest.json"}
    text = s3.get_object(**manifest_at)["Body"].read().decode()
    old_etag = hashlib.md5(original).hexdigest()
    assert old_etag in text
    s3.put_object(Body=text.replace(old_etag, new_etag).encode(), **manifest_at)

    quick = run_cli("image", "verify", record["id"], "--quick")
    full = run_cli("image", "verify", record["id"])

    kernel = next(a for a in full.json["artifacts"] if a["name"] == "kernel")
    assert full.code == 1 and kernel["status"] == "md5 mismatch", full.stdout
    assert kernel["md5"] == hashlib.md5(original[::-1]).hexdigest()
    # The manifest's own bytes changed too: the record's link ETag names the old one.
    assert full.json["manifest"]["status"] != "ok" and quick.code == 1


def test_quick_check_catches_a_deleted_and_a_truncated_artifact(
    run_cli: CliRunner, small_artifacts: Artifacts, s3: Any
):
    record = publish(run_cli, small_artifacts, "verify-quick")
    s3.delete_object(**_object(s3, record, "initrd"))
    where = _object(s3, record, "rootfs")
    _rewrite(s3, where, s3.get_object(**where)["Body"].read()[:1000])

    result = run_cli("image", "verify", record["id"], "--quick")

    assert result.code == 1
    status = {a["name"]: a["status"] for a in result.json["artifacts"]}
    assert status["initrd"] == "missing"
    assert status["rootfs"] != "ok"
    assert {status[name] for name in ("kernel", "debug_kernel", "boot_parameters")} == {"ok"}
    assert "initrd" in result.stderr and "rootfs" in result.stderr


def test_verify_of_an_unknown_image_is_one_line(run_cli: CliRunner):
    result = run_cli("image", "verify", "7d6f1e0a-0000-4000-8000-000000000000")
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ims_python_helper: error: IMS has no image")


def test_an_image_id_that_is_not_a_uuid_is_a_usage_error(run_cli: CliRunner):
    result = run_cli("image", "verify", "not-a-uuid")
    assert result.code == 2


def test_an_image_record_without_a_link_has_nothing_to_verify_or_export(
    run_cli: CliRunner, ims_api: Any, tmp_path: Any
):
    empty = ims_api.post("/images", {"name": "no-artifacts"})
    for argv in (("image", "verify", empty["id"]), ("image", "export", empty["id"], str(tmp_path / "b"))):
        result = run_cli(*argv)
        assert result.code == 1
        assert "has no link" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "b").exists()
