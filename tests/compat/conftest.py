"""Fixtures for the compatibility suite: the library called the way existing services call it.

Callers build their own session (an OAuth session from
``create_oauth_session``, or a plain ``requests.Session`` carrying a bearer
header), pass it as ``session=`` to ``ImsHelper`` with the S3 settings, and
hand over artifact paths as one-element lists (the CLI's ``action='append'``
shape).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from ims_python_helper import ImsHelper
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.session import create_oauth_session
from tests.support import ImageFiles

SESSION_KINDS = ("oauth-session", "requests-session-with-bearer")


@pytest.fixture(params=SESSION_KINDS)
def caller_session(request: pytest.FixtureRequest, stack: LocalStack) -> requests.Session:
    """The session a service builds before it makes an ImsHelper."""
    assert stack.tokens is not None
    if request.param == "oauth-session":
        # Positional, as services call it: client id, secret, CA bundle (None: system store), token URL, timeout.
        return create_oauth_session(stack.client_id, stack.client_secret, None, stack.tokens.url, 60)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.issue_token(3600)}"
    return session


@pytest.fixture
def s3_kwargs(stack: LocalStack) -> Dict[str, Any]:
    """The S3 keyword arguments services pass (``s3_ssl_verify`` as the string they read from the environment)."""
    assert stack.s3 is not None
    return {
        "s3_endpoint": stack.s3.endpoint,
        "s3_access_key": stack.s3.access_key,
        "s3_secret_key": stack.s3.secret_key,
        "s3_ssl_verify": "False",
    }


@pytest.fixture
def helper(stack: LocalStack, caller_session: requests.Session, s3_kwargs: Dict[str, Any]) -> ImsHelper:
    """An ImsHelper made by keyword for images, with a keyword this client does not know."""
    assert stack.ims is not None
    return ImsHelper(
        ims_url=stack.ims.url,
        session=caller_session,
        s3_bucket="boot-images",
        some_future_option="ignored",
        **s3_kwargs,
    )


@pytest.fixture
def image_files(tmp_path: Path) -> ImageFiles:
    """Fresh random artifacts for one test."""
    rng = random.Random(str(tmp_path))
    sizes = {"rootfs": 96 * 1024, "kernel": 32 * 1024, "initrd": 64 * 1024, "debug": 16 * 1024}
    lists: Dict[str, List[str]] = {}
    for kind, size in sizes.items():
        path = tmp_path / kind
        path.write_bytes(rng.randbytes(size))
        lists[kind] = [str(path)]
    params = tmp_path / "boot_parameters"
    params.write_text("console=ttyS0,115200 rd.shell\n")
    lists["boot_parameters"] = [str(params)]
    return ImageFiles(**lists)
