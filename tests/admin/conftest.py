"""Two stacks for the admin tasks: the session's stack is the source, a second one (its own IMS and token
endpoint, its own bucket on the same S3 engine) the destination an exported image is imported into."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from ims_python_helper.cli import Environment, main
from ims_python_helper.local.stack import LocalStack
from tests.support import Artifacts, CliResult, CliRunner, ImsApi, s3_client_for, with_overrides

#: The destination stack's bucket (the source publishes into boot-images).
DEST_BUCKET = "boot-images-dest"


@pytest.fixture(scope="module")
def dest_stack(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second stack on the session's S3 engine, publishing into ``DEST_BUCKET``."""
    assert stack.s3 is not None
    client = s3_client_for(stack.s3)
    if DEST_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=DEST_BUCKET)
    with LocalStack(data_dir=tmp_path_factory.mktemp("dest-stack"), s3_backend=stack.s3) as local:
        yield local


@pytest.fixture
def run_dest(stack_env: Dict[str, str], dest_stack: LocalStack) -> CliRunner:
    """Run the real CLI in-process against the destination stack."""
    env = {**stack_env, **dest_stack.env(), "S3_BUCKET": DEST_BUCKET}

    def run(*argv: str, env_over: Optional[Dict[str, Optional[str]]] = None) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), Environment(stdout=out, stderr=err, environ=with_overrides(env, env_over)))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def dest_ims(dest_stack: LocalStack) -> ImsApi:
    """Independent access to the destination IMS."""
    return ImsApi(dest_stack)


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    """A plain boto3 client on the (shared) S3 engine."""
    assert stack.s3 is not None
    return s3_client_for(stack.s3)


def publish(run_cli: CliRunner, artifacts: Artifacts, name: str) -> Dict[str, Any]:
    """Publish all of ``artifacts`` into the source stack; returns the image record."""
    result = run_cli("image", "upload_artifacts", name, *artifacts.flags())
    assert result.code == 0, result.stderr
    record: Dict[str, Any] = result.json["ims_image_record"]
    return record


def manifest_md5s(s3: Any, record: Dict[str, Any]) -> Dict[str, str]:
    """Artifact type -> md5, as the record's manifest in S3 says (read independently of the client)."""
    bucket, _, key = record["link"]["path"][len("s3://") :].partition("/")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return {entry["type"]: entry["md5"] for entry in manifest["artifacts"]}


def object_md5s(s3: Any, record: Dict[str, Any]) -> Dict[str, str]:
    """Artifact type -> md5 of the object's bytes as they are in S3 now."""
    import hashlib

    bucket, _, key = record["link"]["path"][len("s3://") :].partition("/")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    found = {}
    for entry in manifest["artifacts"]:
        o_bucket, _, o_key = entry["link"]["path"][len("s3://") :].partition("/")
        found[entry["type"]] = hashlib.md5(s3.get_object(Bucket=o_bucket, Key=o_key)["Body"].read()).hexdigest()
    return found


def bundle_files(directory: Path) -> Dict[str, str]:
    """Artifact type -> md5 of the bundle's file on disk."""
    import hashlib

    record = json.loads((directory / "bundle.json").read_text())
    return {a["type"]: hashlib.md5((directory / a["file"]).read_bytes()).hexdigest() for a in record["artifacts"]}
