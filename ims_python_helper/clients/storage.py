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

from ..errors import ConfigError, StorageError, VerificationError, s3_failure
from . import sendfile
from .defaults import DEFAULT_ADDRESSING_STYLE, DEFAULT_CHECKSUM_MODE
from .redact import SECRETS, redact
from .retrylog import failure_reason
from .s3model import botocore_session
from .s3retry import install_s3_retries, wrapped_error
from .transport import DEFAULT_TIMEOUT, check_url

if TYPE_CHECKING:
    from .deadline import Deadline

LOGGER = logging.getLogger(__name__)

#: S3 refuses a single CopyObject above this size; larger copies go part by part.
MAX_SINGLE_COPY = 5 * 1024**3
#: Part size of such a copy.
COPY_PART_SIZE = 1024**3
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
    checksum_mode: str = DEFAULT_CHECKSUM_MODE
    addressing_style: str = DEFAULT_ADDRESSING_STYLE
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


def connection_arguments(settings: S3Settings) -> Dict[str, Any]:
    """Where and as whom boto3 connects: the same for the client and for a resource built on it."""
    return {
        "endpoint_url": settings.endpoint or None,
        "aws_access_key_id": settings.access_key or None,
        "aws_secret_access_key": settings.secret_key or None,
        "verify": settings.verify,
        "region_name": "us-east-1",
    }


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
        s3={"addressing_style": settings.addressing_style, "payload_signing_enabled": SIGN_PAYLOAD},
        request_checksum_calculation=settings.checksum_mode,
        response_checksum_validation=settings.checksum_mode,
        user_agent_extra="ims-python-helper",
    )
    try:
        client = boto3.session.Session(botocore_session=botocore_session()).client(
            "s3", config=config, **connection_arguments(settings)
        )
    except ValueError as err:
        raise ConfigError(f"S3 endpoint {settings.endpoint!r} is not usable: {redact(str(err))}") from None
    client.meta.events.register("before-sign.s3", _add_content_md5)
    sendfile.install(client)  # before the first request makes a connection pool
    install_s3_retries(client, settings.max_attempts, settings.max_pool_connections, deadline)
    return client


def check_endpoint(endpoint: Optional[str]) -> None:
    """Refuse an S3 endpoint that is not an http(s) URL with a host (None means AWS's own)."""
    if endpoint:
        check_url(endpoint, "S3 endpoint", example="https://rgw.example")


#: Request bodies are never SHA-256-signed, not even over plain HTTP: every body carries a Content-MD5
#: instead, which SigV4 signs and the server checks (``_add_content_md5``; part uploads get theirs from
#: ``publish.parts``). The same checking at less cost: the part md5s are needed anyway for
#: the ETag check, and the server computes them anyway for the ETag (BENCHMARKS.md).
SIGN_PAYLOAD = False


def _add_content_md5(request: Any, **_kwargs: Any) -> None:
    """botocore ``before-sign`` hook: a request body without a checksum gets its Content-MD5.

    With unsigned payloads this is what lets the server check every byte: the
    header is signed with the others, so it cannot be changed on the way either.
    Part uploads and small PUTs bring their own; this covers the rest (the
    CompleteMultipartUpload list, for one).
    """
    body = request.body
    headers = request.headers
    if (
        not body
        or "Content-MD5" in headers
        or any(h.lower().startswith(("x-amz-checksum-", "x-amz-trailer")) for h in headers)
    ):
        return
    if isinstance(body, (bytes, bytearray)):
        headers["Content-MD5"] = content_md5(bytes(body))
    elif hasattr(body, "seek") and hasattr(body, "tell"):
        start = body.tell()
        digest = hashlib.md5()
        for block in iter(lambda: body.read(1024 * 1024), b""):
            digest.update(block)
        body.seek(start)
        headers["Content-MD5"] = md5_header(digest.digest())


def s3_error_code(err: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for other errors)."""
    if isinstance(err, botocore.exceptions.ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def describe_s3_error(err: BaseException) -> str:
    """A short, secret-free reason for a botocore failure."""
    cause = wrapped_error(err) or err
    if isinstance(cause, StorageError):  # ours, e.g. raised by a request body (``sendfile.FileRange``)
        return redact(str(cause))
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        return redact(f"{error.get('Code', 'error')} (HTTP {status}) {error.get('Message', '')}".strip())
    if isinstance(err, botocore.exceptions.SSLError):
        return "TLS certificate verification failed; set --s3-ssl-verify to the right CA bundle"
    if isinstance(err, botocore.exceptions.ConnectionClosedError):
        return "S3 closed the connection before answering"
    if isinstance(err, botocore.exceptions.EndpointConnectionError):
        return failure_reason(err, None)  # "connection refused", "host name does not resolve", ...
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

        ca = f"certifi's CA bundle {where()} (botocore's default)"
    return (
        f"TLS: certificate verify failed for S3 at {host} using {ca}; "
        "pass the right CA bundle with --s3-ssl-verify (S3_SSL_VERIFY)"
    )


def content_md5(data: bytes) -> str:
    """The base64 Content-MD5 header value for ``data``."""
    return md5_header(hashlib.md5(data).digest())


def md5_header(digest: bytes) -> str:
    """The base64 Content-MD5 header value for an md5 ``digest`` already taken."""
    return base64.b64encode(digest).decode("ascii")


class S3Storage:
    """Object operations on one bucket."""

    def __init__(self, settings: S3Settings, client: Any = None, deadline: Optional[Deadline] = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._given_client = client is not None
        self.client = client if client is not None else make_s3_client(settings, deadline)
        self.deadline = deadline
        #: A refused single copy above this size is done in parts of ``copy_part_size`` (tests lower both).
        self.max_single_copy = MAX_SINGLE_COPY
        self.copy_part_size = COPY_PART_SIZE
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
            raise s3_failure(f"cannot check S3 bucket {self.bucket!r}: {describe_s3_error(err)}", err) from None
        except botocore.exceptions.SSLError:
            raise StorageError(s3_tls_failure_message(self.settings)) from None
        except botocore.exceptions.BotoCoreError as err:
            raise s3_failure(f"cannot reach S3 at {self.settings.endpoint}: {describe_s3_error(err)}", err) from None

    def head(self, key: str, bucket: Optional[str] = None) -> Optional[ObjectInfo]:
        """HEAD an object; None when it does not exist."""
        try:
            answer = self.client.head_object(Bucket=bucket or self.bucket, Key=key)
        except botocore.exceptions.ClientError as err:
            if s3_error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise s3_failure(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}", err) from None
        except botocore.exceptions.BotoCoreError as err:
            raise s3_failure(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}", err) from None
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
            raise s3_failure(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}", err) from None
        except botocore.exceptions.BotoCoreError as err:
            raise s3_failure(f"cannot read s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}", err) from None
        if int(answer.get("ContentLength", 0)) > limit:
            answer["Body"].close()
            raise StorageError(f"s3://{bucket or self.bucket}/{key} is larger than {limit} bytes")
        data: bytes = answer["Body"].read()
        return data

    def presigned_get(self, key: str, bucket: Optional[str] = None, expires: int = 3600) -> str:
        """A GET URL of one object, signed for ``expires`` seconds (for the ranged download engine)."""
        try:
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket or self.bucket, "Key": key}, ExpiresIn=expires
            )
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(
                f"cannot sign a GET of s3://{bucket or self.bucket}/{key}: {describe_s3_error(err)}"
            ) from None
        return url

    def put_bytes(self, key: str, data: bytes, content_type: str, metadata: Dict[str, str]) -> str:
        """Store a small object in one request, with Content-MD5 so S3 checks the bytes; returns the ETag.

        The ETag in the answer must be the md5 of ``data`` (``VerificationError`` otherwise).
        """
        return self.put_body(key, data, hashlib.md5(data).digest(), content_type, metadata)

    def put_body(self, key: str, body: Any, md5: bytes, content_type: str, metadata: Dict[str, str]) -> str:
        """Store ``body`` (bytes, or a ``sendfile.FileRange`` of a file) in one request whose Content-MD5 is ``md5``.

        The server checks the bytes it receives against ``md5``, and the ETag in
        its answer must be ``md5`` (``VerificationError`` otherwise); returns it.
        """
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata,
                ContentMD5=md5_header(md5),
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise s3_failure(f"cannot write s3://{self.bucket}/{key}: {describe_s3_error(err)}", err) from None
        etag = str(answer.get("ETag", "")).strip('"')
        if etag != md5.hex():
            # A single PUT's ETag is the md5 of what the server stored: anything else is not what was sent.
            raise VerificationError(
                f"s3://{self.bucket}/{key} was stored with ETag {etag or 'none'}, "
                f"not {md5.hex()}, the md5 of the bytes sent"
            )
        return etag

    def replace_metadata(self, key: str, content_type: str, metadata: Dict[str, str], size: int) -> bool:
        """Rewrite an object's metadata in place with a server-side copy (no bytes pass through the client).

        Returns True when the server refused a single copy of an object above
        ``max_single_copy`` and it was copied part by part (``copy_part_size``).
        """
        source = {"Bucket": self.bucket, "Key": key}
        extra = {"ContentType": content_type, "Metadata": metadata, "MetadataDirective": "REPLACE"}
        try:
            try:
                # Ceph RGW copies in place by reference, at any size (0.014 s for 6 GiB,
                # docs/ceph-findings.md); AWS refuses single copies above 5 GiB.
                self.client.copy_object(CopySource=source, Bucket=self.bucket, Key=key, **extra)
                return False
            except botocore.exceptions.ClientError as err:
                if size <= self.max_single_copy or s3_error_code(err) not in ("InvalidRequest", "EntityTooLarge"):
                    raise
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_chunksize=self.copy_part_size, multipart_threshold=self.max_single_copy
                )
                self.client.copy(source, self.bucket, key, ExtraArgs=extra, Config=config)
                return True
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise s3_failure(
                f"cannot set metadata on s3://{self.bucket}/{key}: {describe_s3_error(err)}", err
            ) from None

    def delete(self, key: str) -> None:
        """Delete one object (absent objects are fine)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise s3_failure(f"cannot delete s3://{self.bucket}/{key}: {describe_s3_error(err)}", err) from None

    def list_keys(self, prefix: str) -> List[str]:
        """Keys under ``prefix``."""
        keys: List[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise s3_failure(f"cannot list s3://{self.bucket}/{prefix}: {describe_s3_error(err)}", err) from None
        return keys

    def list_multipart_uploads(self, prefix: str) -> List[Dict[str, str]]:
        """Unfinished multipart uploads under ``prefix`` as ``{"Key", "UploadId"}``."""
        uploads: List[Dict[str, str]] = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                uploads.extend({"Key": u["Key"], "UploadId": u["UploadId"]} for u in page.get("Uploads", []))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise s3_failure(
                f"cannot list uploads under s3://{self.bucket}/{prefix}: {describe_s3_error(err)}", err
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
                    raise s3_failure(
                        f"cannot abort the upload of s3://{self.bucket}/{upload['Key']}: {describe_s3_error(err)}", err
                    ) from None
            aborted.append(upload["Key"])
        return aborted
