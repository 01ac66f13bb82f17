"""The job-pod steps as CLI commands (``image fetch``, ``recipe fetch``, ``recipe wait_for_repos``), moto and Ceph.

Run through the in-process ``main(argv, env)`` against the local stack, one
through a child process; every job's status is read back from IMS.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Iterator, List
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.faults.proxy import FaultProxy
from tests.support import kiwi_config, make_recipe_tgz, make_squashfs, volume_with_stale_signal_files


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "ims_python_helper: error:" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_image_fetch_unpacks_and_sets_fetching_image(run_cli, presign, ims_api, tmp_path):
    image = make_squashfs(tmp_path)
    work = volume_with_stale_signal_files(tmp_path / "mnt-image")
    job = ims_api.new_job()
    md5 = hashlib.md5(image.read_bytes()).hexdigest()

    url = presign(image)

    result = run_cli("image", "fetch", url, str(work), job, "--md5", md5.upper())

    assert result.code == 0, result.stderr
    output = result.json
    assert output["result"] == "success"
    assert output["path"] == str(work / "image-root")
    assert output["ims_job_record"]["status"] == "fetching_image"
    assert ims_api.get(f"/jobs/{job}")["status"] == "fetching_image"
    assert (work / "image-root" / "etc" / "motd").read_text() == "built by the test\n"
    assert sorted(p.name for p in work.iterdir()) == ["image-root"]
    assert parse_qs(urlsplit(url).query)["X-Amz-Signature"][0] not in result.stdout + result.stderr


def test_image_fetch_with_a_wrong_md5_fails_the_job_and_keeps_nothing(run_cli, presign, ims_api, tmp_path):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    job = ims_api.new_job()

    result = run_cli(
        "image", "fetch", presign(image), str(work), "--no-unpack", env={"DOWNLOAD_MD5SUM": "0" * 32, "IMS_JOB_ID": job}
    )

    assert result.code == 1
    assert result.json["result"] == "failure"
    assert "expected 00000000000000000000000000000000" in result.json["error"]
    assert "expected 0000" in _one_error_line(result.stderr)
    assert ims_api.get(f"/jobs/{job}")["status"] == "error"
    assert list(work.iterdir()) == []


def test_image_fetch_without_unpack_keeps_the_archive_as_a_child_process(run_cli_process, presign, ims_api, tmp_path):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    job = ims_api.new_job()

    result = run_cli_process("image", "fetch", presign(image), str(work), job, "--no-unpack")

    assert result.code == 0, result.stderr
    assert result.json["path"] == str(work / "image.sqsh")
    assert (work / "image.sqsh").read_bytes() == image.read_bytes()
    assert ims_api.get(f"/jobs/{job}")["status"] == "fetching_image"


def test_recipe_fetch_extracts_and_templates(run_cli, presign, ims_api, tmp_path):
    recipe = make_recipe_tgz(
        tmp_path / "recipe.tgz",
        {
            "config.xml": kiwi_config("http://127.0.0.1:9/repo"),
            ".ims_recipe_template.yaml": "template_files:\n  - config.xml\n",
        },
    )
    values = tmp_path / "template_dictionary"
    values.write_text("image_name: compute-sles15\n")
    work = tmp_path / "mnt-recipe"
    job = ims_api.new_job()

    result = run_cli("recipe", "fetch", presign(recipe), str(work), job, "--template-dictionary-file", str(values))

    assert result.code == 0, result.stderr
    assert result.json["templates_rendered"] == ["config.xml"]
    assert 'name="compute-sles15"' in (work / "config.xml").read_text()
    assert sorted(p.name for p in work.iterdir()) == [".ims_recipe_template.yaml", "config.xml"]
    assert ims_api.get(f"/jobs/{job}")["status"] == "fetching_recipe"


def test_recipe_fetch_of_a_malicious_archive_fails_the_job(run_cli, presign, ims_api, tmp_path):
    recipe = make_recipe_tgz(
        tmp_path / "recipe.tgz", {"config.xml": kiwi_config()}, extra=[tarfile.TarInfo("/etc/evil")]
    )
    work = tmp_path / "mnt-recipe"
    job = ims_api.new_job()

    result = run_cli("recipe", "fetch", presign(recipe), str(work), job)

    assert result.code == 1
    assert "refused member '/etc/evil'" in _one_error_line(result.stderr)
    assert ims_api.get(f"/jobs/{job}")["status"] == "error"
    assert list(work.iterdir()) == []


def test_wait_for_repos_polls_until_the_repository_answers(run_cli, repos, ims_api, tmp_path):
    repo = repos.add("sles/15/products", available_after=2)
    (tmp_path / "config.xml").write_text(kiwi_config(repo, "obs://SUSE:SLE-15:GA/standard"))
    job = ims_api.new_job()

    result = run_cli("recipe", "wait_for_repos", str(tmp_path), job, "--repo-poll-interval", "0.05")

    assert result.code == 0, result.stderr
    assert result.json["repositories"] == [repo]
    assert repos.requests("sles/15/products") == 3
    assert ims_api.get(f"/jobs/{job}")["status"] == "waiting_for_repos"


def test_wait_for_repos_times_out_and_fails_the_job(run_cli, repos, ims_api, tmp_path):
    down = repos.add("down", available_after=None)
    (tmp_path / "config.xml").write_text(kiwi_config(down))
    job = ims_api.new_job()

    result = run_cli(
        "recipe", "wait_for_repos", str(tmp_path), job, env={"IMS_REPO_TIMEOUT": "0.3", "REPO_POLL_INTERVAL": "0.05"}
    )

    assert result.code == 1
    assert "1 of 1 repositories still do not answer" in _one_error_line(result.stderr)
    assert result.json["result"] == "failure"
    assert ims_api.get(f"/jobs/{job}")["status"] == "error"


@pytest.fixture
def watched(stack) -> Iterator[List[FaultProxy]]:
    """Proxies in front of IMS and the token endpoint: a usage error must reach neither."""
    assert stack.ims is not None and stack.tokens is not None
    with FaultProxy(stack.ims.url, name="ims") as ims, FaultProxy(stack.tokens.url, name="tokens") as tokens:
        yield [ims, tokens]


BAD_CALLS = {
    "no job id": (["image", "fetch", "URL", "DIR"], {"IMS_JOB_ID": None}, "no IMS job id"),
    "job id not a uuid": (["image", "fetch", "URL", "DIR", "job-1"], {}, "'job-1' is not a UUID"),
    "IMS_JOB_ID not a uuid": (["recipe", "fetch", "URL", "DIR"], {"IMS_JOB_ID": "x"}, "IMS_JOB_ID: 'x' is not a UUID"),
    "md5 not hex": (["image", "fetch", "URL", "DIR", "JOB", "--md5", "xyz"], {}, "--md5: expected an md5"),
    "DOWNLOAD_MD5SUM not hex": (["image", "fetch", "URL", "DIR", "JOB"], {"DOWNLOAD_MD5SUM": "1"}, "DOWNLOAD_MD5SUM"),
    "ftp url": (["image", "fetch", "ftp://host/x", "DIR", "JOB"], {}, "is not an http(s) URL"),
    "path is a file": (["image", "fetch", "URL", "FILE", "JOB"], {}, "is not a directory"),
    "dictionary missing": (
        ["recipe", "fetch", "URL", "DIR", "JOB", "--template-dictionary-file", "MISSING"],
        {},
        "is not a file",
    ),
    "recipe root missing": (["recipe", "wait_for_repos", "MISSING", "JOB"], {}, "RECIPE_ROOT"),
    "negative timeout": (["recipe", "wait_for_repos", "DIR", "JOB", "--repo-timeout", "-1"], {}, "--repo-timeout"),
    "unknown option": (["image", "fetch", "URL", "DIR", "JOB", "--unpack"], {}, "unrecognized arguments: --unpack"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_usage_errors_exit_2_before_anything_is_contacted(case, run_cli, watched, stack, ims_api, tmp_path):
    argv, env, message = BAD_CALLS[case]
    job = ims_api.new_job()
    (tmp_path / "file").write_text("x")
    names = {
        "URL": "http://127.0.0.1:9/image.sqsh",
        "DIR": str(tmp_path),
        "FILE": str(tmp_path / "file"),
        "MISSING": str(tmp_path / "missing"),
        "JOB": job,
    }
    ims, tokens = watched
    env = dict(env, IMS_URL=ims.url, OAUTH_CLIENT_ENDPOINT=tokens.url_for(stack.tokens.url))
    env.setdefault("IMS_JOB_ID", job)

    result = run_cli(*[names.get(arg, arg) for arg in argv], env=env)

    assert result.code == 2, result.stderr
    # Like every failure, a usage error answers with the failure JSON on stdout.
    assert json.loads(result.stdout)["result"] == "failure"
    assert message in _one_error_line(result.stderr)
    assert ims.count() == 0 and tokens.count() == 0
    assert ims_api.get(f"/jobs/{job}")["status"] == "creating"
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["file"]
