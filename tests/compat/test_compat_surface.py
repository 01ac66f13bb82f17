"""The names, signatures and constants other services import: unchanged from the earlier client.

These need no running stack: they read the library's surface the way a caller's
code is written against it (``ims-facts.md``, "Library surface other services
already call").
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest

import ims_python_helper
from ims_python_helper import ConfigError, ImsHelper, ImsImagesExistWithName
from ims_python_helper.session import create_oauth_session, get_admin_client_auth

#: Each callable and the leading parameters callers pass by position or keyword, with their defaults.
NO_DEFAULT = inspect.Parameter.empty
SIGNATURES: List[Tuple[str, Callable[..., Any], List[Tuple[str, Any]]]] = [
    (
        "ImsHelper",
        ImsHelper.__init__,
        [
            ("self", NO_DEFAULT),
            ("ims_url", ims_python_helper.DEFAULT_IMS_API_URL),
            ("session", None),
            ("s3_access_key", None),
            ("s3_secret_key", None),
            ("s3_endpoint", None),
            ("s3_bucket", None),
            ("s3_ssl_verify", None),
        ],
    ),
    (
        "image_upload_artifacts",
        ImsHelper.image_upload_artifacts,
        [
            ("self", NO_DEFAULT),
            ("image_name", NO_DEFAULT),
            ("ims_job_id", None),
            ("rootfs", None),
            ("kernel", None),
            ("initrd", None),
            ("debug", None),
            ("boot_parameters", None),
            ("skip_existing", False),
            ("arch", None),
        ],
    ),
    (
        "image_set_job_status",
        ImsHelper.image_set_job_status,
        [("self", NO_DEFAULT), ("ims_job_id", NO_DEFAULT), ("job_status", NO_DEFAULT)],
    ),
    (
        "recipe_upload",
        ImsHelper.recipe_upload,
        [
            ("self", NO_DEFAULT),
            ("name", NO_DEFAULT),
            ("filepath", NO_DEFAULT),
            ("distro", NO_DEFAULT),
            ("template_dictionary", None),
            ("arch", None),
            ("require_dkms", None),
        ],
    ),
    ("get_image_manifest", ImsHelper.get_image_manifest, [("self", NO_DEFAULT), ("record", NO_DEFAULT)]),
    (
        "artifacts_match_image_record",
        ImsHelper.artifacts_match_image_record,
        [
            ("self", NO_DEFAULT),
            ("record", NO_DEFAULT),
            ("name", NO_DEFAULT),
            ("rootfs_path", None),
            ("kernel_path", None),
            ("initrd_path", None),
            ("debug_kernel", None),
            ("boot_params", None),
        ],
    ),
    (
        "get_empty_image_record_for_name",
        ImsHelper.get_empty_image_record_for_name,
        [("self", NO_DEFAULT), ("image_name", NO_DEFAULT), ("skip_existing", NO_DEFAULT), ("arch", None)],
    ),
    (
        "create_oauth_session",
        create_oauth_session,
        [
            ("oauth_client_id", NO_DEFAULT),
            ("oauth_client_secret", NO_DEFAULT),
            ("ssl_cert", NO_DEFAULT),
            ("token_url", NO_DEFAULT),
            ("timeout", NO_DEFAULT),
            ("logger", None),
        ],
    ),
    ("get_admin_client_auth", get_admin_client_auth, [("logger", None)]),
    ("ImsImagesExistWithName", ImsImagesExistWithName.__init__, [("self", NO_DEFAULT), ("name", NO_DEFAULT)]),
]

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@pytest.mark.parametrize(("name", "function", "expected"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_callers_parameters_keep_their_names_order_and_defaults(name, function, expected):
    parameters = list(inspect.signature(function).parameters.values())

    leading = [(p.name, p.default) for p in parameters[: len(expected)]]

    assert leading == expected
    assert all(p.kind in POSITIONAL for p in parameters[: len(expected)]), "callers pass these by position"
    required_after = [
        p.name
        for p in parameters[len(expected) :]
        if p.default is NO_DEFAULT and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert required_after == [], f"{name} gained required parameters callers do not pass"


def test_the_constructor_accepts_unknown_keywords():
    parameters = inspect.signature(ImsHelper.__init__).parameters.values()

    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def test_constants_keep_their_values():
    assert ims_python_helper.DEFAULT_IMS_API_URL == "https://api-gw-service-nmn.local/apis/ims"
    assert ims_python_helper.SQUASHFS_ARTIFACT_TYPE == "application/vnd.cray.image.rootfs.squashfs"
    assert ims_python_helper.KERNEL_ARTIFACT_TYPE == "application/vnd.cray.image.kernel"
    assert ims_python_helper.INITRD_ARTIFACT_TYPE == "application/vnd.cray.image.initrd"
    assert ims_python_helper.DEBUG_KERNEL_ARTIFACT_TYPE == "application/vnd.cray.image.debug.kernel"
    assert ims_python_helper.BOOT_PARAMS_ARTIFACT_TYPE == "application/vnd.cray.image.parameters.boot"


def test_md5_is_a_static_method_returning_the_hex_md5_of_a_file(tmp_path: Path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)

    assert isinstance(inspect.getattr_static(ImsHelper, "_md5"), staticmethod)
    assert ImsHelper._md5(str(path)) == hashlib.md5(data).hexdigest()
    assert ImsHelper._md5(path) == hashlib.md5(data).hexdigest()


def test_images_exist_with_name_carries_the_name_and_records_and_reads_as_before():
    records = [{"id": "a1", "name": "img"}, {"id": "b2", "name": "img"}]

    error = ImsImagesExistWithName("img", records)

    assert isinstance(error, Exception)
    assert error.name == "img"
    assert error.image_records == records
    assert str(error) == 'images with name "img" already exist in IMS (ID(s): a1, b2)'
    with pytest.raises(ImsImagesExistWithName) as caught:
        raise ImsImagesExistWithName("img", records)
    assert caught.value.image_records[0]["id"] == "a1"


def test_admin_client_auth_refuses_a_mounted_secret_file_larger_than_a_secret(tmp_path: Path, monkeypatch):
    (tmp_path / "client-id").write_text("file-id\n")
    (tmp_path / "client-secret").write_bytes(b"x" * (1024 * 1024))
    (tmp_path / "endpoint").write_text("https://t/token\n")
    monkeypatch.setenv("OAUTH_CONFIG_DIR", str(tmp_path))
    for name in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_CLIENT_ENDPOINT", "OAUTH_CLIENT_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ConfigError, match="holds more than 65536 bytes"):
        get_admin_client_auth()


def test_admin_client_auth_comes_from_env_vars_first_then_the_mounted_directory(tmp_path: Path, monkeypatch):
    for name, value in (("client-id", "file-id"), ("client-secret", "file-secret"), ("endpoint", "https://t/token")):
        (tmp_path / name).write_text(value + "\n")
    monkeypatch.setenv("OAUTH_CONFIG_DIR", str(tmp_path))
    for name in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_CLIENT_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    assert get_admin_client_auth() == ("file-id", "file-secret", "https://t/token")

    monkeypatch.setenv("OAUTH_CLIENT_ID", "env-id")
    assert get_admin_client_auth(logger=logging.getLogger("caller")) == ("env-id", "file-secret", "https://t/token")
