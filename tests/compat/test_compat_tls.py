"""Issue 12 point 4: S3 over TLS in a job pod, with the pods' own variables.

The job templates give a pod ``S3_SSL_VALIDATE`` (never ``S3_SSL_VERIFY``) and
the platform CA in ``CA_CERT``; the RGW certificate is signed by that CA. The
artifact loader passes ``s3_ssl_verify`` as the string it read from the
environment. The rule: "true" (or nothing) verifies S3 against CA_CERT when it
is set, else against the system store; an off word turns verification off; a
path is a CA bundle.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Dict, Optional

import pytest

from ims_python_helper import ImsHelper
from ims_python_helper.clients.storage import S3Storage
from ims_python_helper.config import resolve_settings
from ims_python_helper.errors import StorageError
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.session import create_oauth_session
from tests.support import Artifacts, CliRunner


@pytest.fixture
def pod_env(tls_stack: LocalStack) -> Dict[str, Optional[str]]:
    """A job pod's environment exactly: S3_SSL_VALIDATE and CA_CERT, no S3_SSL_VERIFY."""
    env: Dict[str, Optional[str]] = dict(tls_stack.env())
    assert str(env["S3_ENDPOINT"]).startswith("https://") and env["CA_CERT"] == str(tls_stack.ca_path)
    env["S3_SSL_VERIFY"] = None
    env["S3_SSL_VALIDATE"] = "true"
    return env


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_pod_with_s3_ssl_validate_true_verifies_s3_against_ca_cert(
    run_cli: CliRunner, pod_env, small_artifacts: Artifacts
):
    result = run_cli("image", "upload_artifacts", f"pod-{uuid.uuid4().hex[:8]}", *small_artifacts.flags("rootfs"),
                     env=pod_env)  # fmt: skip

    assert result.code == 0, result.stderr
    assert result.json["ims_image_record"]["link"]["path"].startswith("s3://boot-images/")
    assert "verification is off" not in result.stderr


def test_s3_ssl_validate_false_turns_verification_off_with_a_warning(
    run_cli: CliRunner, pod_env, small_artifacts: Artifacts, wrong_ca: str
):
    env = {**pod_env, "S3_SSL_VALIDATE": "false"}

    result = run_cli("image", "upload_artifacts", f"pod-off-{uuid.uuid4().hex[:8]}", *small_artifacts.flags("rootfs"),
                     env=env)  # fmt: skip

    assert result.code == 0, result.stderr
    assert "S3 TLS certificate verification is off" in result.stderr


def test_s3_ssl_verify_wins_over_s3_ssl_validate(run_cli: CliRunner, pod_env, small_artifacts: Artifacts, wrong_ca):
    env = {**pod_env, "S3_SSL_VERIFY": wrong_ca}

    result = run_cli("image", "upload_artifacts", "pod-wrong-ca", *small_artifacts.flags("rootfs"), env=env)

    assert result.code == 1
    assert "TLS: certificate verify failed for S3 at" in error_line(result.stderr)
    assert wrong_ca in error_line(result.stderr)


def test_without_ca_cert_true_means_the_system_store(pod_env):
    environ = {k: v for k, v in pod_env.items() if v is not None and k != "CA_CERT"}

    settings = resolve_settings({}, environ)

    assert settings.s3_ssl_verify is True and settings.cert is None
    with pytest.raises(
        StorageError,
        match=r"TLS: certificate verify failed for S3 at .* using certifi's CA bundle .*\.pem \(botocore's default\)",
    ):
        S3Storage(settings.helper_settings().s3).check_bucket()


@pytest.mark.parametrize(("word", "verified"), [("true", True), ("True", True), ("false", False), ("FALSE", False)])
def test_a_library_caller_s_string_means_what_it_says(
    word: str, verified: bool, tls_stack: LocalStack, tmp_path: Path, monkeypatch
):
    assert tls_stack.tokens is not None and tls_stack.ims is not None and tls_stack.s3 is not None
    monkeypatch.delenv("CA_CERT", raising=False)
    ca = str(tls_stack.ca_path)
    session = create_oauth_session(tls_stack.client_id, tls_stack.client_secret, ca, tls_stack.tokens.url, 60)
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(b"rootfs" * 1000)

    helper = ImsHelper(tls_stack.ims.url, session, tls_stack.s3.access_key, tls_stack.s3.secret_key,
                       tls_stack.s3.endpoint, "boot-images", word)  # fmt: skip
    result = helper.image_upload_artifacts(f"library-{word}-{uuid.uuid4().hex[:6]}", rootfs=[str(rootfs)])

    assert helper.s3_settings.verify == (ca if verified else False)
    assert result["result"] == "success"


def test_a_library_caller_without_a_session_ca_uses_ca_cert_from_the_environment(tls_stack: LocalStack, monkeypatch):
    assert tls_stack.tokens is not None and tls_stack.ims is not None and tls_stack.s3 is not None
    monkeypatch.setenv("CA_CERT", str(tls_stack.ca_path))

    helper = ImsHelper(tls_stack.ims.url, None, tls_stack.s3.access_key, tls_stack.s3.secret_key,
                       tls_stack.s3.endpoint, "boot-images", "true")  # fmt: skip
    helper.storage.check_bucket()

    assert helper.s3_settings.verify == str(tls_stack.ca_path)
