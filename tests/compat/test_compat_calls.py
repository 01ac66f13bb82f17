"""The library called exactly as existing services call it, against the local stack.

Every test runs with both session kinds a caller builds (``caller_session``) and
on every S3 engine. Arguments have the shapes ``ims-facts.md`` gives: one-element
lists of paths, keyword or positional, and the returned dictionaries are checked
for the keys and types callers read.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Dict

import pytest

from ims_python_helper import ImsHelper, ImsImagesExistWithName
from ims_python_helper.artifacts import KERNEL_ARTIFACT_TYPE, MANIFEST_TYPE
from tests.support import ImageFiles, make_recipe

ARTIFACT_TYPES = {
    "rootfs": "application/vnd.cray.image.rootfs.squashfs",
    "kernel": "application/vnd.cray.image.kernel",
    "initrd": "application/vnd.cray.image.initrd",
    "debug": "application/vnd.cray.image.debug.kernel",
    "boot_parameters": "application/vnd.cray.image.parameters.boot",
}


def unique(name: str) -> str:
    """Image and recipe names are per test: the stack lives for the whole session."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def assert_link(link: Any) -> None:
    assert isinstance(link, dict)
    assert set(link) == {"path", "etag", "type"}
    assert link["type"] == "s3" and link["path"].startswith("s3://")
    assert isinstance(link["etag"], str)


def assert_image_record(record: Any, name: str) -> None:
    assert isinstance(record, dict)
    assert isinstance(record["id"], str) and uuid.UUID(record["id"])
    assert record["name"] == name
    assert isinstance(record["created"], str)
    assert_link(record["link"])


def assert_publish_result(result: Any, name: str, kinds: Any, job_id: Any = None) -> None:
    """The dictionary ``image_upload_artifacts`` returns, as callers read it."""
    assert isinstance(result, dict)
    assert result["result"] == "success"
    assert_image_record(result["ims_image_record"], name)
    artifacts = result["ims_image_artifacts"]
    assert isinstance(artifacts, list)
    for entry in artifacts:
        assert set(entry) == {"link", "type", "md5"}
        assert_link(entry["link"])
        assert isinstance(entry["md5"], str)
    assert [e["type"] for e in artifacts] == [ARTIFACT_TYPES[k] for k in kinds] + [MANIFEST_TYPE]
    assert artifacts[-1]["link"] == result["ims_image_record"]["link"]
    if job_id:
        assert isinstance(result["ims_job_record"], dict)
        assert result["ims_job_record"]["resultant_image_id"] == result["ims_image_record"]["id"]
    else:
        assert "ims_job_record" not in result
    json.dumps(result)  # callers print it


def publish(helper: ImsHelper, name: str, files: ImageFiles, **kwargs: Any) -> Dict[str, Any]:
    result: Dict[str, Any] = helper.image_upload_artifacts(
        name, rootfs=files.rootfs, kernel=files.kernel, initrd=files.initrd, **kwargs
    )
    return result


# -- image_upload_artifacts ---------------------------------------------------------------


def test_publish_by_keyword_with_one_element_lists(helper, caller_session, image_files, ims_api):
    name = unique("by-keyword")
    job_id = ims_api.new_job()

    result = helper.image_upload_artifacts(
        image_name=name,
        ims_job_id=job_id,
        rootfs=image_files.rootfs,
        kernel=image_files.kernel,
        initrd=image_files.initrd,
        debug=image_files.debug,
        boot_parameters=image_files.boot_parameters,
        skip_existing=False,
        arch="x86_64",
    )

    assert_publish_result(result, name, ARTIFACT_TYPES, job_id)
    assert helper.session is caller_session
    assert ims_api.get(f"/images/{result['ims_image_record']['id']}") == result["ims_image_record"]
    for entry, kind in zip(result["ims_image_artifacts"], ARTIFACT_TYPES):
        assert entry["md5"] == ImsHelper._md5(image_files.path(kind))


def test_publish_by_position(helper, image_files, ims_api):
    name = unique("by-position")
    f = image_files

    result = helper.image_upload_artifacts(
        name, None, f.rootfs, f.kernel, f.initrd, f.debug, f.boot_parameters, False, "aarch64"
    )

    assert_publish_result(result, name, ARTIFACT_TYPES)
    assert ims_api.get(f"/images/{result['ims_image_record']['id']}")["arch"] == "aarch64"


def test_publish_with_skip_existing_twice_returns_the_same_record(helper, image_files, ims_api):
    name = unique("skip-existing")
    first = publish(helper, name, image_files, skip_existing=True)

    second = publish(helper, name, image_files, skip_existing=True)

    assert_publish_result(second, name, ("rootfs", "kernel", "initrd"))
    assert second["ims_image_record"] == first["ims_image_record"]
    assert [i["id"] for i in ims_api.images_named(name)] == [first["ims_image_record"]["id"]]


def test_publish_with_skip_existing_and_other_files_makes_a_new_record(helper, image_files, ims_api):
    name = unique("skip-other")
    first = publish(helper, name, image_files, skip_existing=True)

    second = helper.image_upload_artifacts(name, rootfs=image_files.rootfs, skip_existing=True)

    assert second["ims_image_record"]["id"] != first["ims_image_record"]["id"]
    assert len(ims_api.images_named(name)) == 2


# -- manifests and matching ------------------------------------------------------------------


def test_get_image_manifest_returns_the_parsed_manifest_or_none(helper, image_files, ims_api):
    name = unique("manifest")
    record = publish(helper, name, image_files)["ims_image_record"]
    empty = ims_api.post("/images", {"name": name})

    manifest = helper.get_image_manifest(record)

    assert manifest["version"] == "1.0"
    assert isinstance(manifest["created"], str)
    assert [a["type"] for a in manifest["artifacts"]] == [ARTIFACT_TYPES[k] for k in ("rootfs", "kernel", "initrd")]
    assert manifest["artifacts"][0]["md5"] == ImsHelper._md5(image_files.rootfs[0])
    assert helper.get_image_manifest(empty) is None
    missing = dict(record, link={"path": "s3://boot-images/no-such-image/manifest.json", "etag": "", "type": "s3"})
    assert helper.get_image_manifest(missing) is None


def test_artifacts_match_image_record_by_keyword_and_position(helper, image_files, tmp_path):
    name = unique("match")
    record = publish(helper, name, image_files)["ims_image_record"]
    rootfs, kernel, initrd = image_files.rootfs[0], image_files.kernel[0], image_files.initrd[0]
    other = tmp_path / "other-kernel"
    other.write_bytes(b"another kernel")

    assert helper.artifacts_match_image_record(record, name, rootfs_path=rootfs, kernel_path=kernel, initrd_path=initrd)
    assert helper.artifacts_match_image_record(record, name, rootfs, kernel, initrd, None, None)
    assert not helper.artifacts_match_image_record(record, name, rootfs, str(other), initrd)
    assert not helper.artifacts_match_image_record(record, name, rootfs, kernel)  # the initrd is missing
    assert not helper.artifacts_match_image_record(record, name, rootfs, kernel, initrd, image_files.debug[0])
    assert not helper.artifacts_match_image_record({"id": record["id"], "name": name}, name, rootfs, kernel, initrd)


def test_manifest_entries_of_other_types_do_not_spoil_a_match(helper, image_files, ims_api, s3):
    """Earlier clients compared only the five artifact kinds; an extra entry of another type is ignored."""
    name = unique("extra-entry")
    published = publish(helper, name, image_files)["ims_image_record"]
    manifest = helper.get_image_manifest(published)
    kernel_link = next(a["link"] for a in manifest["artifacts"] if a["type"] == KERNEL_ARTIFACT_TYPE)
    manifest["artifacts"].append({"link": kernel_link, "type": "application/vnd.example.signature", "md5": "0" * 32})
    key = f"{published['id']}/manifest-with-extra.json"
    s3.put_object(Bucket="boot-images", Key=key, Body=json.dumps(manifest).encode(), ContentType=MANIFEST_TYPE)
    record = ims_api.post("/images", {"name": name})
    record = ims_api.session.patch(
        f"{ims_api.base}/images/{record['id']}",
        json={"link": {"path": f"s3://boot-images/{key}", "etag": "", "type": "s3"}},
        timeout=10,
    ).json()

    assert record["link"]["path"].endswith("manifest-with-extra.json")
    assert helper.artifacts_match_image_record(
        record, name, image_files.rootfs[0], image_files.kernel[0], image_files.initrd[0]
    )
    assert publish(helper, name, image_files, skip_existing=True)["ims_image_record"]["id"] in (
        published["id"],
        record["id"],
    )


# -- get_empty_image_record_for_name -------------------------------------------------------------


def test_get_empty_image_record_for_name_creates_reuses_and_refuses(helper, image_files, ims_api):
    name = unique("empty-record")

    created = helper.get_empty_image_record_for_name(name, True)
    reused = helper.get_empty_image_record_for_name(name, True)
    new_arm = helper.get_empty_image_record_for_name(name, False, "aarch64")

    assert isinstance(created["id"], str) and not created.get("link")
    assert reused["id"] == created["id"]
    assert new_arm["id"] != created["id"] and new_arm["arch"] == "aarch64"
    linked = publish(helper, unique("other"), image_files)  # a linked image under another name changes nothing
    assert helper.get_empty_image_record_for_name(name, True)["id"] in (created["id"], new_arm["id"])
    assert linked["ims_image_record"]["name"] != name


def test_get_empty_image_record_for_name_raises_when_linked_images_exist(helper, image_files):
    name = unique("linked")
    record = publish(helper, name, image_files)["ims_image_record"]

    with pytest.raises(ImsImagesExistWithName) as caught:
        helper.get_empty_image_record_for_name(image_name=name, skip_existing=True, arch=None)

    assert caught.value.name == name
    assert [r["id"] for r in caught.value.image_records] == [record["id"]]
    fresh = helper.get_empty_image_record_for_name(name, False)
    assert fresh["id"] != record["id"] and not fresh.get("link")


# -- jobs --------------------------------------------------------------------------------------------


def test_image_set_job_status_by_position_and_keyword(helper, ims_api):
    job_id = ims_api.new_job()

    by_position = helper.image_set_job_status(job_id, "building_image")
    by_keyword = helper.image_set_job_status(ims_job_id=job_id, job_status="success")

    assert set(by_position) == {"result", "ims_job_record"}
    assert by_position["result"] == "success"
    assert by_position["ims_job_record"]["status"] == "building_image"
    assert by_keyword["ims_job_record"] == ims_api.get(f"/jobs/{job_id}")
    assert by_keyword["ims_job_record"]["status"] == "success"


# -- recipes ---------------------------------------------------------------------------------------


@pytest.fixture
def recipe_helper(stack, caller_session, s3_kwargs) -> ImsHelper:
    """Recipes go to bucket ``ims``; the helper is made by position, as some callers do."""
    return ImsHelper(stack.ims.url, caller_session, s3_kwargs["s3_access_key"], s3_kwargs["s3_secret_key"],
                     s3_kwargs["s3_endpoint"], "ims", "false")  # fmt: skip


def assert_recipe_record(record: Any, name: str) -> None:
    assert isinstance(record, dict)
    assert record["name"] == name
    assert isinstance(record["id"], str) and uuid.UUID(record["id"])
    assert record["recipe_type"] == "kiwi-ng"
    assert_link(record["link"])
    assert record["link"]["path"] == f"s3://ims/recipes/{record['id']}/recipe.tar.gz"
    assert isinstance(record["template_dictionary"], list)
    json.dumps(record)


def test_recipe_upload_by_keyword_returns_the_recipe_record(recipe_helper, tmp_path, ims_api):
    name = unique("recipe-keyword")
    path = make_recipe(tmp_path / "recipe.tar.gz")
    templates = {"CSM_RELEASE_VERSION": "1.5.0", "SLES_VERSION": "15sp5"}

    record = recipe_helper.recipe_upload(
        name=name, filepath=path, distro="sles15", template_dictionary=templates, arch="x86_64", require_dkms=True
    )

    assert_recipe_record(record, name)
    assert record == ims_api.get(f"/recipes/{record['id']}")
    assert record["template_dictionary"] == [{"key": k, "value": v} for k, v in templates.items()]
    assert (record["linux_distribution"], record["arch"], record["require_dkms"]) == ("sles15", "x86_64", True)
    again = recipe_helper.recipe_upload(name, path, "sles15", dict(reversed(list(templates.items()))))
    assert again == record


def test_recipe_upload_by_position_and_without_templates(recipe_helper, tmp_path, ims_api):
    name = unique("recipe-position")
    path = make_recipe(tmp_path / "recipe.tar.gz")

    record = recipe_helper.recipe_upload(name, path, "sles12", None, "aarch64", False)
    again = recipe_helper.recipe_upload(name, path, "sles12")

    assert_recipe_record(record, name)
    assert record["template_dictionary"] == []
    assert again == record
    changed = recipe_helper.recipe_upload(name, make_recipe(tmp_path / "other.tar.gz", b"<other/>\n"), "sles12")
    assert changed["id"] != record["id"]
    assert len([r for r in ims_api.get("/recipes") if r["name"] == name]) == 2
