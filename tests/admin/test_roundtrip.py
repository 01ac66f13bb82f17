"""Publish, verify, export, import into a second stack, verify there: the same md5 for every artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.admin.conftest import bundle_files, manifest_md5s, object_md5s, publish
from tests.support import Artifacts, CliRunner, ImsApi


def test_export_then_import_into_another_stack_keeps_every_md5(
    run_cli: CliRunner, run_dest: CliRunner, dest_ims: ImsApi, artifacts: Artifacts, s3: Any, tmp_path: Path
):
    source = publish(run_cli, artifacts, "round-trip")
    expected = manifest_md5s(s3, source)
    assert len(expected) == 5

    for mode in ([], ["--quick"]):
        verified = run_cli("image", "verify", source["id"], *mode)
        assert verified.code == 0, verified.stderr
        assert {a["status"] for a in verified.json["artifacts"]} == {"ok"}

    bundle = tmp_path / "bundle"
    exported = run_cli("image", "export", source["id"], str(bundle))
    assert exported.code == 0, exported.stderr
    assert bundle_files(bundle) == expected
    assert not [p.name for p in bundle.iterdir() if p.name.endswith((".part", ".spans", ".json.tmp"))]

    imported = run_dest("image", "import", str(bundle), "--name", "round-trip-copy")
    assert imported.code == 0, imported.stderr
    copy = imported.json["ims_image_record"]
    assert copy["link"]["path"].startswith("s3://boot-images-dest/")
    assert [r["id"] for r in dest_ims.images_named("round-trip-copy")] == [copy["id"]]
    assert manifest_md5s(s3, copy) == expected
    assert object_md5s(s3, copy) == expected

    on_dest = run_dest("image", "verify", copy["id"])
    assert on_dest.code == 0, on_dest.stderr
    assert {a["md5"] for a in on_dest.json["artifacts"]} == set(expected.values())


def test_import_run_again_reuses_the_record_it_made(
    run_cli: CliRunner, run_dest: CliRunner, dest_ims: ImsApi, small_artifacts: Artifacts, tmp_path: Path
):
    source = publish(run_cli, small_artifacts, "import-twice")
    bundle = tmp_path / "bundle"
    assert run_cli("image", "export", source["id"], str(bundle)).code == 0
    first = run_dest("image", "import", str(bundle))
    second = run_dest("image", "import", str(bundle))
    assert first.code == 0 and second.code == 0, second.stderr
    assert first.json["ims_image_record"]["id"] == second.json["ims_image_record"]["id"]
    assert len(dest_ims.images_named("import-twice")) == 1


def test_export_run_again_on_a_finished_bundle_fetches_nothing(
    run_cli: CliRunner, small_artifacts: Artifacts, tmp_path: Path
):
    source = publish(run_cli, small_artifacts, "export-twice")
    bundle = tmp_path / "bundle"
    assert run_cli("image", "export", source["id"], str(bundle)).code == 0
    before = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()}
    again = run_cli("image", "export", source["id"], str(bundle))
    assert again.code == 0, again.stderr
    assert again.json["already_exported"] is True and again.json["bytes_fetched"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()} == before
