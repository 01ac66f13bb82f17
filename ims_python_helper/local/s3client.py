"""One way to make a plain boto3 S3 client for the local S3 engines (moto, Ceph RGW).

"Plain" means nothing of the client package sits in between: the local IMS
checks links with it, the Ceph launcher creates its buckets with it, and the
tests read back what the client stored with it, so what they see does not
depend on the code under test. The settings are what Ceph RGW understands:
path-style addressing and checksums only where an operation requires them
(see ims-facts.md).
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Union

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from ims_python_helper.local.s3backend import S3Backend

#: Region the local engines answer for; neither checks it, but SigV4 signs it.
REGION = "us-east-1"

_session: Optional[Any] = None
#: Session.client() is not thread-safe; this lock serialises making clients.
_session_lock = threading.Lock()


def _shared_session() -> Any:
    """The boto3 session every client here is made from.

    The session caches the parsed S3 service model, so each further client
    takes milliseconds instead of a few hundred.
    """
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def plain_s3_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    verify: Union[bool, str] = True,
    connect_timeout: float = 5,
    read_timeout: float = 60,
    max_attempts: int = 3,
) -> Any:
    """A boto3 S3 client for ``endpoint`` with the local engines' settings (safe to call from any thread)."""
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
    )
    with _session_lock:
        return _shared_session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=REGION,
            verify=verify,
            config=config,
        )


def backend_s3_client(backend: S3Backend, **settings: Any) -> Any:
    """:func:`plain_s3_client` for a running engine, with its endpoint and credentials."""
    return plain_s3_client(backend.endpoint, backend.access_key, backend.secret_key, **settings)
