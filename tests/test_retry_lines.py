"""Issue 18 point 7: a server that is down is said once per retry wait, in our words, and urllib3/botocore say nothing.

Each case points one part of the real CLI (IMS, the token endpoint, S3) at a
closed port on 127.0.0.1 and reads its stderr at the default log level: one
``ims_python_helper.retries`` line per retry (numbered 1 to 5, each once), no
line from the urllib3 or botocore loggers, and the one-line error at the end.
The waits are shortened (our backoff's cap, not the libraries underneath).
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests

from ims_python_helper import ImsHelper
from ims_python_helper.cli import _configure_logging
from ims_python_helper.clients import s3retry
from ims_python_helper.clients.oauth import BoundedRetry
from ims_python_helper.local.stack import LocalStack
from tests.faults.proxy import Fault, FaultProxy
from tests.support import s3_engines

RETRY_LINE = re.compile(
    r" WARNING ims_python_helper\.retries: (?P<where>.+?): (?P<reason>[a-z ]+); "
    r"retry (?P<number>\d+) of (?P<allowed>\d+) in \d+\.\d s$"
)
THIRD_PARTY = re.compile(r" (urllib3|botocore|boto3|s3transfer)[.:]")


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our backoffs capped at 50 ms, so five retries take a fraction of a second."""
    monkeypatch.setattr(BoundedRetry, "BACKOFF_CAP", 0.05)
    monkeypatch.setattr(s3retry, "BACKOFF_MAX", 0.05)
    monkeypatch.setattr(s3retry, "BACKOFF_JITTER", 0.0)


def retry_lines(stderr: str) -> List[re.Match]:
    return [m for m in map(RETRY_LINE.search, stderr.splitlines()) if m is not None]


DOWN: Dict[str, Dict[str, str]] = {
    "ims": {"IMS_URL": "http://127.0.0.1:{port}/apis/ims"},
    "token-endpoint": {"OAUTH_CLIENT_ENDPOINT": "http://127.0.0.1:{port}/token"},
    "s3": {"S3_ENDPOINT": "http://127.0.0.1:{port}"},
}
SAID_AS = {
    "ims": "IMS at http://127.0.0.1:{port}/apis/ims",
    "token-endpoint": "the token endpoint http://127.0.0.1:{port}/token",
    "s3": "S3 at http://127.0.0.1:{port} (HeadBucket)",
}
FINAL = {
    "ims": "cannot reach IMS at http://127.0.0.1:{port}/apis/ims (GET /images): connection refused",
    "token-endpoint": "cannot reach the token endpoint http://127.0.0.1:{port}/token: connection refused",
    "s3": "cannot reach S3 at http://127.0.0.1:{port}: connection refused",
}


@pytest.mark.parametrize("stack", s3_engines()[:1], indirect=True)
@pytest.mark.parametrize("down", list(DOWN))
def test_a_down_server_is_said_once_per_retry_and_urllib3_and_botocore_say_nothing(
    down: str, closed_port: int, quick_backoff: None, run_cli, tmp_path: Path
):
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(b"squashfs" * 128)
    env: Dict[str, Optional[str]] = {name: value.format(port=closed_port) for name, value in DOWN[down].items()}
    env["IMS_JOB_ID"] = None

    result = run_cli("image", "upload_artifacts", "down", "-r", str(rootfs), "--skip-existing", env=env)

    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if THIRD_PARTY.search(line) or "Retrying (" in line] == []
    retries = retry_lines(result.stderr)
    assert [int(m["number"]) for m in retries] == [1, 2, 3, 4, 5], result.stderr
    assert {(m["where"], m["reason"], m["allowed"]) for m in retries} == {
        (SAID_AS[down].format(port=closed_port), "connection refused", "5")
    }
    assert lines[-1] == f"ims_python_helper: error: {FINAL[down].format(port=closed_port)}"
    assert len(lines) == len(retries) + 1, result.stderr


def test_a_callers_own_session_gets_our_retry_lines_and_not_urllib3s(
    stack: LocalStack, closed_port: int, quick_backoff: None, caplog
):
    """The library in a caller's own logging: urllib3's retry warning is replaced by ours, not doubled."""
    assert stack.s3 is not None
    session = requests.Session()
    session.headers["Authorization"] = "Bearer not-needed-here"
    ims_url = f"http://127.0.0.1:{closed_port}/apis/ims"
    helper = ImsHelper(ims_url=ims_url, session=session, s3_endpoint=stack.s3.endpoint, s3_ssl_verify="false")

    with caplog.at_level(logging.DEBUG), pytest.raises(requests.exceptions.ConnectionError):
        helper._ims_images_get()

    assert [r for r in caplog.records if r.name.startswith("urllib3") and r.levelno >= logging.WARNING] == []
    ours = [r.getMessage() for r in caplog.records if r.name == "ims_python_helper.retries"]
    assert [m.split("; ")[1].split(" in ")[0] for m in ours] == [f"retry {n} of 5" for n in range(1, 6)]
    assert all(m.startswith(f"IMS at {ims_url}: connection refused; ") for m in ours)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_the_libraries_lines_reach_the_user_only_when_debug_is_asked_for(level: str):
    """urllib3's "Connection pool is full" and the like: below DEBUG only our own lines are written."""
    stream, before = io.StringIO(), logging.getLogger().level
    handler = _configure_logging(level, stream)
    try:
        logging.getLogger("urllib3.connectionpool").warning("Connection pool is full, discarding connection: s3")
        logging.getLogger("botocore.endpoint").warning("botocore says something")
        logging.getLogger("ims_python_helper.retries").warning("ours")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(before)

    written = stream.getvalue()
    assert "ours" in written
    assert ("Connection pool is full" in written, "botocore says" in written) == ((level == "DEBUG"),) * 2


@pytest.mark.parametrize("stack", s3_engines(), indirect=True)
def test_parts_that_fail_together_are_said_once_per_retry(
    quick_backoff: None, s3_proxy: FaultProxy, run_cli, tmp_path: Path
):
    """Four parts in flight, every part upload cut: each retry of UploadPart is one line, not one per part."""
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(os.urandom(4 * 5 * 1024 * 1024))
    cut = s3_proxy.add(Fault(action="drop", method="PUT", path="partNumber"))
    env: Dict[str, Optional[str]] = {"S3_ENDPOINT": s3_proxy.url, "IMS_JOB_ID": None}

    result = run_cli(
        "--part-size", "5", "--concurrency", "4", "image", "upload_artifacts", "cut", "-r", str(rootfs), env=env
    )

    assert result.code == 1
    said = [int(m["number"]) for m in retry_lines(result.stderr) if m["where"].endswith("(UploadPart)")]
    assert said == [1, 2, 3, 4, 5], result.stderr
    assert cut.fired > 2 * len(said), "several parts were cut and retried"
    assert [line for line in result.stderr.splitlines() if THIRD_PARTY.search(line)] == []
