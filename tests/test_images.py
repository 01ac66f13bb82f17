"""Publishing images end to end through the real CLI, checked independently through S3 and the IMS API.

Run alone with ``python tests/test_images.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ims_python_helper.artifacts import ARTIFACT_KINDS

ALL_KINDS = ("rootfs", "kernel", "initrd", "debug", "boot_parameters")


def test_publish_all_five_kinds_is_stored_linked_and_recorded(run_cli, artifacts, s3, ims_api, stack):
    result = run_cli("image", "upload_artifacts", "five-kinds", stack.job_id, *artifacts.flags(*ALL_KINDS))

    assert result.code == 0, result.stderr
    output = result.json
    assert output["result"] == "success"
    image = output["ims_image_record"]
    image_id = image["id"]

    # S3: every object is there with the right type and metadata.
    for kind in ARTIFACT_KINDS:
        head = s3.head_object(Bucket="boot-images", Key=f"{image_id}/{kind.key}")
        assert head["ContentType"] == kind.mime_type
        assert head["ContentLength"] == artifacts.paths[kind.name].stat().st_size
        assert head["Metadata"]["md5sum"] == artifacts.md5(kind.name)
        assert head["Metadata"]["x-shasta-ims-image-id"] == image_id
        assert head["Metadata"]["x-shasta-ims-image-name"] == "five-kinds"
        assert head["Metadata"]["x-shasta-ims-job-id"] == stack.job_id

    # The manifest read back from S3 lists each file with its local md5 and the stored ETag.
    manifest = json.loads(s3.get_object(Bucket="boot-images", Key=f"{image_id}/manifest.json")["Body"].read())
    assert manifest["version"] == "1.0"
    by_type = {entry["type"]: entry for entry in manifest["artifacts"]}
    assert set(by_type) == {kind.mime_type for kind in ARTIFACT_KINDS}
    for kind in ARTIFACT_KINDS:
        entry = by_type[kind.mime_type]
        assert entry["md5"] == artifacts.md5(kind.name)
        assert entry["link"] == {
            "path": f"s3://boot-images/{image_id}/{kind.key}",
            "etag": s3.head_object(Bucket="boot-images", Key=f"{image_id}/{kind.key}")["ETag"].strip('"'),
            "type": "s3",
        }

    # IMS: the record is linked to the manifest and the job names the image.
    record = ims_api.get(f"/images/{image_id}")
    manifest_etag = s3.head_object(Bucket="boot-images", Key=f"{image_id}/manifest.json")["ETag"].strip('"')
    assert record["link"] == {"path": f"s3://boot-images/{image_id}/manifest.json", "etag": manifest_etag, "type": "s3"}
    assert ims_api.get(f"/jobs/{stack.job_id}")["resultant_image_id"] == image_id

    # The printed result has the documented shape: artifacts then the manifest entry, and the job record.
    assert [a["type"] for a in output["ims_image_artifacts"]][-1] == "application/json"
    assert len(output["ims_image_artifacts"]) == 6
    assert output["ims_job_record"]["resultant_image_id"] == image_id
    assert result.stdout == json.dumps(output, indent=4, sort_keys=True) + "\n"


def test_publish_without_job_creates_a_linked_image_and_no_job_record(run_cli, artifacts, ims_api):
    result = run_cli(
        "image", "upload_artifacts", "no-job", *artifacts.flags("rootfs", "kernel"), env={"IMS_JOB_ID": None}
    )

    assert result.code == 0, result.stderr
    output = result.json
    assert "ims_job_record" not in output
    assert ims_api.get(f"/images/{output['ims_image_record']['id']}")["link"]["path"].endswith("/manifest.json")


def test_job_id_defaults_to_ims_job_id_from_the_environment(run_cli, artifacts, ims_api):
    job_id = ims_api.new_job()

    result = run_cli(
        "image", "upload_artifacts", "job-from-env", *artifacts.flags("rootfs"), env={"IMS_JOB_ID": job_id}
    )

    assert result.code == 0, result.stderr
    assert ims_api.get(f"/jobs/{job_id}")["resultant_image_id"] == result.json["ims_image_record"]["id"]


def test_arch_is_recorded_on_the_image(run_cli, artifacts, ims_api):
    result = run_cli("image", "upload_artifacts", "arm-image", *artifacts.flags("rootfs"), "--arch", "aarch64")

    assert result.code == 0, result.stderr
    assert ims_api.get(f"/images/{result.json['ims_image_record']['id']}")["arch"] == "aarch64"


def test_global_options_work_after_the_subcommand(run_cli, artifacts, stack, ims_api):
    env = stack.env()
    # The environment names another IMS and another (existing) bucket: only the flags lead to this result.
    result = run_cli(
        "image",
        "upload_artifacts",
        "flags-after",
        *artifacts.flags("rootfs"),
        "--ims-url",
        env["IMS_URL"],
        "--s3-bucket",
        "boot-images",
        env={"IMS_URL": "http://127.0.0.1:9", "S3_BUCKET": "ims"},
    )

    assert result.code == 0, result.stderr
    image = ims_api.get(f"/images/{result.json['ims_image_record']['id']}")
    assert image["link"]["path"].startswith("s3://boot-images/")
    assert all(a["link"]["path"].startswith("s3://boot-images/") for a in result.json["ims_image_artifacts"])


def test_set_job_status_patches_the_job(run_cli, ims_api):
    job_id = ims_api.new_job()

    result = run_cli("image", "set_job_status", job_id, "packaging_artifacts")

    assert result.code == 0, result.stderr
    assert result.json == {"result": "success", "ims_job_record": ims_api.get(f"/jobs/{job_id}")}
    assert ims_api.get(f"/jobs/{job_id}")["status"] == "packaging_artifacts"


def test_set_job_status_passes_an_unknown_status_to_ims_which_refuses_it(run_cli, ims_api):
    job_id = ims_api.new_job()

    result = run_cli("image", "set_job_status", job_id, "finished")

    assert result.code == 1
    assert f"IMS PATCH /jobs/{job_id} failed with HTTP 422" in result.stderr and "finished" in result.stderr
    assert ims_api.get(f"/jobs/{job_id}")["status"] == "creating"


def test_cli_runs_as_a_module_with_no_flags(run_cli_process, artifacts, stack, ims_api):
    result = run_cli_process("image", "upload_artifacts", "as-module", *artifacts.flags("rootfs", "kernel", "initrd"))

    assert result.code == 0, result.stderr
    image_id = result.json["ims_image_record"]["id"]
    assert ims_api.get(f"/images/{image_id}")["link"]
    assert "uploaded" in result.stderr  # the summary line of the pod-style progress


#: Loaded into the CLI's process by ``site``. Counts the collector's runs while the CLI loads its modules (after
#: ``cmdline.collector`` is imported, before anything is frozen) and its full runs; at exit it writes those, the
#: objects frozen and those not (what the interpreter's last collections would walk), and whether it collects.
GC_PROBE = """
import atexit, gc, sys
runs = {"loading": 0, "full": 0}
def count(phase, info):
    if phase == "start":
        loading = "ims_python_helper.cmdline.collector" in sys.modules and not gc.get_freeze_count()
        runs["loading"] += loading
        runs["full"] += info["generation"] == 2
gc.callbacks.append(count)
atexit.register(lambda: sys.stderr.write(
    f"GC-PROBE {runs['loading']} {runs['full']} {gc.get_freeze_count()} {len(gc.get_objects())} {gc.isenabled():d}\\n"
))
"""


def test_cli_process_keeps_its_long_lived_objects_out_of_the_collector(run_cli_process, artifacts, tmp_path):
    """``python -m ims_python_helper`` collects nothing while it loads and exits with its objects frozen."""
    (tmp_path / "sitecustomize.py").write_text(GC_PROBE)

    result = run_cli_process(
        "image", "upload_artifacts", "gc-probe", *artifacts.flags("rootfs", "kernel"), env={"PYTHONPATH": str(tmp_path)}
    )

    assert result.code == 0, result.stderr
    loading, full, frozen, unfrozen, enabled = (int(n) for n in result.stderr.split("GC-PROBE ")[1].split()[:5])
    # cmdline.collector: no collection while botocore, boto3 and the package load, none of all that afterwards,
    # and the run's S3 model and clients (tens of thousands of objects) are not left to the interpreter's end.
    assert loading == 0 and full == 0
    assert enabled  # the run's own garbage is still collected
    assert frozen > 50_000 and unfrozen < frozen / 100


def test_version_flag_prints_the_version():
    from ims_python_helper import __version__

    done = subprocess.run(
        [sys.executable, "-m", "ims_python_helper", "--version"], capture_output=True, text=True, check=False
    )

    assert done.returncode == 0
    assert done.stdout.strip() == f"ims_python_helper {__version__}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
