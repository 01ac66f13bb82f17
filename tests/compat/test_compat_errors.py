"""Issue 12 point 1: the errors are also the requests and botocore exceptions callers of the earlier client catch.

The artifact loader that installs recipes and images on upgrade wraps each
``recipe_upload`` and ``image_upload_artifacts`` in
``except requests.RequestException as exc`` (reading ``exc.response.text``) and
``except botocore.exceptions.BotoCoreError``, logs, and goes on; older job
scripts call ``_ims_job_patch_job_status`` inside ``except requests.exceptions.HTTPError``.
Every error stays an ``ImsHelperError`` with the same one-line message.
"""

from __future__ import annotations

import logging
import pickle
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import botocore.exceptions
import pytest
import requests

from ims_python_helper import ImsHelper
from ims_python_helper.errors import (
    ImsApiError,
    ImsConnectionError,
    ImsHelperError,
    S3ResponseError,
    StorageError,
    VerificationError,
    s3_failure,
)
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.session import ClientCredentialsSession, create_oauth_session
from tests.faults.proxy import Fault, FaultProxy
from tests.support import ImsApi, make_recipe

ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def client_error(code: str = "AccessDenied", status: int = 403) -> botocore.exceptions.ClientError:
    response = {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "PutObject")  # type: ignore[arg-type]


def storage_error_while_handling(err: BaseException, message: str) -> StorageError:
    """What the storage layer does: turn the botocore error it caught into a StorageError (``s3_failure``)."""
    try:
        raise err
    except Exception as caught:
        return s3_failure(message, caught)


# -- the classes, without a server ------------------------------------------------------------


def test_an_ims_error_status_is_a_requests_http_error_with_the_real_answer():
    answer = requests.Response()
    answer.status_code, answer._content = 422, b'{"detail": "recipe name taken"}'
    error = ImsApiError("POST", "/recipes", 422, "recipe name taken", response=answer)

    assert str(error) == "IMS POST /recipes failed with HTTP 422: recipe name taken"
    assert error.args == (str(error),)
    assert isinstance(error, requests.exceptions.HTTPError) and isinstance(error, ImsHelperError)
    assert error.response.status_code == 422 and error.response.text == '{"detail": "recipe name taken"}'
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.args, copy.status) == (ImsApiError, str(error), error.args, 422)
    assert copy.response.text == answer.text and copy.response.status_code == 422


def test_an_s3_error_code_makes_a_client_error_and_anything_else_a_botocore_error():
    answered = storage_error_while_handling(client_error(), "cannot write s3://b/k: AccessDenied (HTTP 403)")
    unreachable = storage_error_while_handling(
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), "cannot reach S3 at http://x"
    )
    plain = StorageError("s3://b/k did not store correctly")

    assert type(answered) is S3ResponseError
    assert isinstance(answered, botocore.exceptions.ClientError) and isinstance(answered, ImsHelperError)
    assert answered.response["Error"]["Code"] == "AccessDenied" and answered.operation_name == "PutObject"
    for error in (answered, unreachable, plain):
        assert isinstance(error, botocore.exceptions.BotoCoreError) and isinstance(error, StorageError)
        assert str(error) == error.args[0] and len(error.args) == 1
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.args) == (type(error), str(error), error.args)
    assert type(unreachable) is StorageError and not isinstance(unreachable, botocore.exceptions.ClientError)
    try:
        raise client_error()
    except botocore.exceptions.ClientError:
        inside = StorageError("s3://b/k is larger than 16 bytes")
    assert type(inside) is StorageError, "the class is the one the code names, not picked from the error handled"
    assert pickle.loads(pickle.dumps(answered)).response == answered.response
    assert str(VerificationError("size differs")) == "size differs"


def test_both_the_old_and_the_new_except_clauses_catch_them():
    connection = ImsConnectionError("cannot reach IMS at http://127.0.0.1:1 (GET /images): connection refused")
    api = ImsApiError("GET", "/images", 503, "busy")
    for error in (connection, api):
        for clause in (ImsHelperError, requests.RequestException):
            with pytest.raises(clause):
                raise error
    with pytest.raises(requests.exceptions.ConnectionError):
        raise connection
    assert connection.response is None and str(connection).startswith("cannot reach IMS")


# -- the loader's pattern, against the local stack -------------------------------------------


def load_each(loads: List[Tuple[str, Callable[[], Any]]], logger: logging.Logger) -> List[str]:
    """The artifact loader's loop: one failure is logged and the next artifact still loads."""
    loaded = []
    for name, load in loads:
        try:
            load()
            loaded.append(name)
        except requests.RequestException as exc:
            logger.error("could not load %s: %s; IMS said %s", name, exc, exc.response.text)
        except botocore.exceptions.BotoCoreError as exc:
            logger.error("could not upload %s: %s", name, exc)
    return loaded


@pytest.fixture
def ims_proxy(stack: LocalStack) -> Iterator[FaultProxy]:
    assert stack.ims is not None
    with FaultProxy(stack.ims.url, name="ims") as proxy:
        yield proxy


def loader_helper(stack: LocalStack, ims_url: str, s3_endpoint: str, bucket: str) -> ImsHelper:
    assert stack.tokens is not None and stack.s3 is not None
    session = create_oauth_session(stack.client_id, stack.client_secret, None, stack.tokens.url, 60)
    return ImsHelper(
        ims_url=ims_url,
        session=session,
        s3_endpoint=s3_endpoint,
        s3_access_key=stack.s3.access_key,
        s3_secret_key=stack.s3.secret_key,
        s3_bucket=bucket,
        s3_ssl_verify="false",
    )


@pytest.mark.parametrize("status", [400, 500])
def test_a_recipe_ims_refuses_is_logged_and_the_next_one_loads(
    status: int, stack: LocalStack, ims_proxy: FaultProxy, ims_api: ImsApi, tmp_path: Path, caplog
):
    assert stack.ims is not None and stack.s3 is not None
    helper = loader_helper(stack, ims_proxy.url_for(stack.ims.url), stack.s3.endpoint, "ims")
    ims_proxy.add(Fault(status=status, method="POST", path="/recipes$", times=1, detail="recipe refused by IMS"))
    refused, accepted = unique("refused"), unique("accepted")
    loads = [
        (refused, lambda: helper.recipe_upload(refused, make_recipe(tmp_path / "a.tgz"), "sles15")),
        (accepted, lambda: helper.recipe_upload(accepted, make_recipe(tmp_path / "b.tgz", b"<b/>\n"), "sles15")),
    ]

    with caplog.at_level(logging.ERROR, logger="loader"):
        loaded = load_each(loads, logging.getLogger("loader"))

    assert loaded == [accepted]
    assert [r["name"] for r in ims_api.get("/recipes") if r["name"] in (refused, accepted)] == [accepted]
    logged = [r.getMessage() for r in caplog.records if r.name == "loader"]
    assert len(logged) == 1 and refused in logged[0]
    assert f"IMS POST /recipes failed with HTTP {status}: recipe refused by IMS" in logged[0]
    assert '"detail": "recipe refused by IMS"' in logged[0], "exc.response.text is IMS's own answer"


def test_an_image_s3_refuses_is_logged_and_the_next_one_loads(
    stack: LocalStack, s3_proxy: FaultProxy, ims_api: ImsApi, tmp_path: Path, caplog
):
    assert stack.ims is not None
    helper = loader_helper(stack, stack.ims.url, s3_proxy.url, "boot-images")
    s3_proxy.add(Fault(status=403, method="PUT", times=1, body=ACCESS_DENIED, headers={"Content-Type": "text/xml"}))
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(b"squashfs" * 1024)
    refused, accepted = unique("refused-image"), unique("accepted-image")
    caught: List[BaseException] = []

    def publish(name: str) -> Any:
        try:
            return helper.image_upload_artifacts(name, rootfs=[str(rootfs)])
        except Exception as err:
            caught.append(err)
            raise

    loads = [(refused, lambda: publish(refused)), (accepted, lambda: publish(accepted))]
    with caplog.at_level(logging.ERROR, logger="loader"):
        loaded = load_each(loads, logging.getLogger("loader"))

    assert loaded == [accepted]
    assert ims_api.images_named(refused) == [] and ims_api.images_named(accepted)[0]["link"]
    assert len(caught) == 1 and isinstance(caught[0], botocore.exceptions.ClientError)
    assert caught[0].response["Error"]["Code"] == "AccessDenied"
    logged = [r.getMessage() for r in caplog.records if r.name == "loader"]
    assert len(logged) == 1 and f"could not upload {refused}" in logged[0] and "AccessDenied" in logged[0]


def test_older_job_scripts_catch_an_unknown_job_as_an_http_error(stack: LocalStack):
    assert stack.ims is not None and stack.s3 is not None
    helper = loader_helper(stack, stack.ims.url, stack.s3.endpoint, "boot-images")
    unknown = str(uuid.uuid4())

    try:
        helper._ims_job_patch_job_status(unknown, "error")
        raise AssertionError("IMS accepted a job it does not have")
    except requests.exceptions.HTTPError as exc:
        assert exc.response.status_code == 404
        assert unknown in exc.response.text or "not found" in exc.response.text.lower()
        assert str(exc).startswith(f"IMS PATCH /jobs/{unknown} failed with HTTP 404")


def test_an_unreachable_ims_is_a_requests_connection_error(stack: LocalStack):
    assert stack.tokens is not None and stack.s3 is not None
    # No retries, so the refused connection is reported at once.
    session = ClientCredentialsSession(stack.client_id, stack.client_secret, stack.tokens.url, retries=0)
    helper = ImsHelper("http://127.0.0.1:1/apis/ims", session, s3_endpoint=stack.s3.endpoint, s3_ssl_verify="false")

    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        helper._ims_images_get()

    assert isinstance(caught.value, ImsHelperError)
    assert str(caught.value) == "cannot reach IMS at http://127.0.0.1:1/apis/ims (GET /images): connection refused"
