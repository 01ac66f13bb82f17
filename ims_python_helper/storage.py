"""S3 storage: the boto3 client and the object operations the workflows need (no transfers here)."""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

from .errors import ConfigError, StorageError
from .redact import SECRETS, redact
from .s3outage import install_s3_retries
from .transport import DEFAULT_TIMEOUT, check_url, is_loopback

if TYPE_CHECKING:
    from .session import Deadline

LOGGER = logging.getLogger(__name__)

#: S3 refuses a single CopyObject above this size; larger copies go part by part.
MAX_SINGLE_COPY = 5 * 1024**3
#: Attempts of each S3 request of cleanup, and their connect and read timeout after SIGTERM/SIGINT.
CLEANUP_ATTEMPTS = 2
CLEANUP_REQUEST_TIMEOUT = 3.0


@dataclass(frozen=True)
class S3Settings:
    """How to reach the bucket. Keys are left out of ``repr``."""

    endpoint: Optional[str]
    bucket: str
    access_key: Optional[str] = field(default=None, repr=False)
    secret_key: Optional[str] = field(default=None, repr=False)
    verify: Union[bool, str] = True
    checksum_mode: str = "when_required"
    addressing_style: str = "path"
    timeout: float = DEFAULT_TIMEOUT
    #: Attempts per S3 request: 5 retries, waiting about 15 s in all (``s3outage``), as IMS gets.
    max_attempts: int = 6
    max_pool_connections: int = 16


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD of an object tells."""

    key: str
    size: int
    etag: str
    metadata: Dict[str, str]
    content_type: str = ""


def make_s3_client(settings: S3Settings, deadline: Optional[Deadline] = None) -> Any:
    """A boto3 S3 client with bounded retries (botocore standard mode, see ``s3outage``) and RGW's checksum mode."""
    SECRETS.add(settings.secret_key)
    SECRETS.add(settings.access_key)
    check_endpoint(settings.endpoint)
    if settings.verify is False and urlsplit(settings.endpoint or "https://").scheme == "https":
        # Said once here; urllib3's own InsecureRequestWarning is left on (never silenced globally).
        LOGGER.warning("S3 TLS certificate verification is off (--s3-ssl-verify/S3_SSL_VERIFY)")
    config = Config(
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        max_pool_connections=settings.max_pool_connections,
        s3={"addressing_style": settings.addressing_style, "payload_signing_enabled": _sign_payload(settings.endpoint)},
        request_checksum_calculation=settings.checksum_mode,
        response_checksum_validation=settings.checksum_mode,
        user_agent_extra="ims-python-helper",
    )
    try:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint or None,
            aws_access_key_id=settings.access_key or None,
            aws_secret_access_key=settings.secret_key or None,
            verify=settings.verify,
            config=config,
            region_name="us-east-1",
        )
    except ValueError as err:
        raise ConfigError(f"S3 endpoint {settings.endpoint!r} is not usable: {redact(str(err))}") from None
    install_s3_retries(client, settings.max_attempts, settings.max_pool_connections, deadline)
    return client


def check_endpoint(endpoint: Optional[str]) -> None:
    """Refuse an S3 endpoint that is not an http(s) URL with a host (None means AWS's own)."""
    if endpoint:
        check_url(endpoint, "S3 endpoint", example="https://rgw.example")


def _sign_payload(endpoint: Optional[str]) -> bool:
    """Whether request bodies get a SHA-256 in the signature.

    That hash costs a pass over every byte on the client and another on the
    server (about as much CPU as the md5 itself). TLS already protects the bytes
    on the way, and loopback never leaves the machine, so only plain-http
    bodies to another host are signed.
    """
    url = endpoint or "https://s3.amazonaws.com"
    return urlsplit(url).scheme != "https" and not is_loopback(url)


def s3_error_code(err: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for other errors)."""
    if isinstance(err, botocore.exceptions.ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def describe_s3_error(err: BaseException) -> str:
    """A short, secret-free reason for a botocore failure."""
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        return redact(f"{error.get('Code', 'error')} (HTTP {status}) {error.get('Message', '')}".strip())
    if isinstance(err, botocore.exceptions.SSLError):
        return "TLS certificate verification failed; set --s3-ssl-verify to the right CA bundle"
    if isinstance(err, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError)):
        return "cannot connect to the S3 endpoint"
    if isinstance(err, (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError)):
        return "the S3 endpoint timed out"
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return "no S3 credentials; set S3_ACCESS_KEY and S3_SECRET_KEY"
    return redact(f"{type(err).__name__}: {err}")


def s3_tls_failure_message(settings: S3Settings) -> str:
    """One line naming the S3 host and the CA bundle that failed to verify it."""
    host = urlsplit(settings.endpoint or "").netloc or "the S3 endpoint"
    if isinstance(settings.verify, str):
        ca = settings.verify
    else:
        from botocore.httpsession import where

        ca = f"the system CA store {where()}"
    return (
        f"TLS: certificate verify failed for S3 at {host} using {ca}; "
        "pass the right CA bundle with --s3-ssl-verify (S3_SSL_VERIFY)"
    )


def content_md5(data: bytes) -> str:
    """The base64 Content-MD5 header value for ``data``."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


class S3Storage:
    """Object operations on one bucket."""

    def __init__(self, settings: S3Settings, client: Any = None, deadline: Optional[Deadline] = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._given_client = client is not None
        self.client = client if client is not None else make_s3_client(settings, deadline)
        self.deadline = deadline
        if deadline is not None:
            # botocore retries on its own (s3transfer's part uploads included); this makes every attempt
            # respect the run's deadline, so a hung S3 cannot keep a run going past it.
            self.client.meta.events.register("before-send.s3", self._check_deadline)

    def _check_deadline(self, request: Any = None, **_kwargs: Any) -> None:
        """botocore ``before-send`` hook: no S3 request or retry starts once the run's deadline has passed."""
        if self.deadline is not None:
            self.deadline.check(f"calling S3 {getattr(request, 'method', '')}".rstrip())

    def for_cleanup(self, after_signal: bool) -> S3Storage:
        """The same bucket through a client that makes ``CLEANUP_ATTEMPTS`` attempts (short ones after a signal).

        Cleanup follows a failure, often S3's own after its whole retry budget:
        it tries once more rather than waiting through that budget again.
        """
        if self._given_client:
            return self  # a caller's own client is used as given
        timeout = CLEANUP_REQUEST_TIMEOUT if after_signal else self.settings.timeout
        quick = replace(self.settings, timeout=timeout, max_attempts=CLEANUP_ATTEMPTS)
        return S3Storage(quick, deadline=self.deadline)

    def __repr__(self) -> str:
        return f"<S3Storage {self.settings.endpoint} bucket={self.bucket}>"

    def check_bucket(self) -> None:
        """Fail with a clear error when the bucket does not exist or cannot be reached."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as err:
            code = s3_error_code(err)
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(
                    f"S3 bucket {self.bucket!r} does not exist at {self.settings.endpoint}; "
                    "create it or choose another with --s3-bucket/S3_BUCKET"
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(
                    f"S3 refused access to bucket {self.bucket!r} ({describe_s3_error(err)}); "
                    "check S3_ACCESS_KEY and S3_SECRET_KEY"
                ) from None
            raise StorageError(f"cannot check S3 bucket {self.bucket!r}: {describe_s3_error(err)}") from None
        except botocore.exceptions.SSLError:
            raise StorageError(s3_tls_failure_message(self.settings)) from None
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(f"cannot reach S3 at {self.settings.endpoint}: {describe_s3_error(err)}") from None

    def head(self, key: str, bucket: Optional[str] = None) -> Optional[ObjectInfo]:
        """HEAD an object; None when it does not exist."""
        try:
            answer = self.client.head_object(Bucket=bucket or self.bucket, Key=key)
        except botocore.exceptions.ClientError as err:
            if s3_error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}") from None
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}") from None
        return ObjectInfo(
            key=key,
            size=int(answer.get("ContentLength", 0)),
            etag=str(answer.get("ETag", "")).strip('"'),
            metadata={k.lower(): v for k, v in (answer.get("Metadata") or {}).items()},
            content_type=str(answer.get("ContentType", "")),
        )

    def get_bytes(self, key: str, bucket: Optional[str] = None, limit: int = 16 * 1024 * 1024) -> Optional[bytes]:
        """Read a small object whole; None when it does not exist."""
        try:
            answer = self.client.get_object(Bucket=bucket or self.bucket, Key=key)
        except botocore.exceptions.ClientError as err:
            if s3_error_code(err) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return None
            raise StorageError(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}") from None
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}") from None
        if int(answer.get("ContentLength", 0)) > limit:
            answer["Body"].close()
            raise StorageError(f"s3://{bucket or self.bucket}/{key} is larger than {limit} bytes")
        data: bytes = answer["Body"].read()
        return data

    def put_bytes(self, key: str, data: bytes, content_type: str, metadata: Dict[str, str]) -> str:
        """Store a small object in one request, with Content-MD5 so S3 checks the bytes; returns the ETag."""
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata=metadata,
                ContentMD5=content_md5(data),
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(f"cannot write s3://{self.bucket}/{key}: {describe_s3_error(err)}") from None
        return str(answer.get("ETag", "")).strip('"')

    def replace_metadata(self, key: str, content_type: str, metadata: Dict[str, str], size: int) -> None:
        """Rewrite an object's metadata in place with a server-side copy (no bytes pass through the client)."""
        source = {"Bucket": self.bucket, "Key": key}
        extra = {"ContentType": content_type, "Metadata": metadata, "MetadataDirective": "REPLACE"}
        try:
            try:
                # Ceph RGW copies in place by reference, at any size (0.014 s for 6 GiB,
                # docs/ceph-findings.md); AWS refuses single copies above 5 GiB.
                self.client.copy_object(CopySource=source, Bucket=self.bucket, Key=key, **extra)
            except botocore.exceptions.ClientError as err:
                if size <= MAX_SINGLE_COPY or s3_error_code(err) not in ("InvalidRequest", "EntityTooLarge"):
                    raise
                from boto3.s3.transfer import TransferConfig

                self.client.copy(
                    source,
                    self.bucket,
                    key,
                    ExtraArgs=extra,
                    Config=TransferConfig(multipart_chunksize=1024**3, multipart_threshold=MAX_SINGLE_COPY),
                )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(f"cannot set metadata on s3://{self.bucket}/{key}: {describe_s3_error(err)}") from None

    def delete(self, key: str) -> None:
        """Delete one object (absent objects are fine)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(f"cannot delete s3://{self.bucket}/{key}: {describe_s3_error(err)}") from None

    def list_keys(self, prefix: str) -> List[str]:
        """Keys under ``prefix``."""
        keys: List[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(f"cannot list s3://{self.bucket}/{prefix}: {describe_s3_error(err)}") from None
        return keys

    def list_multipart_uploads(self, prefix: str) -> List[Dict[str, str]]:
        """Unfinished multipart uploads under ``prefix`` as ``{"Key", "UploadId"}``."""
        uploads: List[Dict[str, str]] = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                uploads.extend({"Key": u["Key"], "UploadId": u["UploadId"]} for u in page.get("Uploads", []))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(
                f"cannot list uploads under s3://{self.bucket}/{prefix}: {describe_s3_error(err)}"
            ) from None
        return uploads

    def abort_multipart_uploads(self, prefix: str) -> List[str]:
        """Abort every unfinished multipart upload under ``prefix``; returns the keys that had one."""
        aborted = []
        for upload in self.list_multipart_uploads(prefix):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            except botocore.exceptions.ClientError as err:
                if s3_error_code(err) != "NoSuchUpload":
                    raise StorageError(
                        f"cannot abort the upload of s3://{self.bucket}/{upload['Key']}: {describe_s3_error(err)}"
                    ) from None
            aborted.append(upload["Key"])
        return aborted
