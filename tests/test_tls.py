"""TLS for real: the local stack serves HTTPS with a test CA, and the client verifies it.

IMS and the token endpoint verify against --cert/CA_CERT, else the system
store; S3 against --s3-ssl-verify (off words, a CA path, or true). The right CA
is accepted, a wrong one is refused with one line naming the host and the CA,
and nothing is created on the way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any, Dict, Union

import pytest
import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from ims_python_helper.clients.storage import S3Settings, S3Storage
from ims_python_helper.config import parse_ssl_verify, resolve_settings
from ims_python_helper.errors import StorageError
from ims_python_helper.local.stack import CLIENT_ID, LocalStack
from ims_python_helper.local.tls import LocalCA
from ims_python_helper.local.token_server import TokenServer
from tests.support import ROOT, Artifacts, CliResult, CliRunner, make_artifacts, run_cli_measured

MIB = 1024 * 1024


class TlsSnapshot:
    """Records in the HTTPS stack's IMS and objects in S3, to show a refused run created nothing."""

    def __init__(self, stack: LocalStack, s3: Any) -> None:
        assert stack.ims is not None
        self.stack, self.s3 = stack, s3
        self.session = requests.Session()
        self.verify = str(stack.ca_path)  # per call: REQUESTS_CA_BUNDLE would override a session's verify
        self.session.headers["Authorization"] = f"Bearer {stack.issue_token(3600)}"

    def __call__(self) -> tuple:
        assert self.stack.ims is not None
        listing = self.session.get(f"{self.stack.ims.url}/images", timeout=10, verify=self.verify)
        images = {i["id"] for i in listing.json()}
        keys = {o["Key"] for o in self.s3.list_objects_v2(Bucket="boot-images").get("Contents", [])}
        return images, keys

    def image(self, image_id: str) -> Dict[str, Any]:
        assert self.stack.ims is not None
        response = self.session.get(f"{self.stack.ims.url}/images/{image_id}", timeout=10, verify=self.verify)
        response.raise_for_status()
        return dict(response.json())


@pytest.fixture
def tls_snapshot(tls_stack: LocalStack, s3: Any) -> TlsSnapshot:
    return TlsSnapshot(tls_stack, s3)


def _one_error_line(result: CliResult) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("ims_python_helper: error: ")]
    assert len(lines) == 1, result.stderr
    message = lines[0].split("error: ", 1)[1]
    assert result.json == {"result": "failure", "error": message}
    return message


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


# -- the right CA -------------------------------------------------------------------------


def test_publish_over_https_with_the_stack_ca_succeeds(run_cli: CliRunner, tls_env, artifacts: Artifacts, tls_snapshot):
    name = f"tls-{uuid.uuid4().hex[:8]}"

    result = run_cli("image", "upload_artifacts", name, *artifacts.flags("rootfs", "kernel", "initrd"), env=tls_env)

    assert result.code == 0, result.stderr
    record = result.json["ims_image_record"]
    assert record["link"]["path"] == f"s3://boot-images/{record['id']}/manifest.json"
    assert tls_snapshot.image(record["id"])["link"] == record["link"]
    assert f"{record['id']}/rootfs" in tls_snapshot()[1]


def test_over_https_a_part_is_read_a_piece_at_a_time_not_held_whole(tls_env: Dict[str, Any], tmp_path: Path) -> None:
    # TLS must encrypt in the client, so the parts are read for their requests, not sent by sendfile. Read a
    # piece at a time they hold 1 MiB each: a rootfs of 96 MiB more, in 32 MiB parts three at once, must not
    # raise the peak by the parts in flight (96 MiB when each part was read whole for its request).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    env.update({k: v for k, v in tls_env.items() if v is not None})
    runs = []
    for size in (16 * MIB, 112 * MIB):
        files = make_artifacts(tmp_path / f"rootfs-{size}", rootfs_size=size, seed=size)
        argv = ["image", "upload_artifacts", f"tls-memory-{uuid.uuid4().hex[:8]}", *files.flags("rootfs", "kernel")]
        run = run_cli_measured([*argv, "--part-size", "32", "--concurrency", "3"], env, tmp_path / f"{size}.log")
        assert run.code == 0, run.output
        runs.append(run)
    small, large = runs
    assert large.peak_rss - small.peak_rss < 32 * MIB, (small.peak_rss, large.peak_rss)


def test_cert_flag_is_used_for_both_the_token_endpoint_and_ims(
    run_cli: CliRunner, tls_env, tls_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
):
    # requests lets REQUESTS_CA_BUNDLE override a session's CA when a call names none; --cert must still win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", DEFAULT_CA_BUNDLE_PATH)
    env = {**tls_env, "CA_CERT": None}

    result = run_cli(
        "--cert", str(tls_stack.ca_path), "image", "set_job_status", tls_stack.job_id, "building_image", env=env
    )

    assert result.code == 0, result.stderr
    assert result.json["ims_job_record"]["status"] == "building_image"


def test_ca_cert_env_is_used_when_no_flag_is_given(run_cli: CliRunner, tls_env, tls_stack: LocalStack):
    result = run_cli("image", "set_job_status", tls_stack.job_id, "creating", env=tls_env)

    assert result.code == 0, result.stderr


# -- a wrong CA, or none ------------------------------------------------------------------


def test_wrong_ca_for_the_token_endpoint_is_refused_naming_host_and_ca(
    run_cli: CliRunner, tls_env, wrong_ca: str, artifacts: Artifacts, tls_snapshot
):
    before = tls_snapshot()

    result = run_cli(
        "--cert", wrong_ca, "image", "upload_artifacts", "tls-wrong", *artifacts.flags("rootfs"), env=tls_env
    )

    assert result.code == 1
    message = _one_error_line(result)
    host = _host(str(tls_env["OAUTH_CLIENT_ENDPOINT"]))
    assert message == (
        f"TLS: certificate verify failed for {host} using {wrong_ca}; pass the right CA bundle with --cert (CA_CERT)"
    )
    assert tls_snapshot() == before


def test_wrong_ca_for_ims_is_refused_naming_the_ims_host(
    run_cli: CliRunner, tls_env, tls_stack: LocalStack, wrong_ca: str, artifacts: Artifacts, tls_snapshot
):
    # A plain-http token endpoint on loopback (same client and signing key), so only IMS speaks TLS:
    # the refusal then proves --cert is what IMS calls are verified against.
    assert tls_stack.signer is not None
    with TokenServer({CLIENT_ID: tls_stack.client_secret}, tls_stack.signer) as plain_tokens:
        before = tls_snapshot()

        result = run_cli(
            "--cert",
            wrong_ca,
            "image",
            "upload_artifacts",
            "tls-wrong-ims",
            *artifacts.flags("rootfs"),
            env={**tls_env, "OAUTH_CLIENT_ENDPOINT": plain_tokens.url},
        )

        assert plain_tokens.grants_issued == 1
    assert result.code == 1
    message = _one_error_line(result)
    assert message.startswith(f"TLS: certificate verify failed for {_host(str(tls_env['IMS_URL']))} using {wrong_ca};")
    assert tls_snapshot() == before


def test_without_a_ca_the_system_store_is_used_and_refuses_the_test_ca(
    run_cli: CliRunner, tls_env, tls_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    result = run_cli("image", "set_job_status", tls_stack.job_id, "creating", env={**tls_env, "CA_CERT": None})

    assert result.code == 1
    message = _one_error_line(result)
    assert message.startswith(f"TLS: certificate verify failed for {_host(str(tls_env['OAUTH_CLIENT_ENDPOINT']))}")
    assert f"using certifi's CA bundle {DEFAULT_CA_BUNDLE_PATH} (requests' default);" in message


def test_wrong_s3_ca_is_refused_naming_the_s3_host_and_ca(
    run_cli: CliRunner, tls_env, wrong_ca: str, artifacts: Artifacts, tls_snapshot
):
    before = tls_snapshot()

    result = run_cli(
        "image",
        "upload_artifacts",
        "tls-wrong-s3",
        *artifacts.flags("rootfs"),
        env={**tls_env, "S3_SSL_VERIFY": wrong_ca},
    )

    assert result.code == 1
    message = _one_error_line(result)
    assert message == (
        f"TLS: certificate verify failed for S3 at {_host(str(tls_env['S3_ENDPOINT']))} using {wrong_ca}; "
        "pass the right CA bundle with --s3-ssl-verify (S3_SSL_VERIFY)"
    )
    assert tls_snapshot() == before


def test_s3_verification_is_on_by_default_against_ca_cert_else_the_system_store(
    run_cli: CliRunner, tls_env, artifacts: Artifacts, tls_snapshot
):
    # No S3_SSL_VERIFY: "true", which verifies against CA_CERT (the stack's CA) when it is set ...
    published = run_cli(
        "image",
        "upload_artifacts",
        "tls-s3-default",
        *artifacts.flags("rootfs"),
        env={**tls_env, "S3_SSL_VERIFY": None},
    )
    assert published.code == 0, published.stderr
    # ... and against the system store when it is not, which refuses the test CA.
    environ = {k: v for k, v in tls_env.items() if v is not None and k not in ("S3_SSL_VERIFY", "CA_CERT")}
    settings = resolve_settings({}, environ)
    assert settings.s3_ssl_verify is True
    before = tls_snapshot()
    with pytest.raises(StorageError, match="TLS: certificate verify failed for S3 at"):
        S3Storage(settings.helper_settings().s3).check_bucket()
    assert tls_snapshot() == before


def _tls_s3_settings(tls_env, verify: Union[bool, str]) -> S3Settings:
    """The HTTPS stack's S3, checked with ``verify``."""
    return S3Settings(
        endpoint=tls_env["S3_ENDPOINT"],
        bucket="boot-images",
        access_key=tls_env["S3_ACCESS_KEY"],
        secret_key=tls_env["S3_SECRET_KEY"],
        verify=verify,
    )


def test_a_certificate_that_does_not_verify_is_not_retried(tls_env, wrong_ca: str):
    # A restarting RGW is waited for; a certificate from another CA will not verify next time either.
    storage = S3Storage(_tls_s3_settings(tls_env, wrong_ca))
    sent = []
    storage.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    with pytest.raises(StorageError, match="TLS: certificate verify failed for S3 at"):
        storage.check_bucket()
    assert sent == ["HEAD"]


@pytest.mark.parametrize("off_word", ["false", "off", "no", "f", "0"])
def test_s3_ssl_verify_off_words_turn_verification_off_and_urllib3_still_warns(tls_env, off_word: str):
    settings = _tls_s3_settings(tls_env, parse_ssl_verify(off_word))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        S3Storage(settings).check_bucket()  # reaches S3 over TLS without verifying it

    assert settings.verify is False
    assert any(issubclass(w.category, urllib3.exceptions.InsecureRequestWarning) for w in caught)


def test_publish_with_s3_ssl_verify_f_turns_s3_verification_off_as_the_pods_fetch_does(
    run_cli: CliRunner, tls_env, artifacts: Artifacts
):
    name = f"tls-off-{uuid.uuid4().hex[:8]}"

    result = run_cli(
        "image", "upload_artifacts", name, *artifacts.flags("rootfs"), env={**tls_env, "S3_SSL_VERIFY": "f"}
    )

    assert result.code == 0, result.stderr
    assert "S3 TLS certificate verification is off" in result.stderr


def test_the_insecure_request_warning_is_never_silenced_globally(run_cli: CliRunner, tls_env, tls_stack: LocalStack):
    result = run_cli("image", "set_job_status", tls_stack.job_id, "creating", env=tls_env)

    assert result.code == 0
    silenced = [
        f
        for f in warnings.filters
        if f[0] == "ignore" and isinstance(f[2], type) and issubclass(urllib3.exceptions.InsecureRequestWarning, f[2])
    ]
    assert silenced == []
    for path in (ROOT / "ims_python_helper").rglob("*.py"):
        assert "disable_warnings" not in path.read_text(), path


# -- the local stack's HTTPS --------------------------------------------------------------


def test_the_test_ca_is_kept_in_the_data_directory_and_reused(tmp_path: Path):
    first = LocalCA(tmp_path)
    second = LocalCA(tmp_path)

    assert first.ca_path.read_bytes() == second.ca_path.read_bytes()
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    first.server_context()  # a server certificate signed by the kept CA


def test_local_up_tls_exports_https_urls_and_the_ca(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ims_python_helper",
            "local",
            "up",
            "--tls",
            "--s3",
            "moto",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        exports: Dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                break
            name, _, value = line.strip().removeprefix("export ").partition("=")
            exports[name] = value.strip("'")
        ca = str(tmp_path / "tls" / "ca.pem")
        assert exports["CA_CERT"] == exports["S3_SSL_VERIFY"] == ca
        for name in ("IMS_URL", "OAUTH_CLIENT_ENDPOINT", "S3_ENDPOINT"):
            assert exports[name].startswith("https://127.0.0.1:"), exports
        token = requests.post(
            exports["OAUTH_CLIENT_ENDPOINT"],
            data={"grant_type": "client_credentials"},
            auth=(exports["OAUTH_CLIENT_ID"], exports["OAUTH_CLIENT_SECRET"]),
            verify=ca,
            timeout=10,
        )
        assert token.status_code == 200
        assert requests.get(exports["S3_ENDPOINT"], verify=ca, timeout=10).status_code in (200, 403)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
