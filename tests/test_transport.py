"""Transport: failures are told apart by exception type, fetching a token changes nothing process-wide, and the
S3 client's models load as botocore's own loader loads them."""

from __future__ import annotations

import json
import os
import socket
from typing import Dict, List, Optional

import botocore.session
import pytest
import requests
import urllib3.exceptions
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError

from ims_python_helper.clients.oauth import ClientCredentialsSession
from ims_python_helper.clients.s3model import botocore_session
from ims_python_helper.clients.transport import describe_request_error


def _refused() -> NewConnectionError:
    error = NewConnectionError(None, "Failed to establish a new connection")
    error.__cause__ = ConnectionRefusedError(111, "refused")
    return error


def _name_not_resolved() -> Exception:
    """A host name the resolver does not know, as the installed urllib3 reports it."""
    lookup = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    kind = getattr(urllib3.exceptions, "NameResolutionError", None)
    if kind is not None:  # urllib3 2
        return kind("ims.example", None, lookup)
    # urllib3 1.26 (Python 3.9): a NewConnectionError raised while handling the resolver's error.
    error = NewConnectionError(None, f"Failed to establish a new connection: {lookup}")
    error.__context__ = lookup
    return error


def _after_retries(reason: Exception) -> requests.exceptions.ConnectionError:
    """What requests raises when urllib3 gave up: the reason sits two wrappers down."""
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/images", reason))


@pytest.mark.parametrize(
    "error, reason",
    [
        (_after_retries(_refused()), "connection refused"),
        (_after_retries(ReadTimeoutError(None, "/images", "Read timed out.")), "timed out waiting for an answer"),
        (_after_retries(_name_not_resolved()), "host name does not resolve"),
        # The words of a message decide nothing: only what the error is.
        (requests.exceptions.ConnectionError("Connection refused; Read timed out"), "connection failed"),
        (requests.exceptions.ConnectTimeout("slow"), "connection timed out"),
    ],
    ids=["refused", "read-timeout", "dns", "words-only", "connect-timeout"],
)
def test_request_errors_are_told_apart_by_type(error: BaseException, reason: str):
    assert describe_request_error(error) == reason


def test_a_loopback_token_fetch_changes_no_process_environment(
    stack_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT", raising=False)
    seen: List[Optional[str]] = []
    session = ClientCredentialsSession(
        stack_env["OAUTH_CLIENT_ID"], stack_env["OAUTH_CLIENT_SECRET"], stack_env["OAUTH_CLIENT_ENDPOINT"]
    )
    # Runs inside every exchange: the token grant and the signed IMS call.
    session.hooks["response"].append(lambda *_a, **_k: seen.append(os.environ.get("OAUTHLIB_INSECURE_TRANSPORT")))
    try:
        response = session.get(f"{stack_env['IMS_URL']}/images")
    finally:
        session.close()

    assert response.status_code == 200
    assert session.grants == 1
    assert len(seen) == 2 and seen == [None, None], f"OAUTHLIB_INSECURE_TRANSPORT was set during a request: {seen}"


def _plain(data: object) -> bool:
    """Whether every mapping in ``data`` is a plain dict (botocore's own loader makes OrderedDicts)."""
    if isinstance(data, dict):
        return type(data) is dict and all(_plain(value) for value in data.values())
    if isinstance(data, list):
        return all(_plain(item) for item in data)
    return True


def test_the_s3_client_models_are_botocores_own_data_in_plain_dicts():
    """clients.s3model: the same files give the same data, without listing every service or OrderedDicts."""
    ours = botocore_session().get_component("data_loader")
    theirs = botocore.session.Session().get_component("data_loader")

    for kind in ("service-2", "endpoint-rule-set-1"):
        model = ours.load_service_model("s3", kind)
        assert model == theirs.load_service_model("s3", kind)
        assert _plain(model)
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        assert ours.load_data(name) == theirs.load_data(name), name
    assert ours.list_available_services("service-2") == ["s3"]
    assert len(theirs.list_available_services("service-2")) > 100


def test_the_s3_client_models_come_from_aws_data_path_first(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A model under ``AWS_DATA_PATH`` is the one loaded, as with botocore's own loader."""
    model = botocore.session.Session().get_service_data("s3")
    model["documentation"] = "the S3 model under AWS_DATA_PATH"
    (tmp_path / "s3" / "2006-03-01").mkdir(parents=True)
    (tmp_path / "s3" / "2006-03-01" / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))

    assert botocore_session().get_service_data("s3")["documentation"] == "the S3 model under AWS_DATA_PATH"
