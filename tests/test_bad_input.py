"""Bad input: a one-line error, the documented exit status, and nothing created in IMS or S3."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
from tests.conftest import Artifacts


@dataclass(frozen=True)
class Case:
    """One bad invocation of ``image upload_artifacts`` and what it must produce."""

    id: str
    argv: Callable[[Artifacts, Path], List[str]]
    code: int
    message: str
    env: Dict[str, Optional[str]] = field(default_factory=dict)


def upload(*extra: str) -> Callable[[Artifacts, Path], List[str]]:
    return lambda a, tmp: ["image", "upload_artifacts", "bad-input", *extra]


UNKNOWN_JOB = str(uuid.UUID(int=7))

CASES = [
    Case(
        "missing-rootfs-file",
        lambda a, tmp: ["image", "upload_artifacts", "bad", "-r", str(tmp / "nope")],
        1,
        "does not exist",
    ),
    Case(
        "directory-as-rootfs", lambda a, tmp: ["image", "upload_artifacts", "bad", "-r", str(tmp)], 1, "is a directory"
    ),
    Case(
        "fifo-as-kernel",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs"), "-k", _fifo(tmp)],
        1,
        "not a regular file",
    ),
    Case("no-rootfs", lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("kernel")], 1, "no rootfs"),
    Case(
        "rootfs-twice",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs", "rootfs")],
        2,
        "given 2 times",
    ),
    Case(
        "ims-url-twice",
        lambda a, tmp: [
            "--ims-url",
            "http://127.0.0.1:1",
            "--ims-url",
            "http://127.0.0.1:2",
            "image",
            "upload_artifacts",
            "bad",
            *a.flags("rootfs"),
        ],
        2,
        "more than once",
    ),
    Case(
        "job-id-not-uuid",
        lambda a, tmp: ["image", "upload_artifacts", "bad", "not-a-uuid", *a.flags("rootfs")],
        2,
        "not a UUID",
    ),
    Case(
        "ims-job-id-env-not-uuid",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs")],
        2,
        "not a UUID",
        env={"IMS_JOB_ID": "12345"},
    ),
    Case(
        "job-unknown-to-ims",
        lambda a, tmp: ["image", "upload_artifacts", "bad", UNKNOWN_JOB, *a.flags("rootfs")],
        1,
        f"IMS has no job {UNKNOWN_JOB}",
    ),
    Case(
        "wrong-oauth-secret",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "refused the client credentials (invalid_client)",
        env={"OAUTH_CLIENT_SECRET": "wrong-secret-value"},
    ),
    Case(
        "no-oauth-secret",
        lambda a, tmp: ["--oauth-config-dir", str(tmp), "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "OAuth configuration incomplete: no client secret",
        env={"OAUTH_CLIENT_SECRET": None},
    ),
    Case(
        "unreachable-ims",
        lambda a, tmp: ["--deadline", "3", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "cannot reach IMS at http://127.0.0.1:1",
        env={"IMS_URL": "http://127.0.0.1:1", "IMS_JOB_ID": None},
    ),
    Case(
        "unreachable-token-url",
        lambda a, tmp: ["--deadline", "3", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "cannot reach the token endpoint",
        env={"OAUTH_CLIENT_ENDPOINT": "http://127.0.0.1:1/token"},
    ),
    Case(
        "missing-bucket",
        lambda a, tmp: ["--s3-bucket", "no-such-bucket", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "bucket 'no-such-bucket' does not exist",
    ),
    Case(
        "plain-http-to-remote-ims",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "uses plain http",
        env={"IMS_URL": "http://ims.example.invalid/apis/ims"},
    ),
    Case(
        "bad-timeout",
        lambda a, tmp: ["-t", "soon", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        2,
        "expected a number of seconds",
    ),
    Case(
        "bad-arch",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs"), "--arch", "sparc"],
        2,
        "invalid choice",
    ),
    Case("empty-name", lambda a, tmp: ["image", "upload_artifacts", "", *a.flags("rootfs")], 1, "image name is empty"),
    Case(
        "control-characters-in-name",
        lambda a, tmp: ["image", "upload_artifacts", "bad\x1b[2J", *a.flags("rootfs")],
        1,
        "control characters",
    ),
]


def _fifo(tmp: Path) -> str:
    path = tmp / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly_and_creates_nothing(case: Case, run_cli, artifacts, snapshot, tmp_path):
    before = snapshot()

    result = run_cli(*case.argv(artifacts, tmp_path), env=case.env)

    assert result.code == case.code, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, result.stderr
    assert case.message in error_lines[0]
    if case.code == 1:
        assert result.json == {"result": "failure", "error": error_lines[0].split("error: ", 1)[1]}
    assert snapshot() == before
