"""The pods' fetch on HTTPS, as the job pods run it: IMS, the token endpoint and the presigned S3 URL are
all https, and the platform CA in ``CA_CERT`` is what verifies each of them."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import requests

from ims_python_helper.local.presign import DEFAULT_BUCKET, presigned_get_url, put_and_presign, s3_client
from ims_python_helper.local.stack import LocalStack
from tests.support import ImsApi, make_squashfs, volume_with_stale_signal_files
from tests.toolkit.conftest import Pod

FETCH = "ims_python_helper.fetch"


def presign_over_https(stack: LocalStack, path: Path) -> str:
    """Put ``path`` in the stack's S3 (straight to the engine) and presign a GET through its https relay."""
    assert stack.s3 is not None and stack.ca_path is not None
    key = f"toolkit-tls-tests/{uuid.uuid4()}/{path.name}"
    put_and_presign(stack.s3, path, key)
    relay = s3_client(stack.s3, stack.s3_endpoint, str(stack.ca_path))
    url = presigned_get_url(relay, DEFAULT_BUCKET, key, 3600)
    assert url.startswith("https://")
    return url


def test_image_fetch_on_https_verifies_ims_tokens_and_s3_against_ca_cert(
    tls_stack: LocalStack, tls_pod: Pod, tls_ims_api: ImsApi, tmp_path: Path
):
    assert tls_pod.env["IMS_URL"].startswith("https://")
    image = make_squashfs(tmp_path)
    work = volume_with_stale_signal_files(tmp_path / "mnt-image")
    md5 = hashlib.md5(image.read_bytes()).hexdigest()

    result = tls_pod.run(
        FETCH, "--image", "t", str(work), presign_over_https(tls_stack, image), env={"DOWNLOAD_MD5SUM": md5}
    )

    assert result.code == 0, result.stderr
    assert tls_ims_api.get(f"/jobs/{tls_pod.job_id}")["status"] == "fetching_image"
    assert (work / "image-root" / "etc" / "motd").read_text() == "built by the test\n"


def test_image_fetch_with_s3_ssl_verify_f_downloads_without_verification_as_a_publish_does(
    tls_stack: LocalStack, tls_pod: Pod, tls_ims_api: ImsApi, tmp_path: Path
):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    work.mkdir()

    # "f" is an off word for a publish; the pod's fetch once took it for a CA path named by CA_CERT.
    result = tls_pod.run(
        FETCH, "--image", "f", str(work), presign_over_https(tls_stack, image), env={"S3_SSL_VERIFY": "f"}
    )

    assert result.code == 0, result.stderr
    assert "TLS verification of downloads is switched off" in result.stderr
    assert (work / "image.sqsh").read_bytes() == image.read_bytes()
    assert tls_ims_api.get(f"/jobs/{tls_pod.job_id}")["status"] == "fetching_image"


def test_image_fetch_on_https_without_the_platform_ca_fails_naming_ca_cert_and_writes_nothing(
    tls_stack: LocalStack, tls_pod: Pod, tmp_path: Path
):
    image = make_squashfs(tmp_path)
    work = tmp_path / "mnt-image"
    work.mkdir()

    # The system store does not know the stack's CA: the first https call (the token) must be refused.
    result = tls_pod.run(
        FETCH, "--image", "t", str(work), presign_over_https(tls_stack, image), env={"CA_CERT": requests.certs.where()}
    )

    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    # The reason, naming the CA bundle and the setting to fix; then that the job could not be set to
    # error either (its IMS is on https too).
    assert "TLS: certificate verify failed for 127.0.0.1:" in errors[0] and "(CA_CERT)" in errors[0], result.stderr
    assert [line for line in errors[1:] if "could not set job" not in line] == [], result.stderr
    assert list(work.iterdir()) == []
