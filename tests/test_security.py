"""Secrets stay secret and S3 keys stay under IMAGE_ID/.

The OAuth client secret, the access tokens the token endpoint issued and both
S3 keys never appear in stdout or stderr (logs at DEBUG included), in error
messages, in the failure JSON, or in ``repr()`` of library objects. Secrets
come from files, the mounted directory or the environment; on the command line
they work but draw a warning. Names, however hostile, never steer an S3 key.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from ims_python_helper import ImsHelper
from ims_python_helper.clients.ims import ImsClient
from ims_python_helper.clients.oauth import ClientCredentialsSession, create_oauth_session
from ims_python_helper.clients.redact import MASK, SecretRegistry
from ims_python_helper.clients.storage import S3Settings, S3Storage
from ims_python_helper.config import Settings
from ims_python_helper.errors import AuthError, ImsApiError
from ims_python_helper.local.stack import LocalStack
from tests.fake_ims import Answer, FakeIms
from tests.support import CliResult, CliRunner


@pytest.fixture
def issued_tokens(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Every access token the stack's signer makes during the test (the token endpoint's included)."""
    assert stack.signer is not None
    tokens: List[str] = []
    issue = stack.signer.issue

    def recording(client_id: str, lifetime: int) -> str:
        token = issue(client_id, lifetime)
        tokens.append(token)
        return token

    monkeypatch.setattr(stack.signer, "issue", recording)
    return tokens


def secrets_of(stack: LocalStack, tokens: List[str]) -> Dict[str, str]:
    """Every secret value a run against ``stack`` handles, by what it is."""
    assert stack.s3 is not None
    found = {"client secret": stack.client_secret, "S3 secret key": stack.s3.secret_key}
    found["S3 access key"] = stack.s3.access_key
    for number, token in enumerate(tokens):
        found[f"token {number}"] = token
        found[f"signature of token {number}"] = token.rsplit(".", 1)[1]
    return found


def assert_no_secret(result: CliResult, secrets: Dict[str, str]) -> None:
    output = result.stdout + result.stderr
    leaked = [what for what, value in secrets.items() if value in output]
    assert leaked == [], f"{', '.join(leaked)} printed"


# -- a full publish at DEBUG ----------------------------------------------------------------


def test_debug_publish_prints_no_token_client_secret_or_s3_key(
    run_cli: CliRunner, stack: LocalStack, issued_tokens: List[str], small_artifacts, ims_api
):
    job = ims_api.new_job()
    grants = stack.tokens.grants_issued if stack.tokens else 0

    result = run_cli("-l", "DEBUG", "image", "upload_artifacts", "debug-image", job, *small_artifacts.flags())

    assert result.code == 0, result.stderr
    assert stack.tokens is not None and stack.tokens.grants_issued > grants
    assert " DEBUG " in result.stderr and "-> 200" in result.stderr  # request logging was on
    assert_no_secret(result, secrets_of(stack, issued_tokens))


def test_debug_publish_in_a_process_with_secrets_from_files_prints_none(
    run_cli_process: CliRunner, stack: LocalStack, issued_tokens: List[str], small_artifacts, tmp_path: Path
):
    assert stack.s3 is not None
    files = tmp_path / "secrets"
    files.mkdir(mode=0o700)
    for name, value in (("client", stack.client_secret), ("s3-secret", stack.s3.secret_key)):
        (files / name).write_text(value + "\n")
    (files / "s3-access").write_text(stack.s3.access_key)

    result = run_cli_process(
        "-l",
        "DEBUG",
        "--oauth-client-secret-file",
        str(files / "client"),
        "--s3-secret-key-file",
        str(files / "s3-secret"),
        "image",
        "upload_artifacts",
        "debug-image-from-files",
        *small_artifacts.flags("rootfs", "kernel"),
        env={
            "OAUTH_CLIENT_SECRET": None,
            "S3_SECRET_KEY": None,
            "S3_ACCESS_KEY": None,
            "S3_ACCESS_KEY_FILE": str(files / "s3-access"),
            "IMS_JOB_ID": None,
        },
    )

    assert result.code == 0, result.stderr
    assert "command line" not in result.stderr
    assert_no_secret(result, secrets_of(stack, issued_tokens))


def test_credentials_come_from_the_mounted_directory(run_cli: CliRunner, stack: LocalStack, tmp_path: Path):
    env = stack.env()
    mounted = tmp_path / "admin-client-auth"
    mounted.mkdir()
    (mounted / "client-id").write_text(env["OAUTH_CLIENT_ID"] + "\n")
    (mounted / "client-secret").write_text(env["OAUTH_CLIENT_SECRET"] + "\n")
    (mounted / "endpoint").write_text(env["OAUTH_CLIENT_ENDPOINT"] + "\n")

    result = run_cli(
        "image",
        "set_job_status",
        stack.job_id,
        "waiting_on_user",
        env={
            "OAUTH_CONFIG_DIR": str(mounted),
            "OAUTH_CLIENT_ID": None,
            "OAUTH_CLIENT_SECRET": None,
            "OAUTH_CLIENT_ENDPOINT": None,
        },
    )

    assert result.code == 0, result.stderr
    assert env["OAUTH_CLIENT_SECRET"] not in result.stdout + result.stderr


def test_secrets_on_the_command_line_work_but_draw_a_warning(
    run_cli: CliRunner, stack: LocalStack, issued_tokens: List[str]
):
    assert stack.s3 is not None

    # FLAG=VALUE: a random secret may start with "-", which argparse would take for an option.
    result = run_cli(
        f"--oauth-client-secret={stack.client_secret}",
        f"--s3-access-key={stack.s3.access_key}",
        f"--s3-secret-key={stack.s3.secret_key}",
        "image",
        "set_job_status",
        stack.job_id,
        "building_image",
        env={"OAUTH_CLIENT_SECRET": None, "S3_SECRET_KEY": None, "S3_ACCESS_KEY": None},
    )

    assert result.code == 0, result.stderr
    for flag in ("--oauth-client-secret", "--s3-access-key", "--s3-secret-key"):
        assert (
            f"WARNING ims_python_helper.cli: {flag} was given on the command line, "
            "where other users of this machine can read it" in result.stderr
        )
    assert_no_secret(result, secrets_of(stack, issued_tokens))


# -- failures -------------------------------------------------------------------------------

WRONG_CLIENT_SECRET = "wrong-client-secret-4f9a1c27"
WRONG_S3_SECRET = "wrong-s3-secret-key-8e1d0b55"


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"OAUTH_CLIENT_SECRET": WRONG_CLIENT_SECRET}, id="wrong-client-secret"),
        pytest.param({"S3_SECRET_KEY": WRONG_S3_SECRET, "IMS_JOB_ID": None}, id="wrong-s3-secret"),
    ],
)
def test_a_run_with_a_wrong_secret_prints_neither_secret(
    run_cli: CliRunner, stack: LocalStack, issued_tokens: List[str], small_artifacts, env: Dict[str, Any]
):
    result = run_cli(
        "-l", "DEBUG", "image", "upload_artifacts", "wrong-secret", *small_artifacts.flags("rootfs"), env=env
    )

    # moto takes any S3 secret; Ceph RGW checks it. Either way neither secret may show.
    assert result.code in (0, 1)
    assert_no_secret(
        result,
        {
            **secrets_of(stack, issued_tokens),
            "wrong client secret": WRONG_CLIENT_SECRET,
            "wrong S3 secret": WRONG_S3_SECRET,
        },
    )


def _echo_authorization(authorization: str) -> bytes:
    """An IMS error page that repeats the caller's Authorization header and token back."""
    token = authorization.split(" ", 1)[-1]
    return (
        b'{"title": "Bad Request", "status": 400, "detail": "request with Authorization: '
        + authorization.encode()
        + b" refused; token "
        + token.encode()
        + b' is not welcome"}'
    )


def test_an_ims_error_that_echoes_the_token_is_masked_in_the_message_and_failure_json(
    run_cli: CliRunner, stack: LocalStack, issued_tokens: List[str], small_artifacts
):
    with FakeIms({"GET /images": Answer(400, _echo_authorization)}) as fake:
        result = run_cli(
            "-l",
            "DEBUG",
            "image",
            "upload_artifacts",
            "echo",
            *small_artifacts.flags("rootfs"),
            "--skip-existing",  # the publish that reads the image list
            env={"IMS_URL": fake.url, "IMS_JOB_ID": None},
        )

    assert result.code == 1
    assert result.json["error"].startswith("IMS GET /images failed with HTTP 400: request with Authorization: " + MASK)
    assert_no_secret(result, secrets_of(stack, issued_tokens))


def test_library_errors_carry_no_token_or_secret(stack: LocalStack, issued_tokens: List[str]):
    env = stack.env()
    with pytest.raises(AuthError) as refused:
        create_oauth_session(env["OAUTH_CLIENT_ID"], WRONG_CLIENT_SECRET, None, env["OAUTH_CLIENT_ENDPOINT"], 10)
    assert WRONG_CLIENT_SECRET not in str(refused.value) + repr(refused.value)

    session = create_oauth_session(
        env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"], None, env["OAUTH_CLIENT_ENDPOINT"], 10
    )
    with FakeIms({"GET /images": Answer(400, _echo_authorization)}) as fake:
        client = ImsClient(fake.url, session)
        with pytest.raises(ImsApiError) as echoed:
            client.list_images()
    session.close()

    text = str(echoed.value) + repr(echoed.value) + echoed.value.detail
    leaked = [what for what, value in secrets_of(stack, issued_tokens).items() if value in text]
    assert leaked == []
    assert MASK in echoed.value.detail


# -- repr() of library objects ----------------------------------------------------------------

SECRET = "client-secret-value-1f2e3d"
ACCESS = "access-key-value-9a8b7c"
S3_SECRET = "s3-secret-value-6d5e4f"
TOKEN = "access-token-value-0a1b2c"


@pytest.fixture
def library_objects() -> Iterator[Dict[str, Any]]:
    """One of each library object, built with known secret values."""
    session = ClientCredentialsSession("client", SECRET, "http://127.0.0.1:1/token")
    session.token = {"access_token": TOKEN, "token_type": "Bearer"}
    s3_settings = S3Settings(
        endpoint="http://127.0.0.1:1", bucket="boot-images", access_key=ACCESS, secret_key=S3_SECRET
    )
    helper = ImsHelper(
        ims_url="http://127.0.0.1:1/apis/ims",
        session=session,
        s3_endpoint="http://127.0.0.1:1",
        s3_access_key=ACCESS,
        s3_secret_key=S3_SECRET,
    )
    yield {
        "Settings": Settings(
            oauth_client_id="client", oauth_client_secret=SECRET, s3_access_key=ACCESS, s3_secret_key=S3_SECRET
        ),
        "ClientCredentialsSession": session,
        "S3Settings": s3_settings,
        "S3Storage": S3Storage(s3_settings),
        "ImsClient": ImsClient("http://127.0.0.1:1/apis/ims", session),
        "ImsHelper": helper,
        "ImsHelper.s3_settings": helper.s3_settings,
        "ImsHelper.storage": helper.storage,
        "ImsHelper.ims": helper.ims,
    }
    session.close()


def test_repr_and_str_of_library_objects_hide_every_secret(library_objects: Dict[str, Any]):
    for name, thing in library_objects.items():
        text = repr(thing) + str(thing)
        for secret in (SECRET, ACCESS, S3_SECRET, TOKEN):
            assert secret not in text, f"{name} shows a secret: {text}"


# -- what logs of other libraries may print -------------------------------------------------------

CREDENTIAL_LINES = [
    # botocore at DEBUG: the signed request, headers as bytes
    "Sending http request: <AWSPreparedRequest headers={'Authorization': b'AWS4-HMAC-SHA256 "
    "Credential=AKIDUNREGISTERED/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=5d672d79c15b1316'}>",
    # requests-oauthlib at DEBUG: the token request
    "Supplying headers {'Authorization': 'Basic aW1zOlVOUkVHSVNURVJFRA=='} and data "
    "{'grant_type': 'client_credentials', 'client_secret': 'UNREGISTERED-secret'}",
    "Request body: grant_type=client_credentials&client_id=ims&client_secret=UNREGISTERED-secret",
    "Obtained token {'access_token': 'UNREGISTERED.token.value', 'expires_in': 300}",
    "Authorization: Bearer UNREGISTERED.token.value",
    # urllib3 at DEBUG: pre-signed URLs, SigV4 and SigV2
    'https://rgw:443 "GET /b/k?X-Amz-Credential=AKIDUNREGISTERED%2F2026&X-Amz-Signature=0123456789abcdef HTTP/1.1"',
    "GET /b/k?AWSAccessKeyId=AKIDUNREGISTERED&Signature=abc%2Bdef%3D&Expires=1700000000",
    "headers={'x-amz-security-token': b'UNREGISTERED-session-token'}",
    "aws_secret_access_key = UNREGISTERED/secret+key",
]


@pytest.mark.parametrize("line", CREDENTIAL_LINES)
def test_credential_shaped_text_is_masked_even_when_the_value_was_never_registered(line: str):
    masked = SecretRegistry().redact(line)

    assert "UNREGISTERED" not in masked and "5d672d79" not in masked and "0123456789abcdef" not in masked
    assert "aW1zOlVOUkVHSVNURVJFRA" not in masked and MASK in masked


# -- names never steer S3 keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../escape", "boot-images/other-id/rootfs", "%2e%2e%2fetc", "名前 with spaces/and/slashes", "x" * 256],
    ids=["dot-dot", "bucket-path", "percent-encoded", "unicode-slashes", "longest"],
)
def test_hostile_names_never_steer_s3_keys_outside_image_id(
    run_cli: CliRunner, snapshot, s3, tmp_path: Path, name: str
):
    rootfs = tmp_path / "rootfs"
    rootfs.write_bytes(os.urandom(4096))
    before = snapshot()

    result = run_cli("image", "upload_artifacts", name, "-r", str(rootfs), env={"IMS_JOB_ID": None})

    assert result.code == 0, result.stderr
    record = result.json["ims_image_record"]
    image_id = str(uuid.UUID(record["id"]))
    assert record["name"] == name
    new_keys = snapshot().objects - before.objects
    assert new_keys == {f"boot-images/{image_id}/rootfs", f"boot-images/{image_id}/manifest.json"}
    stored = s3.head_object(Bucket="boot-images", Key=f"{image_id}/rootfs")
    assert stored["Metadata"]["md5sum"] == hashlib.md5(rootfs.read_bytes()).hexdigest()


def test_a_symlinked_artifact_is_resolved_and_reported(run_cli: CliRunner, tmp_path: Path):
    real = tmp_path / "real-rootfs.squashfs"
    real.write_bytes(os.urandom(4096))
    link = tmp_path / "rootfs-link"
    link.symlink_to(real)

    result = run_cli("image", "upload_artifacts", "linked", "-r", str(link), env={"IMS_JOB_ID": None})

    assert result.code == 0, result.stderr
    assert f"rootfs (-r) {link} is a link to {real}" in result.stderr
    assert result.json["ims_image_artifacts"][0]["md5"] == hashlib.md5(real.read_bytes()).hexdigest()
