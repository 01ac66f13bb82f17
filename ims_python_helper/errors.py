"""The exceptions the library raises; the CLI maps each to a message and an exit code."""

from __future__ import annotations

import json
import time
from enum import IntEnum
from typing import Any, Dict, List, Optional

import botocore.exceptions
import requests


class ExitStatus(IntEnum):
    """Every exit status the CLI uses."""

    SUCCESS = 0
    #: The work failed (IMS, S3, credentials, input files).
    FAILURE = 1
    #: A flag, argument or setting has the wrong shape.
    USAGE = 2


class ImsHelperError(Exception):
    """Base of every error this package raises on purpose.

    ``str(error)`` is a single line that names the problem and, where it can,
    what to do about it. It never contains a secret.
    """

    #: Exit status the CLI uses for this kind of error.
    exit_code = ExitStatus.FAILURE


class UsageError(ImsHelperError):
    """A flag, argument or setting has the wrong shape (CLI exit status 2)."""

    exit_code = ExitStatus.USAGE


class ConfigError(ImsHelperError):
    """A required setting (URL, credential, bucket) is missing or unusable."""


class InputError(ImsHelperError):
    """An artifact, name or id given by the caller cannot be used."""


class AuthError(ImsHelperError):
    """The token endpoint refused the credentials or could not be reached."""


class TransportError(ImsHelperError):
    """A server could not be reached, timed out, or answered with something unreadable."""


class DeadlineExceeded(TransportError):
    """The run's total deadline passed before the work was done."""


# Callers written for the earlier client catch the requests and botocore exceptions it let through
# (``except requests.RequestException``, ``except botocore.exceptions.BotoCoreError``), so the errors
# below are those too. requests' exceptions derive from OSError: its constructor takes the message
# alone here, which keeps ``str(err)`` and ``err.args`` as they are for every ImsHelperError.


class ImsConnectionError(TransportError, requests.exceptions.ConnectionError):
    """IMS could not be reached (refused, timed out, TLS failed); also a ``requests`` ``ConnectionError``."""


class ImsAnswerError(TransportError, requests.exceptions.RequestException):
    """IMS answered with something unreadable (not JSON, too large, cut off); also a ``RequestException``."""


class ImsApiError(ImsHelperError, requests.exceptions.HTTPError):
    """IMS answered a request with an error status; also a ``requests`` ``HTTPError``.

    ``status`` is the HTTP status and ``detail`` the RFC 7807 problem detail
    (or a short excerpt of a non-JSON body); ``response`` is IMS's answer
    (``response.status_code``, ``response.text``) when there was one.
    """

    def __init__(
        self, method: str, path: str, status: int, detail: str, response: Optional[requests.Response] = None
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        # The ignore is for types-requests before 2.32 (the newest on Python 3.9), where response is required.
        super().__init__(f"IMS {method} {path} failed with HTTP {status}: {detail}", response=response)  # type: ignore[arg-type]

    def __reduce__(self) -> Any:
        # OSError would rebuild from the message alone; the answer travels without its request (hooks, session).
        return type(self), (self.method, self.path, self.status, self.detail, detached_response(self.response))


class RefusedInput(InputError, requests.exceptions.HTTPError):
    """Input IMS would refuse, refused before sending, in the family IMS's refusal was.

    Earlier clients sent it and met IMS's refusal as a ``requests`` ``HTTPError``
    (which callers' loops catch); so is this, with ``response`` a problem+json
    answer of ``status`` whose detail is the message.
    """

    status = 422
    title = "Unprocessable Entity"

    def __init__(self, message: str) -> None:
        super().__init__(message, response=problem_response(self.status, self.title, message))

    def __reduce__(self) -> Any:
        return type(self), (str(self),)


class InvalidIdError(RefusedInput):
    """An IMS id the caller gave is not a UUID (IMS answered 404 for it)."""

    status = 404
    title = "Not Found"


def problem_response(status: int, title: str, detail: str) -> requests.Response:
    """An RFC 7807 answer made here, for a refusal found before the request was sent."""
    answer = requests.Response()
    answer.status_code, answer.reason = status, title
    answer.headers["Content-Type"] = "application/problem+json"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    answer._content = json.dumps(body).encode()
    answer.encoding = "utf-8"
    return answer


def detached_response(response: Optional[requests.Response]) -> Optional[requests.Response]:
    """A copy of an already read answer (status, headers, body) that can be pickled: no request, no connection."""
    if response is None:
        return None
    copy = requests.Response()
    copy.status_code = response.status_code
    content = getattr(response, "_content", None)
    copy._content = content if isinstance(content, bytes) else b""
    copy.headers = requests.structures.CaseInsensitiveDict(response.headers)
    copy.url, copy.reason, copy.encoding = response.url, response.reason, response.encoding
    return copy


class StorageError(ImsHelperError, botocore.exceptions.BotoCoreError):
    """An S3 operation failed; also a ``botocore.exceptions.BotoCoreError``.

    When S3 answered with an error code the error is an ``S3ResponseError``,
    a ``ClientError`` too: ``s3_failure`` picks the class from the botocore
    error it wraps.
    """

    fmt = "{message}"

    def __init__(self, message: str = "") -> None:
        # BotoCoreError formats ``fmt`` with its keywords and keeps them for pickling: args stay (message,).
        botocore.exceptions.BotoCoreError.__init__(self, message=message)


class UploadCancelled(StorageError):
    """An upload stopped because another artifact's upload failed (that failure is the one to report)."""


class S3ResponseError(StorageError, botocore.exceptions.ClientError):
    """S3 answered with an error code: a ``StorageError`` that is also a botocore ``ClientError``."""

    def __init__(
        self, message: str = "", response: Optional[Dict[str, Any]] = None, operation_name: Optional[str] = None
    ) -> None:
        self.response = dict(response or {})
        self.operation_name = operation_name or ""
        super().__init__(message)

    def __reduce__(self) -> Any:
        return type(self), (str(self), self.response, self.operation_name)


def s3_failure(message: str, cause: BaseException) -> StorageError:
    """The ``StorageError`` for an S3 call that failed with the botocore error ``cause``.

    An error code from S3 (a ``ClientError``) makes an ``S3ResponseError``
    with its ``response`` and ``operation_name``, so callers' ``except
    ClientError`` still catches it; anything else a plain ``StorageError``.
    """
    if isinstance(cause, botocore.exceptions.ClientError):
        return S3ResponseError(message, dict(cause.response), cause.operation_name)
    return StorageError(message)


class VerificationError(StorageError):
    """An uploaded object does not match the local file (size, md5 or metadata)."""


class CleanupError(ImsHelperError):
    """A failed run could not remove everything it created.

    ``original`` is the error that made the run fail; ``leftovers`` names each
    image record, S3 key or multipart upload that is still there.
    """

    def __init__(self, original: BaseException, leftovers: List[str]) -> None:
        self.original = original
        self.leftovers = list(leftovers)
        super().__init__(f"{original} (cleanup incomplete; still present: {', '.join(self.leftovers)})")


class ImsImagesExistWithName(ImsHelperError):
    """Images with artifacts already carry the requested name.

    Kept with its historical name and arguments because callers catch it.
    """

    def __init__(self, name: str, image_records: Optional[List[Dict[str, Any]]] = None, *args: Any) -> None:
        self.name = name
        self.image_records = list(image_records or [])
        ids = ", ".join(str(r.get("id")) for r in self.image_records)
        super().__init__(f'images with name "{name}" already exist in IMS (ID(s): {ids})', *args)


class Interrupted(ImsHelperError):
    """SIGINT or SIGTERM arrived: the run stops and cleans up like after any failure, in a fixed time.

    ``at`` is when it arrived (``time.monotonic()``); ``pending`` names what
    cleanup has not removed yet (kept up to date while it runs, so whoever cuts
    cleanup short can say what is left); ``cleaned`` is set once it removed all.
    """

    #: Seconds after the signal by which cleanup ends (every request in it included).
    CLEANUP_SECONDS = 12.0
    #: Of those, the most spent waiting for the uploads in flight to stop.
    WIND_DOWN_SECONDS = 4.0

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        self.at = time.monotonic()
        self.pending: List[str] = []
        self.cleaned = False
        super().__init__(f"interrupted by {signal_name}")

    def __str__(self) -> str:
        done = "; what this run created was removed" if self.cleaned else ""
        return f"interrupted by {self.signal_name}{done}"
