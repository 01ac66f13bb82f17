"""Issue 18 points 2 and 3: what IMS judges reaches IMS, and its refusal is an error the loader's loop catches.

The artifact loader wraps each call in
``except (requests.RequestException, botocore.exceptions.BotoCoreError)``, logs
and goes on. A value this client does not know (a distro, an architecture, a
job status) is sent to IMS, which is the judge of its own vocabulary; IMS's
refusal comes back as an ``HTTPError`` whose ``response`` is IMS's own answer.
A recipe that is not a gzipped tar is uploaded, as earlier clients did.
"""

from __future__ import annotations

import json
import logging
import pickle
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import botocore.exceptions
import pytest
import requests

from ims_python_helper import ImsHelper
from ims_python_helper.errors import ImsHelperError
from ims_python_helper.local.stack import LocalStack
from tests.faults.proxy import Fault, FaultProxy
from tests.support import ImsApi, make_recipe

PROBLEM_JSON = {"Content-Type": "application/problem+json"}
LOADER_ERRORS = (requests.RequestException, botocore.exceptions.BotoCoreError)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def recipes_helper(stack: LocalStack, caller_session: requests.Session, s3_kwargs: Dict[str, Any]) -> ImsHelper:
    """An ImsHelper made the way the artifact loader makes it for recipes (bucket ``ims``)."""
    assert stack.ims is not None
    return ImsHelper(ims_url=stack.ims.url, session=caller_session, s3_bucket="ims", **s3_kwargs)


def caught_by_the_loader(call: Callable[[], Any]) -> BaseException:
    """Run ``call`` inside the loader's except clause; return what it caught (failing when nothing was raised)."""
    try:
        call()
    except LOADER_ERRORS as exc:
        return exc
    raise AssertionError("the call succeeded")


def answered_by_ims(exc: BaseException, status: int, *fragments: str) -> None:
    """``exc`` is an HTTPError carrying IMS's own answer (sent over the wire, not made up here)."""
    assert isinstance(exc, requests.exceptions.HTTPError) and isinstance(exc, ImsHelperError)
    assert exc.response is not None and exc.response.status_code == status
    assert exc.response.request is not None, "the answer came from IMS"
    assert exc.response.headers["Content-Type"].startswith("application/problem+json")
    for fragment in fragments:
        assert fragment in exc.response.text
    assert f"HTTP {status}" in str(exc) and "\n" not in str(exc)


def test_a_recipe_with_a_distro_this_client_does_not_know_reaches_ims(
    recipes_helper: ImsHelper, ims_api: ImsApi, tmp_path: Path
):
    name = unique("bogus-distro")

    exc = caught_by_the_loader(
        lambda: recipes_helper.recipe_upload(name, make_recipe(tmp_path / "r.tgz"), "bogus_distro")
    )

    answered_by_ims(exc, 422, "linux_distribution", "bogus_distro")
    assert str(exc).startswith("IMS POST /recipes failed with HTTP 422: ")
    assert [r for r in ims_api.get("/recipes") if r["name"] == name] == []


def test_an_image_with_an_arch_this_client_does_not_know_reaches_ims_and_nothing_is_left(
    helper: ImsHelper, ims_api: ImsApi, tmp_path: Path
):
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(b"squashfs" * 512)
    name = unique("sparc-image")

    exc = caught_by_the_loader(lambda: helper.image_upload_artifacts(name, rootfs=[str(rootfs)], arch="sparc"))

    answered_by_ims(exc, 422, "arch", "sparc")
    assert ims_api.images_named(name) == []


def test_a_recipe_that_is_not_gzip_is_uploaded_with_a_warning(
    recipes_helper: ImsHelper, stack: LocalStack, tmp_path: Path, caplog
):
    plain = tmp_path / "recipe.xml"
    plain.write_bytes(b"<image schemaversion='7.4'/>\n")

    with caplog.at_level(logging.WARNING):
        record = recipes_helper.recipe_upload(unique("plain"), str(plain), "sles15")

    assert record["link"]["path"] == f"s3://ims/recipes/{record['id']}/recipe.tar.gz"
    stored = recipes_helper.s3_client.get_object(Bucket="ims", Key=f"recipes/{record['id']}/recipe.tar.gz")
    assert stored["Body"].read() == plain.read_bytes()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("is not gzip-compressed" in w and "uploading it as given" in w for w in warnings), warnings


def test_a_job_ims_does_not_have_is_an_http_error_with_imss_404(helper: ImsHelper):
    missing = str(uuid.uuid4())

    exc = caught_by_the_loader(lambda: helper.image_set_job_status(missing, "error"))

    answered_by_ims(exc, 404)
    assert (
        str(exc)
        == f"IMS PATCH /jobs/{missing} failed with HTTP 404: IMS has no job {missing}; check the job id (or IMS_JOB_ID)"
    )


def test_a_status_this_client_does_not_know_reaches_ims_and_the_job_is_unchanged(helper: ImsHelper, ims_api: ImsApi):
    job_id = ims_api.new_job()

    exc = caught_by_the_loader(lambda: helper.image_set_job_status(job_id, "bogus_status"))

    answered_by_ims(exc, 422, "status", "bogus_status")
    assert ims_api.get(f"/jobs/{job_id}")["status"] == "creating"


REFUSED_BEFORE_SENDING = {
    # id: (call, status IMS answered the earlier client, words of the detail)
    "job-id-not-uuid": (lambda h, f: h.image_set_job_status("../images", "error"), 404, "is not a UUID"),
    "publish-job-id-not-uuid": (lambda h, f: h.image_upload_artifacts("n", "x", rootfs=[f]), 404, "is not a UUID"),
    "legacy-delete-id-not-uuid": (lambda h, f: h._ims_image_delete("12"), 404, "is not a UUID"),
    "empty-image-name": (lambda h, f: h.image_upload_artifacts("", rootfs=[f]), 422, "image name is empty"),
    "no-rootfs": (lambda h, f: h.image_upload_artifacts("n", kernel=[f]), 422, "no rootfs given"),
    "template-value-not-a-string": (
        lambda h, f: h.recipe_upload("r", f, "sles15", {"KEY": 7}),
        422,
        "template dictionary keys and values must be non-empty strings",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_BEFORE_SENDING))
def test_input_ims_would_refuse_is_refused_before_sending_as_an_http_error(
    case: str, helper: ImsHelper, tmp_path: Path
):
    """Earlier clients sent it and met IMS's refusal as an HTTPError; it is refused before sending, in that family."""
    call, status, words = REFUSED_BEFORE_SENDING[case]
    artifact = tmp_path / "artifact"
    artifact.write_bytes(b"bytes")

    exc = caught_by_the_loader(lambda: call(helper, str(artifact)))

    assert isinstance(exc, requests.exceptions.HTTPError) and isinstance(exc, ImsHelperError)
    assert exc.response is not None and exc.response.status_code == status
    assert words in exc.response.json()["detail"] and words in str(exc)
    assert exc.response.request is None, "nothing was sent"
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), str(copy), copy.response.status_code) == (type(exc), str(exc), status)


def test_the_loader_loop_logs_each_refusal_and_loads_the_rest(
    recipes_helper: ImsHelper, ims_api: ImsApi, tmp_path: Path, caplog
):
    """The whole load goes on: a bogus distro, a plain file and a good recipe, in one loop."""
    plain = tmp_path / "plain.xml"
    plain.write_bytes(b"<image/>\n")
    names = [unique("bogus"), unique("plain"), unique("good")]
    loads: List[Tuple[str, Callable[[], Any]]] = [
        (names[0], lambda: recipes_helper.recipe_upload(names[0], make_recipe(tmp_path / "a.tgz"), "bogus_distro")),
        (names[1], lambda: recipes_helper.recipe_upload(names[1], str(plain), "sles15")),
        (
            names[2],
            lambda: recipes_helper.recipe_upload(names[2], make_recipe(tmp_path / "b.tgz", b"<b/>\n"), "sles15"),
        ),
    ]
    loaded, failed = [], []

    for name, load in loads:
        try:
            load()
            loaded.append(name)
        except LOADER_ERRORS as exc:
            failed.append((name, exc.response.status_code if isinstance(exc, requests.RequestException) else None))

    assert loaded == names[1:] and failed == [(names[0], 422)]
    assert {r["name"] for r in ims_api.get("/recipes")} >= set(names[1:])


#: What IMS itself answers a body that fails its schema: a generic detail, the fields in ``errors``.
IMS_422 = {
    "detail": "Input data was understood, but failed validation. Re-run request with valid input values "
    "for the fields indicated in the response.",
    "errors": {"linux_distribution": ["Must be one of: sles12, sles15, centos7."]},
    "status": 422,
    "title": "Unprocessable Entity",
    "type": "about:blank",
}


def test_imss_own_422_names_the_refused_field_in_the_message(
    stack: LocalStack, caller_session: requests.Session, s3_kwargs: Dict[str, Any], tmp_path: Path
):
    """IMS's schema refusal puts the field in ``errors``: the one-line message names it, the answer is kept whole."""
    assert stack.ims is not None
    with FaultProxy(stack.ims.url, name="ims") as proxy:
        body = json.dumps(IMS_422).encode()
        proxy.add(Fault(status=422, method="POST", path="/recipes$", body=body, headers=PROBLEM_JSON))
        helper = ImsHelper(ims_url=proxy.url_for(stack.ims.url), session=caller_session, s3_bucket="ims", **s3_kwargs)

        exc = caught_by_the_loader(lambda: helper.recipe_upload(unique("r"), make_recipe(tmp_path / "r.tgz"), "sles16"))

    assert isinstance(exc, requests.exceptions.HTTPError) and exc.response.json() == IMS_422
    assert str(exc) == (
        f"IMS POST /recipes failed with HTTP 422: {IMS_422['detail']} "
        "(linux_distribution: Must be one of: sles12, sles15, centos7.)"
    )
