"""``local job``: an image-build job and a customization job on the local stack, moto and Ceph.

The job runs attached to the session's stack with IMS behind a proxy that, after
every PATCH of a job, reads the job record straight from the local IMS: the
statuses the records went through, in order, are seen independently of the
command's own summary. Both images are then checked through S3 and IMS.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from ims_python_helper.cli import Environment, main
from ims_python_helper.local.job import CUSTOM_IMAGE_NAME, IMAGE_NAME, MOTD
from tests.faults.proxy import FaultProxy, ProxyEvent
from tests.support import CliResult, with_overrides

BUILD_STATUSES = ["fetching_recipe", "waiting_for_repos", "building_image", "success"]
CUSTOMIZE_STATUSES = ["fetching_image", "waiting_on_user", "packaging_artifacts", "success"]


class StatusWatch:
    """Records each job's status as the IMS record shows it after every PATCH of that job."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.seen: Dict[str, List[str]] = {}
        self.lock = threading.Lock()

    def __call__(self, event: ProxyEvent) -> None:
        exchange = event.exchange
        if event.stage != "response" or exchange.kind != "PATCH /jobs/{id}":
            return
        job_id = exchange.path.split("?")[0].rstrip("/").rsplit("/", 1)[1]
        status = self.stack.ims.api.get("jobs", job_id)["status"]
        with self.lock:
            statuses = self.seen.setdefault(job_id, [])
            if not statuses or statuses[-1] != status:
                statuses.append(status)


@pytest.fixture
def watched_ims(stack) -> Iterator[FaultProxy]:
    """IMS behind a proxy whose observer is a ``StatusWatch`` (``.observer``)."""
    with FaultProxy(stack.ims.url, name="ims", observer=StatusWatch(stack)) as proxy:
        yield proxy


def _run_local_job(environ: Dict[str, str], *argv: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    code = main(["local", "job", *argv], Environment(stdout=out, stderr=err, environ=environ))
    return CliResult(code, out.getvalue(), err.getvalue())


def _object(s3: Any, link: Dict[str, str]) -> bytes:
    bucket, key = link["path"][len("s3://") :].split("/", 1)
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _validated_image(ims_api: Any, s3: Any, image_id: str, name: str) -> Dict[str, bytes]:
    """The image's artifacts by type, after checking record, link, manifest and every md5."""
    record = ims_api.get(f"/images/{image_id}")
    assert record["name"] == name
    assert record["link"]["path"] == f"s3://boot-images/{image_id}/manifest.json"
    manifest = json.loads(_object(s3, record["link"]))
    artifacts = {}
    for entry in manifest["artifacts"]:
        data = _object(s3, entry["link"])
        assert hashlib.md5(data).hexdigest() == entry["md5"], entry["type"]
        artifacts[entry["type"]] = data
    assert set(artifacts) == {
        "application/vnd.cray.image.rootfs.squashfs",
        "application/vnd.cray.image.kernel",
        "application/vnd.cray.image.initrd",
    }
    return artifacts


def _unsquash(data: bytes, tmp_path: Path, name: str) -> Path:
    image, root = tmp_path / f"{name}.sqsh", tmp_path / name
    image.write_bytes(data)
    subprocess.run(["unsquashfs", "-d", str(root), str(image)], check=True, capture_output=True)
    return root


def test_local_job_runs_a_build_and_a_customization_job(stack, stack_env, watched_ims, ims_api, s3, tmp_path):
    result = _run_local_job(with_overrides(stack_env, {"IMS_URL": watched_ims.url}), "--attach")

    assert result.code == 0, result.stderr
    summary = result.json
    assert summary["result"] == "success"
    build, customize = summary["jobs"]
    assert (build["job_type"], customize["job_type"]) == ("create", "customize")
    assert build["statuses"] == ["creating", *BUILD_STATUSES]
    assert customize["statuses"] == ["creating", *CUSTOMIZE_STATUSES]

    # What the records showed after each PATCH, seen by the proxy, not by the command.
    seen = watched_ims.observer.seen  # type: ignore[union-attr]
    assert seen[build["id"]] == BUILD_STATUSES
    assert seen[customize["id"]] == CUSTOMIZE_STATUSES

    built, customized = summary["images"]
    assert (built["name"], customized["name"]) == (IMAGE_NAME, CUSTOM_IMAGE_NAME)
    for job, image in ((build, built), (customize, customized)):
        record = ims_api.get(f"/jobs/{job['id']}")
        assert record["status"] == "success"
        assert record["resultant_image_id"] == job["resultant_image_id"] == image["id"]
    assert ims_api.get(f"/jobs/{customize['id']}")["artifact_id"] == built["id"]
    assert ims_api.get(f"/jobs/{build['id']}")["artifact_id"] == summary["recipe"]["id"]
    assert ims_api.get(f"/recipes/{summary['recipe']['id']}")["link"]["path"].endswith("/recipe.tar.gz")

    first = _validated_image(ims_api, s3, built["id"], IMAGE_NAME)
    second = _validated_image(ims_api, s3, customized["id"], CUSTOM_IMAGE_NAME)
    squashfs = "application/vnd.cray.image.rootfs.squashfs"
    built_root = _unsquash(first[squashfs], tmp_path, "built")
    custom_root = _unsquash(second[squashfs], tmp_path, "custom")
    # The build squashed the fetched, templated recipe; the customization changed one file of it.
    assert f'name="{IMAGE_NAME}"' in (built_root / "config.xml").read_text()
    assert (custom_root / "config.xml").read_text() == (built_root / "config.xml").read_text()
    assert (built_root / "root" / "etc" / "motd").read_text() == "built by ims_python_helper local job\n"
    assert (custom_root / "etc" / "motd").read_text() == MOTD.format(job_id=customize["id"])
    assert not (built_root / "etc").exists()
    kernel = "application/vnd.cray.image.kernel"
    assert first[kernel] == second[kernel] == (custom_root / "boot" / "vmlinuz").read_bytes()


def test_a_failed_build_step_fails_the_job_and_says_why(stack, stack_env, ims_api, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no mksquashfs for the build step

    result = _run_local_job(stack_env, "--attach")

    assert result.code == 1
    summary = result.json
    assert summary["result"] == "failure"
    assert summary["error"] == "mksquashfs is not installed; install squashfs-tools"
    (build,) = summary["jobs"]
    assert build["statuses"] == ["creating", "fetching_recipe", "waiting_for_repos", "building_image", "error"]
    assert ims_api.get(f"/jobs/{build['id']}")["status"] == "error"
    assert summary["images"] == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"IMS_URL": None, "S3_ENDPOINT": None}, "IMS_URL, S3_ENDPOINT not set"),
        ({"IMS_URL": "https://ims.example.com/apis/ims"}, "IMS_URL points at 'ims.example.com'"),
    ],
)
def test_attach_runs_only_against_a_local_stack(overrides, message):
    environ = {
        "IMS_URL": "http://127.0.0.1:1/ims",
        "OAUTH_CLIENT_ID": "x",
        "OAUTH_CLIENT_SECRET": "y",
        "OAUTH_CLIENT_ENDPOINT": "http://127.0.0.1:1/token",
        "S3_ENDPOINT": "http://127.0.0.1:1",
        "S3_ACCESS_KEY": "a",
        "S3_SECRET_KEY": "b",
    }
    result = _run_local_job(with_overrides(environ, overrides), "--attach")
    assert result.code == 2
    assert result.stdout == ""
    assert message in result.stderr and len(result.stderr.splitlines()) == 1


def test_local_job_on_its_own_throw_away_stack(tmp_path):
    data = tmp_path / "data"
    result = _run_local_job({"PATH": os.environ["PATH"]}, "--s3", "moto", "--data-dir", str(data))

    assert result.code == 0, result.stderr
    summary = result.json
    assert [job["statuses"][-1] for job in summary["jobs"]] == ["success", "success"]
    assert len(summary["images"]) == 2
    # The records the stack kept in its data directory say the same.
    jobs = {job["id"]: job for job in json.loads((data / "ims-jobs.json").read_text())}
    assert [jobs[job["id"]]["status"] for job in summary["jobs"]] == ["success", "success"]
