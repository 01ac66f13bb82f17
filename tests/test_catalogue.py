"""Finding records without listing the catalogue, and publishing into IMS before 3.16.

A publish with a job finds a record to resume through its run claim and the
job record (direct reads), so with many image records in IMS it still reads no
image list (checked in the local IMS's request log); ``--skip-existing`` lists
images, since matching by name is what it asks for. IMS before 3.16 refuses
image ``metadata`` with 400; the client then creates records without it (the
local IMS's ``legacy`` schema plays that IMS), and publish, ``--skip-existing``
and a re-run of the same job work there too.
"""

from __future__ import annotations

from typing import Callable, List

import pytest

from ims_python_helper.local.stack import LocalStack
from tests.faults.front import assert_published, publish_argv, tiny_artifacts
from tests.support import ImsApi

#: Image records seeded into IMS for the no-list test.
SEEDED = 2000


def _requests(stack: LocalStack) -> List[str]:
    """``METHOD PATH STATUS`` of every request the stack's IMS has logged so far."""
    assert stack.ims is not None
    if not stack.ims.request_log.exists():
        return []
    return [" ".join(line.split()[1:]) for line in stack.ims.request_log.read_text().splitlines()]


@pytest.fixture
def legacy(stack: LocalStack, legacy_stacks: Callable[[LocalStack], LocalStack]) -> LocalStack:
    """A stack whose IMS behaves like IMS before 3.16, sharing the session stack's S3."""
    return legacy_stacks(stack)


def _run(run_cli, local: LocalStack, *argv: str):
    return run_cli(*argv, env=local.env())


def test_a_publish_with_a_job_reads_no_image_list_however_many_images_ims_holds(
    stack: LocalStack, run_cli, ims_api, s3, tmp_path
):
    assert stack.ims is not None
    stack.ims.seed_images(SEEDED, name=f"catalogue-{tmp_path.name}")
    artifacts = tiny_artifacts(tmp_path / "artifacts", 7)
    job = ims_api.new_job()
    argv = publish_argv("catalogue", job, artifacts)
    start = len(_requests(stack))

    first = run_cli(*argv)
    again = run_cli(*argv)  # a re-run of the finished job: found through the job record

    assert first.code == 0, first.stderr
    assert again.code == 0, again.stderr
    assert again.json["ims_image_record"]["id"] == first.json["ims_image_record"]["id"]
    made = _requests(stack)[start:]
    assert [r for r in made if r.startswith("GET /images ")] == [], made
    assert any(r.startswith("GET /images/") for r in made), "the re-run did not read the record directly"
    assert_published(ims_api, s3, "catalogue", job, artifacts)


def test_skip_existing_still_lists_images_to_match_by_name(stack: LocalStack, run_cli, ims_api, tmp_path):
    artifacts = tiny_artifacts(tmp_path / "artifacts", 8)
    first = run_cli(*publish_argv("by-name", None, artifacts))
    start = len(_requests(stack))

    second = run_cli(*publish_argv("by-name", ims_api.new_job(), artifacts, "--skip-existing"))

    assert first.code == 0 and second.code == 0, second.stderr
    assert second.json["ims_image_record"]["id"] == first.json["ims_image_record"]["id"]
    assert any(r.startswith("GET /images ") for r in _requests(stack)[start:])


def test_publish_into_ims_before_3_16_creates_the_record_without_metadata(legacy: LocalStack, run_cli, s3, tmp_path):
    ims_api = ImsApi(legacy)
    artifacts = tiny_artifacts(tmp_path / "artifacts", 9)
    job = ims_api.new_job()
    start = len(_requests(legacy))

    result = _run(run_cli, legacy, *publish_argv("old-ims", job, artifacts))

    assert result.code == 0, result.stderr
    record = assert_published(ims_api, s3, "old-ims", job, artifacts)
    assert "metadata" not in record
    posts = [r for r in _requests(legacy)[start:] if r.startswith("POST /images ")]
    assert posts == ["POST /images 400", "POST /images 201"], posts


def test_a_rerun_of_a_job_on_ims_before_3_16_finishes_into_the_same_image(legacy: LocalStack, run_cli, s3, tmp_path):
    ims_api = ImsApi(legacy)
    artifacts = tiny_artifacts(tmp_path / "artifacts", 10)
    job = ims_api.new_job()
    argv = publish_argv("old-ims-again", job, artifacts)

    first = _run(run_cli, legacy, *argv)
    again = _run(run_cli, legacy, *argv)

    assert first.code == 0 and again.code == 0, again.stderr
    assert again.json["ims_image_record"]["id"] == first.json["ims_image_record"]["id"]
    assert_published(ims_api, s3, "old-ims-again", job, artifacts)


def test_skip_existing_on_ims_before_3_16_returns_the_image_of_the_same_name(legacy: LocalStack, run_cli, s3, tmp_path):
    ims_api = ImsApi(legacy)
    artifacts = tiny_artifacts(tmp_path / "artifacts", 11)
    first = _run(run_cli, legacy, *publish_argv("old-ims-skip", None, artifacts))
    job = ims_api.new_job()

    second = _run(run_cli, legacy, *publish_argv("old-ims-skip", job, artifacts, "--skip-existing"))

    assert first.code == 0 and second.code == 0, second.stderr
    assert second.json["ims_image_record"]["id"] == first.json["ims_image_record"]["id"]
    assert ims_api.get(f"/jobs/{job}")["resultant_image_id"] == first.json["ims_image_record"]["id"]
    assert len(ims_api.images_named("old-ims-skip")) == 1
