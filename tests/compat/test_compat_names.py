"""Issue 12 point 2: the names older callers of the earlier client use, with its argument shapes.

``ImsHelper._ims_*`` (one IMS call each), ``s3_resource``, ``ims_python_helper.LOGGER``,
``ims_python_helper.session.RequestLogger``, ``ImsHelper(..., s3_host=URL)`` and
``create_oauth_session(id, secret, ca, token_url, logger)``.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import requests

import ims_python_helper
from ims_python_helper import ImsHelper
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.session import DEFAULT_TIMEOUT, RequestLogger, create_oauth_session
from tests.support import ImsApi

#: The earlier client's parameters of each private method older callers use.
LEGACY_SIGNATURES = {
    "_ims_job_patch_job_status": ["self", "ims_job_id", "ims_job_status"],
    "_ims_job_patch_resultant_image_id": ["self", "ims_job_id", "result_id"],
    "_ims_images_get": ["self"],
    "_ims_image_get": ["self", "image_id"],
    "_ims_image_create": ["self", "name", "arch"],
    "_ims_image_patch": ["self", "image_id", "data"],
    "_ims_image_delete": ["self", "image_id"],
    "_ims_recipes_get": ["self"],
    "_ims_recipe_create": ["self", "name", "linux_distribution", "template_dictionary", "arch", "require_dkms"],
    "_ims_recipe_patch": ["self", "recipe_id", "data"],
    "_ims_recipe_delete": ["self", "ident"],
}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def session(stack: LocalStack) -> Iterator[requests.Session]:
    assert stack.tokens is not None
    with create_oauth_session(stack.client_id, stack.client_secret, None, stack.tokens.url, 60) as made:
        yield made


def make_helper(stack: LocalStack, session: requests.Session, **s3: Any) -> ImsHelper:
    assert stack.ims is not None and stack.s3 is not None
    s3.setdefault("s3_endpoint", stack.s3.endpoint)
    return ImsHelper(
        ims_url=stack.ims.url,
        session=session,
        s3_access_key=stack.s3.access_key,
        s3_secret_key=stack.s3.secret_key,
        s3_bucket="boot-images",
        s3_ssl_verify="false",
        **s3,
    )


@pytest.fixture
def helper(stack: LocalStack, session: requests.Session) -> ImsHelper:
    return make_helper(stack, session)


@pytest.mark.parametrize("name", sorted(LEGACY_SIGNATURES))
def test_the_private_methods_keep_the_earlier_parameters(name: str):
    parameters = inspect.signature(getattr(ImsHelper, name)).parameters

    assert list(parameters) == LEGACY_SIGNATURES[name]
    defaults = {n: p.default for n, p in parameters.items() if p.default is not inspect.Parameter.empty}
    assert all(value is None for value in defaults.values())


def test_image_calls_create_read_patch_and_delete(helper: ImsHelper, ims_api: ImsApi):
    name = unique("legacy-image")

    created = helper._ims_image_create(name, arch="aarch64")
    listed = helper._ims_images_get()
    fetched = helper._ims_image_get(created["id"])
    patched = helper._ims_image_patch(created["id"], {"arch": "x86_64"})
    deleted = helper._ims_image_delete(created["id"])

    assert created["name"] == name and created["arch"] == "aarch64"
    assert created["id"] in {i["id"] for i in listed}
    assert fetched == created
    assert patched["arch"] == "x86_64" and patched["id"] == created["id"]
    assert deleted is None
    assert ims_api.images_named(name) == []


def test_recipe_calls_take_a_plain_template_mapping(helper: ImsHelper, ims_api: ImsApi):
    name = unique("legacy-recipe")

    created = helper._ims_recipe_create(name, "sles15", {"CSM_RELEASE": "1.5"}, arch="aarch64", require_dkms=True)
    listed = helper._ims_recipes_get()
    patched = helper._ims_recipe_patch(created["id"], {"template_dictionary": [{"key": "A", "value": "b"}]})
    helper._ims_recipe_delete(created["id"])

    assert created["name"] == name and created["linux_distribution"] == "sles15"
    assert created["template_dictionary"] == [{"key": "CSM_RELEASE", "value": "1.5"}]
    assert (created["arch"], created["require_dkms"]) == ("aarch64", True)
    assert created["id"] in {r["id"] for r in listed}
    assert patched["template_dictionary"] == [{"key": "A", "value": "b"}]
    assert [r for r in ims_api.get("/recipes") if r["name"] == name] == []


def test_job_calls_patch_the_status_and_the_resultant_image(helper: ImsHelper, ims_api: ImsApi):
    job_id = ims_api.new_job()
    image = helper._ims_image_create(unique("legacy-job-image"))

    status = helper._ims_job_patch_job_status(job_id, "building_image")
    result = helper._ims_job_patch_resultant_image_id(job_id, image["id"])

    assert status["status"] == "building_image"
    assert result["resultant_image_id"] == image["id"]
    assert ims_api.get(f"/jobs/{job_id}") == result


def test_s3_resource_is_made_on_first_use_on_the_same_endpoint_and_keys(helper: ImsHelper, s3: Any):
    key = f"legacy/{uuid.uuid4().hex}"
    s3.put_object(Bucket="boot-images", Key=key, Body=b"x", Metadata={"md5sum": "9dd4e461268c8034f5c8564e155c67a6"})

    assert helper._s3_resource is None, "made before anyone asked"
    resource = helper.s3_resource
    obj = resource.Object("boot-images", key)

    assert helper.s3_resource is resource
    assert obj.metadata["md5sum"] == "9dd4e461268c8034f5c8564e155c67a6"
    assert key in [o.key for o in resource.Bucket("boot-images").objects.filter(Prefix="legacy/")]
    assert resource.meta.client is helper.s3_client
    resource.Bucket("boot-images").objects.filter(Prefix=key).delete()
    assert "Contents" not in s3.list_objects_v2(Bucket="boot-images", Prefix=key)


def test_s3_host_is_the_s3_endpoint(stack: LocalStack, session: requests.Session, tmp_path: Path, ims_api: ImsApi):
    assert stack.s3 is not None
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(b"rootfs" * 4096)
    helper = make_helper(stack, session, s3_endpoint=None, s3_host=stack.s3.endpoint)

    record = helper.image_upload_artifacts(unique("s3-host"), rootfs=[str(rootfs)])["ims_image_record"]

    assert helper.s3_settings.endpoint == stack.s3.endpoint
    assert ims_api.get(f"/images/{record['id']}")["link"]["path"].startswith("s3://boot-images/")


def test_the_package_logger_is_module_level():
    assert ims_python_helper.LOGGER is logging.getLogger("ims_python_helper")


class Collect(logging.Handler):
    """A caller's logger and everything logged to it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []
        self.logger = logging.getLogger(f"caller.{uuid.uuid4().hex[:8]}")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def caller_log() -> Iterator[Collect]:
    collect = Collect()
    collect.logger.setLevel(logging.DEBUG)
    collect.logger.propagate = False
    collect.logger.addHandler(collect)
    yield collect
    collect.logger.removeHandler(collect)


def test_a_logger_in_the_timeout_position_is_the_logger(stack: LocalStack, caller_log: Collect):
    assert stack.tokens is not None and stack.ims is not None

    session = create_oauth_session(stack.client_id, stack.client_secret, None, stack.tokens.url, caller_log.logger)
    answer = session.get(f"{stack.ims.url}/images", timeout=10)

    assert answer.status_code == 200
    assert session.request_timeout == DEFAULT_TIMEOUT
    assert f"GET {stack.ims.url}/images" in caller_log.text
    assert "-----------RESPONSE-----------\n200" in caller_log.text
    assert session.token["access_token"] not in caller_log.text and stack.client_secret not in caller_log.text
    assert "Authorization: <hidden>" in caller_log.text


def test_request_logger_masks_secrets_and_leaves_streamed_bodies_unread(
    stack: LocalStack, caller_log: Collect, ims_api: ImsApi
):
    assert stack.ims is not None
    token = stack.issue_token(3600)
    hooks = RequestLogger(caller_log.logger)
    plain = requests.Session()
    plain.headers["Authorization"] = f"Bearer {token}"
    plain.hooks["response"] += [hooks.log_request, hooks.log_response]
    name = unique("logged")

    created = plain.post(f"{stack.ims.url}/images", json={"name": name}, timeout=10)
    refused = plain.post(f"{stack.ims.url}/images", json={"name": name, "password": "hunter2-secret"}, timeout=10)
    streamed = plain.get(f"{stack.ims.url}/images", stream=True, timeout=10)

    assert created.status_code == 201 and refused.status_code >= 400 and streamed.status_code == 200
    assert token not in caller_log.text and "hunter2-secret" not in caller_log.text
    assert f'"name": "{name}"' in caller_log.text, "bodies are logged"
    assert created.json()["id"] in caller_log.text, "answers read by requests are logged"
    assert "(streamed; not read here)" in caller_log.text
    assert not streamed._content_consumed, "the hook read a streamed body"
    RequestLogger(None).log_response(created)  # without a logger: nothing to do, no error
    plain.delete(f"{stack.ims.url}/images/{created.json()['id']}", timeout=10)
    assert ims_api.images_named(name) == []
