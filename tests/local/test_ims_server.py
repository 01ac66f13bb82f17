"""The local IMS server over real HTTP, with link checks against a real (moto) S3 server."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import requests

from ims_python_helper.local.ims_server import ImsServer
from ims_python_helper.local.moto_s3 import MotoS3
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.local.tokens import TokenSigner
from tests.support import ImsClient, StoreManifest, assert_problem

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def new_job_body(**extra: Any) -> Dict[str, Any]:
    body = {
        "job_type": "create",
        "artifact_id": str(uuid.uuid4()),
        "public_key_id": str(uuid.uuid4()),
        "image_root_archive_name": "test-image",
    }
    body.update(extra)
    return body


# --------------------------------------------------------------------------- authentication


def test_requests_without_a_token_get_401_with_bearer_challenge(ims_server: ImsServer) -> None:
    response = requests.get(ims_server.url + "/images", timeout=5)

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_expired_token_is_refused(ims_server: ImsServer, signer: TokenSigner) -> None:
    expired = signer.issue("test-client", 0)
    response = requests.get(ims_server.url + "/images", headers={"Authorization": f"Bearer {expired}"}, timeout=5)

    assert_problem(response, 401)


def test_token_from_another_signer_is_refused(ims_server: ImsServer) -> None:
    foreign = TokenSigner(b"not the server's key, but long").issue("test-client", 60)
    response = requests.get(ims_server.url + "/images", headers={"Authorization": f"Bearer {foreign}"}, timeout=5)

    assert_problem(response, 401)


def test_health_probes_need_no_token(ims_server: ImsServer) -> None:
    for path in ("/healthz/ready", "/healthz/live", "/v3/healthz/live"):
        response = requests.get(ims_server.url + path, timeout=5)
        assert response.status_code == 200
        assert response.json() == {}


def test_version_is_a_json_string(ims: ImsClient) -> None:
    response = ims.request("GET", "/version")

    assert response.status_code == 200
    assert response.json() == "3.20.0-local"


# --------------------------------------------------------------------------- request shape and errors


def test_unknown_field_is_422_naming_the_field(ims: ImsClient) -> None:
    response = ims.request("POST", "/images", {"name": "img", "colour": "blue"})

    assert_problem(response, 422, "colour")


@pytest.mark.parametrize("field", ["id", "created"])
def test_read_only_field_in_image_post_is_422(ims: ImsClient, field: str) -> None:
    response = ims.request("POST", "/images", {"name": "img", field: "x"})

    assert_problem(response, 422, field)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
        ({"name": "img", "arch": "s390x"}, "arch"),
        ({"name": "img", "metadata": {"k": 1}}, "metadata"),
        ({"name": "img", "link": {"path": "s3://b/k"}}, "type"),
    ],
)
def test_invalid_image_fields_are_422(ims: ImsClient, body: Dict[str, Any], fragment: str) -> None:
    assert_problem(ims.request("POST", "/images", body), 422, fragment)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b""])
def test_malformed_empty_or_non_object_bodies_are_400(ims: ImsClient, raw: bytes) -> None:
    response = ims.request("POST", "/images", data=raw, headers={"Content-Type": "application/json"})

    assert_problem(response, 400)


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 16 * 1024 * 1024])
def test_body_over_one_mebibyte_is_413(ims: ImsClient, size: int) -> None:
    big = b"x" * size
    response = ims.request("POST", "/images", data=big, headers={"Content-Type": "application/json"})

    assert_problem(response, 413)


def test_unknown_path_and_unknown_id_are_404(ims: ImsClient) -> None:
    assert_problem(ims.request("GET", "/widgets"), 404)
    assert_problem(ims.request("GET", f"/images/{uuid.uuid4()}"), 404)
    assert_problem(ims.request("PATCH", f"/jobs/{uuid.uuid4()}", {"status": "error"}), 404)
    assert_problem(ims.request("DELETE", f"/recipes/{uuid.uuid4()}"), 404)


def test_wrong_method_is_405_with_allow_header(ims: ImsClient) -> None:
    response = ims.request("PATCH", "/images", {"arch": "x86_64"})

    assert_problem(response, 405)
    assert response.headers["Allow"] == "GET, POST"
    assert_problem(ims.request("PUT", f"/images/{uuid.uuid4()}", {"name": "x"}), 405)


def test_keep_alive_connection_serves_errors_and_successes_in_turn(ims_server: ImsServer, signer: TokenSigner) -> None:
    host, port = ims_server.url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {signer.issue('test-client', 60)}", "Content-Type": "application/json"}
    try:
        statuses = []
        for method, path, body in [
            ("POST", "/images", b"{broken"),
            ("GET", "/nowhere", None),
            ("POST", "/images", json.dumps({"name": "kept-alive"}).encode()),
            ("GET", "/images", None),
        ]:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        assert statuses == [400, 404, 201, 200]
    finally:
        connection.close()


# --------------------------------------------------------------------------- images


def test_image_post_assigns_id_created_and_default_arch(ims: ImsClient) -> None:
    record = ims.create("images", {"name": "sles15"})

    assert uuid.UUID(record["id"])
    assert ISO_UTC.match(record["created"])
    assert record["arch"] == "x86_64"
    assert ims.request("GET", f"/images/{record['id']}").json() == record
    assert record in ims.request("GET", "/images").json()


def test_versioned_paths_reach_the_same_records(ims: ImsClient) -> None:
    record = ims.create("images", {"name": "versioned", "arch": "aarch64"})

    for prefix in ("/v2", "/v3"):
        assert ims.request("GET", f"{prefix}/images/{record['id']}").json() == record


def test_metadata_patch_sets_and_removes_keys(ims: ImsClient) -> None:
    record = ims.create("images", {"name": "tagged", "metadata": {"owner": "ci"}})
    path = f"/images/{record['id']}"

    patched = ims.request("PATCH", path, {"metadata": {"operation": "set", "key": "stage", "value": "beta"}}).json()
    assert patched["metadata"] == {"owner": "ci", "stage": "beta"}
    patched = ims.request("PATCH", path, {"metadata": {"operation": "remove", "key": "owner"}}).json()
    assert patched["metadata"] == {"stage": "beta"}
    assert_problem(ims.request("PATCH", path, {"metadata": {"operation": "merge", "key": "x"}}), 422, "operation")


def test_delete_removes_the_record(ims: ImsClient) -> None:
    record = ims.create("images", {"name": "short-lived"})

    response = ims.request("DELETE", f"/images/{record['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(ims.request("GET", f"/images/{record['id']}"), 404)


# --------------------------------------------------------------------------- image link validation


def test_valid_manifest_link_is_accepted(ims: ImsClient, store_manifest: StoreManifest) -> None:
    image = ims.create("images", {"name": "linked"})
    link = store_manifest(image["id"])

    response = ims.request("PATCH", f"/images/{image['id']}", {"link": link})

    assert response.status_code == 200, response.text
    assert response.json()["link"] == link
    assert ims.request("GET", f"/images/{image['id']}").json()["link"] == link


def test_post_with_a_valid_link_is_accepted(ims: ImsClient, store_manifest: StoreManifest) -> None:
    image_id = str(uuid.uuid4())
    link = store_manifest(image_id)

    assert ims.create("images", {"name": "born-linked", "link": link})["link"] == link


def test_missing_manifest_is_422(ims: ImsClient) -> None:
    image = ims.create("images", {"name": "no-manifest"})
    link = {"path": f"s3://boot-images/{image['id']}/manifest.json", "type": "s3"}

    assert_problem(ims.request("PATCH", f"/images/{image['id']}", {"link": link}), 422, "does not exist")


def test_manifest_listing_a_missing_artifact_is_422_naming_it(ims: ImsClient, store_manifest: StoreManifest) -> None:
    image = ims.create("images", {"name": "missing-kernel"})
    link = store_manifest(image["id"], skip_upload=("kernel",))

    response = ims.request("PATCH", f"/images/{image['id']}", {"link": link})

    assert_problem(response, 422, f"artifact s3://boot-images/{image['id']}/kernel does not exist")


def test_manifest_with_two_rootfs_entries_is_422(ims: ImsClient, store_manifest: StoreManifest) -> None:
    image = ims.create("images", {"name": "two-rootfs"})
    link = store_manifest(image["id"], extra_rootfs=True)

    assert_problem(ims.request("PATCH", f"/images/{image['id']}", {"link": link}), 422, "exactly one")


@pytest.mark.parametrize(
    "manifest, fragment",
    [
        ({"version": "2.0", "artifacts": []}, "version"),
        ({"artifacts": []}, "version"),
        ({"version": "1.0"}, "artifacts"),
        ({"version": "1.0", "artifacts": [{"type": "x"}]}, "link"),
        ({"version": "1.0", "artifacts": [{"link": {"path": 3, "type": "s3"}}]}, "path"),
        ({"version": "1.0", "artifacts": []}, "exactly one"),
        (b"\x89PNG not json", "not valid JSON"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_manifests_are_422(
    ims: ImsClient, store_manifest: StoreManifest, manifest: Any, fragment: str
) -> None:
    image = ims.create("images", {"name": "bad-manifest"})
    link = store_manifest(image["id"], manifest=manifest)

    assert_problem(ims.request("PATCH", f"/images/{image['id']}", {"link": link}), 422, fragment)
    assert "link" not in ims.request("GET", f"/images/{image['id']}").json()


@pytest.mark.parametrize(
    "link, fragment",
    [
        ({"path": "s3://boot-images/x/manifest.json", "type": "http"}, "s3"),
        ({"path": "boot-images/x/manifest.json", "type": "s3"}, "s3://BUCKET/KEY"),
        ({"path": "s3://boot-images", "type": "s3"}, "s3://BUCKET/KEY"),
        ({"path": "s3://b/k", "type": "s3", "size": "1"}, "size"),
    ],
)
def test_malformed_links_are_422(ims: ImsClient, link: Dict[str, str], fragment: str) -> None:
    image = ims.create("images", {"name": "bad-link"})

    assert_problem(ims.request("PATCH", f"/images/{image['id']}", {"link": link}), 422, fragment)


def test_relinking_to_a_different_manifest_is_409(ims: ImsClient, store_manifest: StoreManifest) -> None:
    image = ims.create("images", {"name": "relink"})
    first = store_manifest(image["id"])
    assert ims.request("PATCH", f"/images/{image['id']}", {"link": first}).status_code == 200
    other = store_manifest(str(uuid.uuid4()))

    assert_problem(ims.request("PATCH", f"/images/{image['id']}", {"link": other}), 409, "already linked")


def test_patching_the_same_link_again_is_a_200_no_op(ims: ImsClient, store_manifest: StoreManifest) -> None:
    image = ims.create("images", {"name": "same-link"})
    link = store_manifest(image["id"])
    first = ims.request("PATCH", f"/images/{image['id']}", {"link": link})

    again = ims.request("PATCH", f"/images/{image['id']}", {"link": link})

    assert again.status_code == 200
    assert again.json() == first.json()


def test_a_link_already_used_by_another_image_is_409_naming_it(ims: ImsClient, store_manifest: StoreManifest) -> None:
    owner = ims.create("images", {"name": "owner"})
    link = store_manifest(owner["id"])
    assert ims.request("PATCH", f"/images/{owner['id']}", {"link": link}).status_code == 200
    other = ims.create("images", {"name": "copycat"})

    assert_problem(ims.request("PATCH", f"/images/{other['id']}", {"link": link}), 409, owner["id"])
    assert_problem(ims.request("POST", "/images", {"name": "copycat2", "link": link}), 409, owner["id"])


# --------------------------------------------------------------------------- recipes


def test_recipe_create_and_link_to_an_existing_object(ims: ImsClient, s3_client: Any) -> None:
    recipe = ims.create(
        "recipes",
        {
            "name": "sles15-base",
            "recipe_type": "kiwi-ng",
            "linux_distribution": "sles15",
            "template_dictionary": [{"key": "CSM_RELEASE", "value": "1.6"}],
        },
    )
    assert recipe["arch"] == "x86_64"
    assert recipe["require_dkms"] is False
    key = f"recipes/{recipe['id']}/recipe.tar.gz"
    link = {"path": f"s3://ims/{key}", "type": "s3"}

    assert_problem(ims.request("PATCH", f"/recipes/{recipe['id']}", {"link": link}), 422, "does not exist")
    s3_client.put_object(Bucket="ims", Key=key, Body=b"tarball")
    patched = ims.request("PATCH", f"/recipes/{recipe['id']}", {"link": link, "require_dkms": True})

    assert patched.status_code == 200, patched.text
    assert patched.json()["link"] == link
    assert patched.json()["require_dkms"] is True
    twin = ims.create("recipes", {"name": "twin", "recipe_type": "kiwi-ng", "linux_distribution": "sles15"})
    assert_problem(ims.request("PATCH", f"/recipes/{twin['id']}", {"link": link}), 409, recipe["id"])


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"linux_distribution": None}, "linux_distribution"),
        ({"recipe_type": "docker"}, "recipe_type"),
        ({"linux_distribution": "rhel9"}, "linux_distribution"),
        ({"template_dictionary": [{"k": 1}]}, "template_dictionary"),
        ({"require_dkms": "yes"}, "require_dkms"),
        ({"id": str(uuid.uuid4())}, "read-only"),
    ],
)
def test_invalid_recipe_fields_are_422(ims: ImsClient, changes: Dict[str, Any], fragment: str) -> None:
    body = {"name": "r", "recipe_type": "kiwi-ng", "linux_distribution": "sles15"}
    body.update(changes)
    body = {key: value for key, value in body.items() if value is not None}

    assert_problem(ims.request("POST", "/recipes", body), 422, fragment)


# --------------------------------------------------------------------------- jobs


def test_new_job_is_creating_on_x86_64(ims: ImsClient) -> None:
    job = ims.create("jobs", new_job_body(kernel_file_name="vmlinuz", build_env_size=20))

    assert job["status"] == "creating"
    assert job["arch"] == "x86_64"
    assert job["build_env_size"] == 20
    assert ISO_UTC.match(job["created"])


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"status": "success"}, "status"),
        ({"resultant_image_id": str(uuid.uuid4())}, "resultant_image_id"),
        ({"artifact_id": "not-a-uuid"}, "artifact_id"),
        ({"job_type": "destroy"}, "job_type"),
        ({"image_root_archive_name": ""}, "image_root_archive_name"),
        ({"build_env_size": 0}, "build_env_size"),
        ({"ssh_containers": [{"name": "c", "jail": "no"}]}, "jail"),
    ],
)
def test_invalid_job_posts_are_422(ims: ImsClient, extra: Dict[str, Any], fragment: str) -> None:
    assert_problem(ims.request("POST", "/jobs", new_job_body(**extra)), 422, fragment)


def test_job_patch_sets_status_and_resultant_image_id(ims: ImsClient) -> None:
    job = ims.create("jobs", new_job_body())
    image_id = str(uuid.uuid4())

    response = ims.request("PATCH", f"/jobs/{job['id']}", {"resultant_image_id": image_id})
    assert response.status_code == 200
    assert response.json()["resultant_image_id"] == image_id
    response = ims.request("PATCH", f"/jobs/{job['id']}", {"status": "packaging_artifacts"})
    assert response.json()["status"] == "packaging_artifacts"
    assert response.json()["resultant_image_id"] == image_id


@pytest.mark.parametrize(
    "body, status",
    [({"status": "finished"}, 422), ({"resultant_image_id": "abc"}, 422), ({"arch": "aarch64"}, 422), ({}, 400)],
)
def test_invalid_job_patches_are_refused(ims: ImsClient, body: Dict[str, Any], status: int) -> None:
    job = ims.create("jobs", new_job_body())

    assert_problem(ims.request("PATCH", f"/jobs/{job['id']}", body), status)


# --------------------------------------------------------------------------- persistence and logs


def test_records_survive_a_restart_with_the_same_data_dir(
    ims_factory: Callable[..., ImsServer], signer: TokenSigner, store_manifest: StoreManifest, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {signer.issue('test-client', 60)}"}
    first = ims_factory(tmp_path / "data")
    image = requests.post(first.url + "/images", json={"name": "durable"}, headers=headers, timeout=5).json()
    link = store_manifest(image["id"])
    requests.patch(first.url + f"/images/{image['id']}", json={"link": link}, headers=headers, timeout=5)
    job = requests.post(first.url + "/jobs", json=new_job_body(), headers=headers, timeout=5).json()
    first.stop()

    second = ims_factory(tmp_path / "data")

    restored = requests.get(second.url + f"/images/{image['id']}", headers=headers, timeout=5).json()
    assert restored["link"] == link
    assert requests.get(second.url + f"/jobs/{job['id']}", headers=headers, timeout=5).json() == job
    assert not list((tmp_path / "data").glob(".ims-*"))  # no temp files left behind


def test_request_log_has_method_path_status_and_no_token(ims_server: ImsServer, ims: ImsClient) -> None:
    ims.create("images", {"name": "logged"})
    ims.request("GET", "/nowhere?secret=1")

    log_text = ims_server.request_log.read_text()
    token = str(ims.session.headers["Authorization"]).split()[1]

    assert re.search(r"Z POST /images 201$", log_text, re.MULTILINE)
    assert re.search(r"Z GET /nowhere 404$", log_text, re.MULTILINE)
    assert token not in log_text
    assert "secret" not in log_text


# --------------------------------------------------------------------------- the stack around IMS


def test_stack_env_and_job_with_a_shared_s3_backend(moto: MotoS3, tmp_path: Path) -> None:
    with LocalStack(data_dir=tmp_path / "stack", s3_backend=moto) as stack:
        env = stack.env()
        assert list(env) == [
            "IMS_URL",
            "OAUTH_CLIENT_ID",
            "OAUTH_CLIENT_SECRET",
            "OAUTH_CLIENT_ENDPOINT",
            "S3_ENDPOINT",
            "S3_ACCESS_KEY",
            "S3_SECRET_KEY",
            "S3_BUCKET",
            "IMS_JOB_ID",
        ]
        grant = requests.post(
            env["OAUTH_CLIENT_ENDPOINT"],
            data={"grant_type": "client_credentials"},
            auth=(env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"]),
            timeout=5,
        )
        token = grant.json()["access_token"]
        job = requests.get(
            f"{env['IMS_URL']}/jobs/{env['IMS_JOB_ID']}", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert job.json()["status"] == "creating"
        assert job.json()["image_root_archive_name"] == "local-stack"

    # Restarted on the same directory: same credentials, and the old token is still good.
    with LocalStack(data_dir=tmp_path / "stack", s3_backend=moto) as stack:
        assert stack.env()["OAUTH_CLIENT_SECRET"] == env["OAUTH_CLIENT_SECRET"]
        again = requests.get(
            f"{stack.env()['IMS_URL']}/jobs/{env['IMS_JOB_ID']}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert again.status_code == 200
    assert moto.endpoint  # a backend passed in is left running


def test_local_up_prints_exports_then_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    program = (
        "import argparse, sys\n"
        "from ims_python_helper.cli import Environment\n"
        "from ims_python_helper.local.commands import register\n"
        "parser = argparse.ArgumentParser()\n"
        "register(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.handler(args, Environment()))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    process = subprocess.Popen(
        [sys.executable, "-c", program, "local", "up", "--s3", "moto", "--data-dir", str(tmp_path / "up")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line or line.strip() == "ready":
                break
            lines.append(line.strip())
        assert [line.split("=")[0] for line in lines][:2] == ["export IMS_URL", "export OAUTH_CLIENT_ID"]
        exports = dict(line[len("export ") :].split("=", 1) for line in lines)
        assert requests.get(exports["IMS_URL"] + "/healthz/ready", timeout=5).status_code == 200
        moto_log = (tmp_path / "up" / "moto.log").exists()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert moto_log
        with pytest.raises(requests.ConnectionError):
            requests.get(exports["S3_ENDPOINT"], timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
