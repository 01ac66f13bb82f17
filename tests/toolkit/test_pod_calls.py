"""The four job-pod calls, made as the pods make them, against the local stack (moto and Ceph)."""

from __future__ import annotations

import hashlib
import logging
import tarfile
from urllib.parse import parse_qs, urlsplit

import pytest

from ims_python_helper.wait_for_kiwi_repos import IMS_JOB_STATUS, wait_for_kiwi_repos
from tests.support import kiwi_config, make_recipe_tgz, make_squashfs, volume_with_stale_signal_files

FETCH = "ims_python_helper.fetch"
WAIT = "ims_python_helper.wait_for_kiwi_repos"


def test_image_build_job_fetches_recipe_then_waits_for_repos(pod, presign, repos, ims_api, tmp_path):
    repo_url = repos.add("sles/15/products", available_after=1)  # down for the first poll, then up
    recipe = make_recipe_tgz(
        tmp_path / "recipe.tgz",
        {"config.xml": kiwi_config(repo_url), ".ims_recipe_template.yaml": "template_files:\n  - config.xml\n"},
    )
    values = tmp_path / "template_dictionary"
    values.write_text("image_name: compute-sles15\n")
    work = tmp_path / "mnt-recipe"
    work.mkdir()

    url = presign(recipe)
    fetched = pod.run(FETCH, "--recipe", "True", str(work), url, env={"TEMPLATE_DICTIONARY_PATH": str(values)})
    assert fetched.code == 0, fetched.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "fetching_recipe"
    assert sorted(p.name for p in work.iterdir()) == [".ims_recipe_template.yaml", "config.xml"]
    assert 'name="compute-sles15"' in (work / "config.xml").read_text()
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    assert signature not in fetched.stderr + fetched.stdout  # the presigned URL's secret part never shows

    waited = pod.run(WAIT, env={"RECIPE_ROOT_PARENT": str(work), "TIMEOUT": "60"})
    assert waited.code == 0, waited.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == IMS_JOB_STATUS
    assert repos.requests("sles/15/products") == 2
    assert repos.tokens_seen == 0  # plain http never carries the token (tests/toolkit/test_repo_wait.py)


def test_customize_job_fetches_and_unpacks_image(pod, presign, ims_api, tmp_path):
    image = make_squashfs(tmp_path)
    work = volume_with_stale_signal_files(tmp_path / "mnt-image")
    md5 = hashlib.md5(image.read_bytes()).hexdigest()

    result = pod.run(FETCH, "--image", "t", str(work), presign(image), env={"DOWNLOAD_MD5SUM": md5})

    assert result.code == 0, result.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "fetching_image"
    assert (work / "image-root" / "etc" / "motd").read_text() == "built by the test\n"
    assert sorted(p.name for p in work.iterdir()) == ["image-root"]  # archive and signal files gone
    assert f"image.sqsh: downloaded {image.stat().st_size} bytes" in result.stderr  # progress as uploads show it


def test_image_fetch_without_unpack_keeps_the_archive(pod, presign, tmp_path):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    work.mkdir()
    result = pod.run(FETCH, "--image", "False", str(work), presign(image))
    assert result.code == 0, result.stderr
    assert (work / "image.sqsh").read_bytes() == image.read_bytes()


def test_wrong_download_md5_fails_the_job_and_removes_the_file(pod, presign, ims_api, tmp_path):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    work.mkdir()
    url = presign(image)
    result = pod.run(FETCH, "--image", "true", str(work), url, env={"DOWNLOAD_MD5SUM": "0" * 32})
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "expected 00000000000000000000000000000000" in errors[0]
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"
    assert list(work.iterdir()) == []
    assert parse_qs(urlsplit(url).query)["X-Amz-Signature"][0] not in result.stderr


@pytest.mark.parametrize("variable", ["S3_SSL_VERIFY", "S3_SSL_VALIDATE"])
def test_a_missing_download_ca_fails_the_job_naming_its_variable(pod, presign, ims_api, tmp_path, variable):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    work.mkdir()
    env = {"S3_SSL_VERIFY": None, variable: "/nonexistent/s3-ca.pem"}

    result = pod.run(FETCH, "--image", "true", str(work), presign(image), env=env)

    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert f"S3 CA bundle '/nonexistent/s3-ca.pem' (from {variable}) is not a readable file" in errors[0]
    assert "CA_CERT" not in errors[0]
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"
    assert list(work.iterdir()) == []


def test_a_malformed_download_md5_fails_the_job_before_downloading(pod, presign, ims_api, tmp_path):
    work = tmp_path / "mnt-image"
    work.mkdir()
    result = pod.run(
        FETCH, "--image", "true", str(work), presign(make_squashfs(tmp_path)), env={"DOWNLOAD_MD5SUM": "abc"}
    )
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "DOWNLOAD_MD5SUM: expected an md5 of 32 hexadecimal digits" in errors[0], result.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"
    assert list(work.iterdir()) == []


def test_malicious_recipe_fails_the_job_and_leaves_nothing(pod, presign, ims_api, tmp_path):
    evil = tarfile.TarInfo("../escaped")
    recipe = make_recipe_tgz(tmp_path / "recipe.tgz", {"config.xml": kiwi_config()}, extra=[evil])
    work = tmp_path / "deep" / "mnt-recipe"
    work.mkdir(parents=True)
    result = pod.run(FETCH, "--recipe", "True", str(work), presign(recipe))
    assert result.code == 1
    assert "refused member '../escaped'" in result.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"
    assert list(work.iterdir()) == []
    assert not (work.parent / "escaped").exists()


def test_wait_times_out_and_sets_error(pod, repos, ims_api, tmp_path):
    down = repos.add("down", available_after=None)
    (tmp_path / "config.xml").write_text(kiwi_config(down))
    result = pod.run(WAIT, env={"RECIPE_ROOT_PARENT": str(tmp_path), "TIMEOUT": "0.5"})
    assert result.code == 1
    assert "1 of 1 repositories still do not answer" in result.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"


def test_wait_with_a_timeout_that_is_not_a_number_names_timeout(pod, ims_api, tmp_path):
    (tmp_path / "config.xml").write_text(kiwi_config())
    result = pod.run(WAIT, env={"RECIPE_ROOT_PARENT": str(tmp_path), "TIMEOUT": "soon"})
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "TIMEOUT: expected a number of seconds, got 'soon'" in errors[0], result.stderr


def test_recipe_without_http_repositories_is_success(pod, ims_api, tmp_path, monkeypatch, caplog):
    (tmp_path / "config.xml").write_text(kiwi_config("obs://SUSE:SLE-15:GA/standard", "dir:///srv/repo"))
    for key, value in pod.env.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.INFO):
        code = wait_for_kiwi_repos(
            pod.job_id, pod.env["IMS_URL"], pod.env["CA_CERT"], str(tmp_path), 5, logging.getLogger("t")
        )
    assert code == 0
    assert "names no http(s) repository" in caplog.text
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == IMS_JOB_STATUS


def test_config_with_doctype_is_refused(pod, ims_api, tmp_path):
    (tmp_path / "config.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e "boom">]>\n<image>&e;</image>\n'
    )
    result = pod.run(WAIT, env={"RECIPE_ROOT_PARENT": str(tmp_path), "TIMEOUT": "5"})
    assert result.code == 1
    assert "declares a DOCTYPE or entities" in result.stderr
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"
