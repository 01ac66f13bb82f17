"""The exceptions the library raises; the CLI maps each to a message and an exit code."""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any, Dict, List, Optional


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


class ImsApiError(ImsHelperError):
    """IMS answered a request with an error status.

    ``status`` is the HTTP status and ``detail`` the RFC 7807 problem detail
    (or a short excerpt of a non-JSON body).
    """

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        super().__init__(f"IMS {method} {path} failed with HTTP {status}: {detail}")


class StorageError(ImsHelperError):
    """An S3 operation failed."""


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
