"""The S3 checks the local IMS makes before it accepts a link, the way IMS does.

An image link must name a version 1.0 manifest whose artifacts all exist and
which lists exactly one rootfs; a recipe link must name an existing object.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, List, Tuple, Union

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from ims_python_helper.local.errors import ApiProblem, unprocessable
from ims_python_helper.local.s3client import plain_s3_client
from ims_python_helper.local.vocabulary import MANIFEST_VERSION, ROOTFS_ARTIFACT_TYPE, S3_LINK_TYPE

#: Largest manifest the link check reads.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: S3 error codes that mean "there is no such object".
_MISSING_CODES = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def _split_s3_path(path: str, what: str) -> Tuple[str, str]:
    bucket, _, key = path[len("s3://") :].partition("/") if path.startswith("s3://") else ("", "", "")
    if not bucket or not key:
        raise unprocessable(f"{what} path {path!r} is not of the form s3://BUCKET/KEY")
    return bucket, key


def _require_s3_link(link: Dict[str, str]) -> None:
    if link["type"] != S3_LINK_TYPE:
        raise unprocessable(f"link type is {link['type']!r}; only 's3' links are supported")


def _artifact_paths(path: str, manifest: Any) -> List[str]:
    """The S3 paths a manifest lists; a 422 problem unless it is a valid version 1.0 image manifest."""
    if not isinstance(manifest, dict):
        raise unprocessable(f"manifest {path} must be a JSON object")
    if manifest.get("version") != MANIFEST_VERSION:
        version = json.dumps(manifest.get("version"))
        raise unprocessable(f'manifest {path} has version {version}; IMS requires "{MANIFEST_VERSION}"')
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, list):
        raise unprocessable(f"manifest {path} has no 'artifacts' list")
    paths = []
    for index, entry in enumerate(artifacts):
        if not isinstance(entry, dict) or not isinstance(entry.get("link"), dict):
            raise unprocessable(f"manifest {path} artifact {index} has no 'link' object")
        link = entry["link"]
        if not isinstance(link.get("type"), str) or not isinstance(link.get("path"), str):
            raise unprocessable(f"manifest {path} artifact {index} link needs string 'type' and 'path'")
        if link["type"] != S3_LINK_TYPE:
            raise unprocessable(f"manifest {path} artifact {index} link type is {link['type']!r}, not 's3'")
        paths.append(link["path"])
    rootfs_count = sum(1 for entry in artifacts if entry.get("type") == ROOTFS_ARTIFACT_TYPE)
    if rootfs_count != 1:
        raise unprocessable(
            f"manifest {path} must list exactly one {ROOTFS_ARTIFACT_TYPE} artifact; found {rootfs_count}"
        )
    return paths


class S3LinkChecker:
    """Checks links against the S3 server the way IMS does before it accepts them."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, verify: Union[bool, str] = True) -> None:
        self._settings = (endpoint, access_key, secret_key, verify)
        self._client: Any = None
        self._client_lock = threading.Lock()

    def client(self) -> Any:
        """The boto3 S3 client, made on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = plain_s3_client(*self._settings, read_timeout=30, max_attempts=2)
            return self._client

    def close(self) -> None:
        """Release the client's connections."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def check_image_manifest(self, link: Dict[str, str]) -> None:
        """Raise a 422 problem unless ``link`` names a valid version 1.0 image manifest whose artifacts exist."""
        for artifact_path in _artifact_paths(link["path"], self._read_manifest(link)):
            self._require_object(artifact_path, "artifact")

    def check_recipe_object(self, link: Dict[str, str]) -> None:
        """Raise a 422 problem unless ``link`` names an existing S3 object."""
        _require_s3_link(link)
        self._require_object(link["path"], "recipe")

    def _read_manifest(self, link: Dict[str, str]) -> Any:
        _require_s3_link(link)
        path = link["path"]
        bucket, key = _split_s3_path(path, "manifest")
        try:
            response = self.client().get_object(Bucket=bucket, Key=key)
            if response.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
                response["Body"].close()
                raise unprocessable(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
            data = response["Body"].read()
        except ClientError as error:
            raise self._client_problem(error, f"manifest {path}") from error
        except BotoCoreError as error:
            raise ApiProblem(500, f"could not read manifest {path} from S3: {error}") from error
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as error:
            raise unprocessable(f"manifest {path} is not valid JSON") from error

    def _require_object(self, path: str, what: str) -> None:
        bucket, key = _split_s3_path(path, what)
        try:
            self.client().head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise self._client_problem(error, f"{what} {path}") from error
        except BotoCoreError as error:
            raise ApiProblem(500, f"could not check {what} {path} in S3: {error}") from error

    @staticmethod
    def _client_problem(error: ClientError, what: str) -> ApiProblem:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            return unprocessable(f"{what} does not exist")
        return unprocessable(f"{what} cannot be read from S3 ({code or 'error'})")
