"""Shared fixtures: the local stack (IMS, token endpoint, real S3 process) and ways to drive the real CLI.

The S3 engine is a parameter: every end-to-end test runs on moto and, where
its daemons are installed, on Ceph RGW (reported as skipped elsewhere).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import boto3
import pytest
import requests
from botocore.config import Config

from ims_python_helper.cli import Environment, main
from ims_python_helper.local.s3backend import S3Backend
from ims_python_helper.local.stack import LocalStack
from tests.s3_proxy import CountingS3Proxy

ROOT = Path(__file__).resolve().parent.parent


def _ceph_available() -> bool:
    try:
        from ims_python_helper.local.ceph import ceph_available
    except ImportError:
        return False
    return bool(ceph_available())


def s3_engines() -> List[Any]:
    """moto always; Ceph RGW where its daemons are installed (else a visible skip)."""
    wanted = os.environ.get("IMS_TEST_S3", "moto,ceph").split(",")
    params: List[Any] = []
    if "moto" in wanted:
        params.append(pytest.param("moto", id="moto"))
    if "ceph" in wanted:
        params.append(
            pytest.param(
                "ceph",
                id="ceph",
                marks=pytest.mark.skipif(
                    not _ceph_available(),
                    reason="Ceph RGW not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)",
                ),
            )
        )
    return params


@pytest.fixture(scope="session", params=s3_engines())
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A running local stack for the whole session, one per S3 engine."""
    local = LocalStack(data_dir=tmp_path_factory.mktemp(f"stack-{request.param}"), s3=request.param)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(autouse=True)
def _s3_engine_can_serve(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test of a stack whose S3 engine can no longer serve (a full Ceph cluster), naming the reason."""
    local = request.getfixturevalue("stack") if "stack" in request.fixturenames else None

    def check() -> None:
        problem = getattr(local.s3, "problem", None) if local is not None else None
        if problem:
            pytest.fail(problem, pytrace=False)

    check()
    yield
    check()  # after the test too: an error of its teardown, naming the cause of whatever hung or failed


@pytest.fixture
def stack_env(stack: LocalStack) -> Dict[str, str]:
    """Environment variables pointing the client at the stack (no flags needed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    env.update(stack.env())
    env["IMS_PROGRESS"] = "log"
    return env


@dataclass
class CliResult:
    """What one CLI run printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        import json

        return json.loads(self.stdout)


CliRunner = Callable[..., CliResult]


@pytest.fixture
def run_cli(stack_env: Dict[str, str]) -> CliRunner:
    """Run the real CLI in-process with the stack's environment (plus overrides)."""

    def run(*argv: str, env: Optional[Dict[str, Optional[str]]] = None) -> CliResult:
        environ = dict(stack_env)
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), Environment(stdout=out, stderr=err, environ=environ))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def run_cli_process(stack_env: Dict[str, str]) -> CliRunner:
    """Run the real CLI as a child process (``python -m ims_python_helper``)."""

    def run(*argv: str, env: Optional[Dict[str, Optional[str]]] = None, timeout: float = 120) -> CliResult:
        environ = dict(stack_env)
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        done = subprocess.run(
            [sys.executable, "-m", "ims_python_helper", *argv],
            env=environ,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def s3_proxy(stack: LocalStack) -> Iterator[CountingS3Proxy]:
    """A counting proxy in front of the stack's S3 (point S3_ENDPOINT at ``.endpoint``)."""
    assert stack.s3 is not None
    with CountingS3Proxy(stack.s3.endpoint) as proxy:
        yield proxy


def plain_s3_client(backend: S3Backend) -> Any:
    """A boto3 client on a local S3 backend with nothing of the client's code in between."""
    return boto3.client(
        "s3",
        endpoint_url=backend.endpoint,
        aws_access_key_id=backend.access_key,
        aws_secret_access_key=backend.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    """A plain boto3 client on the stack's S3, for checking what the client stored (independent of it)."""
    assert stack.s3 is not None
    return plain_s3_client(stack.s3)


class ImsApi:
    """Plain HTTP calls to the local IMS, for checking records independently of the client."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.ims is not None
        self.base = stack.ims.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {stack.issue_token(3600)}"

    def get(self, path: str) -> Any:
        response = self.session.get(self.base + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Dict[str, Any]) -> Any:
        response = self.session.post(self.base + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def images_named(self, name: str) -> List[Dict[str, Any]]:
        return [image for image in self.get("/images") if image.get("name") == name]

    def new_job(self) -> str:
        import uuid

        job = self.post(
            "/jobs",
            {
                "job_type": "create",
                "artifact_id": str(uuid.uuid4()),
                "public_key_id": str(uuid.uuid4()),
                "image_root_archive_name": "test",
            },
        )
        return str(job["id"])


@pytest.fixture
def ims_api(stack: LocalStack) -> ImsApi:
    """Independent access to the local IMS."""
    return ImsApi(stack)


@dataclass(frozen=True)
class Snapshot:
    """Everything a run could leave behind."""

    images: Set[str]
    recipes: Set[str]
    objects: Set[str]
    uploads: Set[str]


@pytest.fixture
def snapshot(ims_api: ImsApi, s3: Any) -> Callable[[], Snapshot]:
    """Take a picture of IMS records, S3 objects and unfinished multipart uploads."""

    def take() -> Snapshot:
        objects: Set[str] = set()
        uploads: Set[str] = set()
        for bucket in ("boot-images", "ims"):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                objects.update(f"{bucket}/{item['Key']}" for item in page.get("Contents", []))
            listing = s3.list_multipart_uploads(Bucket=bucket)
            uploads.update(f"{bucket}/{u['Key']}" for u in listing.get("Uploads", []))
        return Snapshot(
            images={i["id"] for i in ims_api.get("/images")},
            recipes={r["id"] for r in ims_api.get("/recipes")},
            objects=objects,
            uploads=uploads,
        )

    return take


@dataclass(frozen=True)
class Artifacts:
    """Sample artifact files and their md5s."""

    paths: Dict[str, Path]

    def md5(self, name: str) -> str:
        return hashlib.md5(self.paths[name].read_bytes()).hexdigest()

    def flags(self, *names: str) -> List[str]:
        flag = {"rootfs": "-r", "kernel": "-k", "initrd": "-i", "debug": "-d", "boot_parameters": "-p"}
        result: List[str] = []
        for name in names or tuple(self.paths):
            result += [flag[name], str(self.paths[name])]
        return result


def make_artifacts(directory: Path, rootfs_size: int = 24 * 1024 * 1024, seed: int = 0) -> Artifacts:
    """Random artifact files (the rootfs large enough to go up in several parts)."""
    import random

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"rootfs": rootfs_size, "kernel": 1 << 20, "initrd": 3 << 20, "debug": 1 << 19}
    paths: Dict[str, Path] = {}
    for name, size in sizes.items():
        path = directory / name
        path.write_bytes(rng.randbytes(size))
        paths[name] = path
    params = directory / "boot_parameters"
    params.write_text(f"console=ttyS0,115200 seed={seed}\n")
    paths["boot_parameters"] = params
    return Artifacts(paths)


@pytest.fixture
def artifacts(tmp_path: Path) -> Artifacts:
    """Fresh sample artifacts for one test."""
    return make_artifacts(tmp_path / "artifacts", seed=zlib.crc32(tmp_path.name.encode()))
