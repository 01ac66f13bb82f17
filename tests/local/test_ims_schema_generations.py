"""The local IMS as today's IMS and as IMS before 3.16 (``legacy``), over real HTTP.

IMS before 3.16 (CSM 1.5 and earlier) knows no image ``metadata``: its schema
refuses any field it does not know in an image body with 400 and a problem
naming the field, and ``GET /version`` answers 3.15.x. The switch is the
``schema`` keyword of ``ImsServer``, ``ims_schema`` of ``LocalStack``, or
``IMS_LOCAL_SCHEMA`` when neither names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
import requests

from ims_python_helper.local.ims_server import ImsServer
from ims_python_helper.local.moto_s3 import MotoS3
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.local.tokens import TokenSigner
from tests.support import CLIENT_ID, ImsClient, StoreManifest, assert_problem

ImsFactory = Callable[..., ImsServer]


def version_of(ims: ImsClient) -> Tuple[int, int]:
    """(major, minor) of what ``GET /version`` answers."""
    response = ims.request("GET", "/version")
    assert response.status_code == 200, response.text
    major, minor = response.json().split(".")[:2]
    return int(major), int(minor)


@pytest.fixture
def client_for(signer: TokenSigner) -> Iterator[Callable[[ImsServer], ImsClient]]:
    """Makes clients holding a valid token for any of the test's servers."""
    clients = []

    def make(server: ImsServer) -> ImsClient:
        client = ImsClient(server.url, signer.issue(CLIENT_ID, 120))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.session.close()


@pytest.fixture
def legacy(ims_factory: ImsFactory, client_for: Callable[[ImsServer], ImsClient], tmp_path: Path) -> ImsClient:
    """A client of a local IMS that behaves like IMS 3.15."""
    return client_for(ims_factory(tmp_path / "legacy", schema="legacy"))


@pytest.fixture
def current(ims_factory: ImsFactory, client_for: Callable[[ImsServer], ImsClient], tmp_path: Path) -> ImsClient:
    """A client of a local IMS that behaves like today's IMS."""
    return client_for(ims_factory(tmp_path / "current", schema="current"))


# --------------------------------------------------------------------------- legacy: IMS before 3.16


def test_legacy_image_post_with_metadata_is_400_naming_the_field_and_creates_nothing(legacy: ImsClient) -> None:
    response = legacy.request("POST", "/images", {"name": "with-metadata", "metadata": {"ims_job_id": "x"}})

    problem = assert_problem(response, 400, "'metadata'")
    assert problem["title"] == "Bad Request"
    assert "\n" not in problem["detail"]
    assert legacy.request("GET", "/images").json() == []


def test_legacy_image_post_names_every_unknown_field(legacy: ImsClient) -> None:
    response = legacy.request("POST", "/images", {"name": "n", "metadata": {}, "colour": "blue"})

    problem = assert_problem(response, 400)
    assert "'metadata'" in problem["detail"] and "'colour'" in problem["detail"]


def test_legacy_image_post_without_metadata_is_created_as_before(legacy: ImsClient) -> None:
    record = legacy.create("images", {"name": "plain", "arch": "aarch64"})

    assert record["name"] == "plain" and record["arch"] == "aarch64"
    assert "metadata" not in record


def test_legacy_image_patch_with_metadata_is_400_and_changes_nothing(legacy: ImsClient) -> None:
    record = legacy.create("images", {"name": "patched"})
    path = f"/images/{record['id']}"

    response = legacy.request("PATCH", path, {"metadata": {"operation": "set", "key": "k", "value": "v"}})

    assert_problem(response, 400, "'metadata'")
    assert legacy.request("GET", path).json() == record


def test_legacy_image_can_still_be_linked(legacy: ImsClient, store_manifest: StoreManifest) -> None:
    record = legacy.create("images", {"name": "linked"})
    link = store_manifest(record["id"])

    response = legacy.request("PATCH", f"/images/{record['id']}", {"link": link})

    assert response.status_code == 200, response.text
    assert response.json()["link"] == link


def test_legacy_checks_other_bodies_as_before(legacy: ImsClient) -> None:
    # Only image bodies changed in 3.16; a job patch with an unknown status is the same 422 in both.
    job = legacy.create(
        "jobs",
        {
            "job_type": "create",
            "artifact_id": "0e6d4e2c-3f0b-4bb8-9f5e-0f4a7a3b1c11",
            "public_key_id": "0e6d4e2c-3f0b-4bb8-9f5e-0f4a7a3b1c12",
            "image_root_archive_name": "legacy",
        },
    )
    response = legacy.request("PATCH", f"/jobs/{job['id']}", {"status": "finished"})

    assert_problem(response, 422, "status")


def test_legacy_version_is_3_15(legacy: ImsClient) -> None:
    assert version_of(legacy) == (3, 15)


# --------------------------------------------------------------------------- current: IMS 3.16 and later


def test_current_image_post_keeps_metadata(current: ImsClient) -> None:
    record = current.create("images", {"name": "with-metadata", "metadata": {"ims_job_id": "x"}})

    assert current.request("GET", f"/images/{record['id']}").json()["metadata"] == {"ims_job_id": "x"}


def test_current_unknown_image_field_is_422_not_400(current: ImsClient) -> None:
    assert_problem(current.request("POST", "/images", {"name": "n", "colour": "blue"}), 422, "'colour'")


def test_current_version_is_3_16_or_later(current: ImsClient) -> None:
    assert version_of(current) >= (3, 16)


# --------------------------------------------------------------------------- choosing the generation


def test_ims_local_schema_picks_legacy_when_no_keyword_names_one(
    ims_factory: ImsFactory, client_for: Callable[[ImsServer], ImsClient], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("IMS_LOCAL_SCHEMA", "legacy")

    from_env = ims_factory(tmp_path / "env", schema=None)
    by_keyword = ims_factory(tmp_path / "keyword", schema="current")

    assert from_env.schema == "legacy" and version_of(client_for(from_env)) == (3, 15)
    assert by_keyword.schema == "current" and version_of(client_for(by_keyword)) >= (3, 16)


@pytest.mark.parametrize(
    "environ, keyword, fragment",
    [
        ({"IMS_LOCAL_SCHEMA": "old"}, None, "IMS_LOCAL_SCHEMA must be one of current, legacy, not 'old'"),
        ({}, "3.15", "the IMS schema must be one of current, legacy, not '3.15'"),
    ],
)
def test_an_unknown_generation_is_refused_naming_where_it_came_from(
    moto: MotoS3, tmp_path: Path, monkeypatch: Any, environ: Dict[str, str], keyword: Any, fragment: str
) -> None:
    monkeypatch.delenv("IMS_LOCAL_SCHEMA", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValueError) as caught:
        LocalStack(data_dir=tmp_path, s3_backend=moto, ims_schema=keyword)

    assert str(caught.value) == fragment


@pytest.mark.parametrize("how", ["keyword", "environment"])
def test_local_stack_in_legacy_mode_serves_a_3_15_ims(moto: MotoS3, tmp_path: Path, monkeypatch: Any, how: str) -> None:
    if how == "environment":
        monkeypatch.setenv("IMS_LOCAL_SCHEMA", "legacy")
        stack = LocalStack(data_dir=tmp_path, s3_backend=moto)
    else:
        monkeypatch.delenv("IMS_LOCAL_SCHEMA", raising=False)
        stack = LocalStack(data_dir=tmp_path, s3_backend=moto, ims_schema="legacy")

    with stack:
        env = stack.env()
        headers = {"Authorization": f"Bearer {stack.issue_token(60)}"}
        version = requests.get(f"{env['IMS_URL']}/version", headers=headers, timeout=5)
        refused = requests.post(
            f"{env['IMS_URL']}/images", json={"name": "n", "metadata": {"k": "v"}}, headers=headers, timeout=5
        )

    assert stack.ims_schema == "legacy"
    assert version.json().startswith("3.15.")
    assert_problem(refused, 400, "'metadata'")
