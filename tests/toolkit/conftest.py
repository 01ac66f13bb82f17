"""Fixtures for the job-pod toolkit: the pods' environment, presigned URLs in the stack's S3, a repository server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
import requests

from ims_python_helper.local.presign import put_and_presign
from ims_python_helper.local.repo_server import RepoServer
from ims_python_helper.local.stack import LocalStack
from tests.support import ROOT, ImsApi


@dataclass
class PodResult:
    """What one pod script run returned and printed."""

    code: int
    stdout: str
    stderr: str


class Pod:
    """Runs the toolkit's pod scripts as child processes with a job pod's environment."""

    def __init__(self, stack: LocalStack, job_id: str, oauth_dir: Path) -> None:
        assert stack.ims is not None
        self.stack = stack
        self.job_id = job_id
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
        self.env.update(
            {
                "OAUTH_CONFIG_DIR": str(oauth_dir),
                "IMS_URL": stack.ims.url,
                # The pods always mount a CA; the plain-http stack needs none, so any real bundle does.
                "CA_CERT": str(stack.ca_path) if stack.ca_path else requests.certs.where(),
                "IMS_JOB_ID": job_id,
                "LOG_LEVEL": "INFO",
                "IMS_PROGRESS": "log",
                "REPO_POLL_INTERVAL": "0.1",
            }
        )

    def run(self, module: str, *argv: str, env: Optional[Dict[str, Optional[str]]] = None) -> PodResult:
        environ = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        done = subprocess.run(
            [sys.executable, "-m", module, *argv], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        return PodResult(done.returncode, done.stdout, done.stderr)


def pod_for(stack: LocalStack, ims_api: ImsApi, tmp_path: Path) -> Pod:
    """A fresh IMS job in ``stack`` and the environment of a pod working on it (credentials as mounted files)."""
    oauth = tmp_path / "admin-client-auth"
    oauth.mkdir()
    tokens = stack.tokens
    assert tokens is not None
    (oauth / "client-id").write_text(stack.client_id + "\n")
    (oauth / "client-secret").write_text(stack.client_secret + "\n")
    (oauth / "endpoint").write_text(tokens.url + "\n")
    return Pod(stack, ims_api.new_job(), oauth)


@pytest.fixture
def pod(stack: LocalStack, ims_api: ImsApi, tmp_path: Path) -> Pod:
    """A fresh IMS job and the environment of a pod working on it, on the plain-http stack."""
    return pod_for(stack, ims_api, tmp_path)


@pytest.fixture
def tls_ims_api(tls_stack: LocalStack) -> ImsApi:
    """Independent access to the HTTPS stack's IMS, trusting the stack's CA."""
    return ImsApi(tls_stack)


@pytest.fixture
def tls_pod(tls_stack: LocalStack, tls_ims_api: ImsApi, tmp_path: Path) -> Pod:
    """A pod on the HTTPS stack: IMS, the token endpoint and S3 on https, the stack's CA in ``CA_CERT``."""
    return pod_for(tls_stack, tls_ims_api, tmp_path)


@pytest.fixture
def presign(stack: LocalStack):
    """Put a file in the stack's S3 and return a presigned GET URL for it."""
    assert stack.s3 is not None

    def put(path: Path) -> str:
        return put_and_presign(stack.s3, path, f"toolkit-tests/{uuid.uuid4()}/{path.name}")

    return put


@pytest.fixture
def repos() -> Iterator[RepoServer]:
    """A package-repository server on loopback."""
    with RepoServer() as server:
        yield server
