"""Put a file into the local stack's S3 and hand out a presigned GET URL for it (what IMS gives job pods)."""

from __future__ import annotations

import os
from typing import Any, Union

from ims_python_helper.local.s3backend import S3Backend

#: Bucket the stack's IMS keeps recipes and images in.
DEFAULT_BUCKET = "boot-images"


def s3_client(backend: S3Backend, endpoint: str = "", verify: Union[bool, str] = True) -> Any:
    """A boto3 client on the backend (``endpoint`` overrides its URL, e.g. a TLS relay)."""
    return s3_client_for_endpoint(endpoint or backend.endpoint, backend.access_key, backend.secret_key, verify)


def s3_client_for_endpoint(endpoint: str, access_key: str, secret_key: str, verify: Union[bool, str] = True) -> Any:
    """A boto3 client on an S3 endpoint (path-style, SigV4), as ``local up`` exports it."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        verify=verify,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def presigned_get_url(client: Any, bucket: str, key: str, expires: int = 3600) -> str:
    """A presigned GET URL for ``bucket/key`` valid ``expires`` seconds."""
    return str(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires))


def put_and_presign(
    backend: S3Backend,
    path: Union[str, os.PathLike[str]],
    key: str,
    bucket: str = DEFAULT_BUCKET,
    expires: int = 3600,
    endpoint: str = "",
    verify: Union[bool, str] = True,
) -> str:
    """Upload the file at ``path`` to ``bucket/key`` and return a presigned GET URL for it."""
    client = s3_client(backend, endpoint, verify)
    client.upload_file(os.fspath(path), bucket, key)
    return presigned_get_url(client, bucket, key, expires)
