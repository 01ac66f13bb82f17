"""One download's attempts: what a failed request means, whether to ask again, and the stop every range obeys.

``download.Downloader`` and the range threads of ``ranges.RangedDownload``
share one ``Attempts``: the backoff and the attempts per request, the run's
deadline, the count of requests asked again, and the signal that tells every
range to stop once one has failed. It sits below both, so neither needs the
other to retry.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from typing import Optional, Tuple

import requests
import urllib3.exceptions

from ..clients.deadline import Deadline
from ..clients.transport import describe_request_error
from ..errors import DeadlineExceeded, TransportError

LOGGER = logging.getLogger("ims_python_helper.pod.download")

#: Statuses worth asking again for (gateways and overloaded servers).
RETRY_STATUSES = (429, 500, 502, 503, 504)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(TransportError):
    """A download failed: the server refused it, or it kept failing after the retries."""


class Cancelled(Exception):
    """Another part failed; this one stops."""


class RangeFailure(Exception):
    """One attempt at a range failed; ``retry`` says whether asking again can help."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


#: Failures of one attempt that asking again may cure (urllib3's own reads raise urllib3's errors).
TRANSIENT = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, RangeFailure)


def parse_content_range(value: str) -> Tuple[int, int, Optional[int]]:
    """``(first byte, last byte, total or None)`` of a ``Content-Range`` header; ``RangeFailure`` when malformed."""
    match = _CONTENT_RANGE.match(value.strip())
    if not match:
        raise RangeFailure(f"the server answered a range request with Content-Range {value!r}", retry=False)
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def failure_reason(err: BaseException) -> str:
    """A short, secret-free reason for one failed attempt."""
    if isinstance(err, requests.exceptions.RequestException):
        return describe_request_error(err)
    if isinstance(err, urllib3.exceptions.ProtocolError):
        return "the answer was cut off before its end"
    if isinstance(err, urllib3.exceptions.ReadTimeoutError):
        return "timed out waiting for an answer"
    if isinstance(err, RangeFailure):
        return str(err)
    return type(err).__name__


def check_status(response: requests.Response, wanted: int) -> None:
    """Raise a ``RangeFailure`` (retryable or not, by status) unless ``response`` has status ``wanted``."""
    status = response.status_code
    if status == wanted:
        return
    if status in RETRY_STATUSES:
        raise RangeFailure(f"HTTP {status}")
    if status == 412:
        raise RangeFailure("the object changed during the download (ETag no longer matches)", retry=False)
    if status in (401, 403):
        raise RangeFailure(f"HTTP {status}: access refused (the presigned URL may have expired)", retry=False)
    if status == 404:
        raise RangeFailure("HTTP 404: no such object", retry=False)
    raise RangeFailure(f"unexpected HTTP {status}", retry=False)


class Attempts:
    """The retry policy of one download, shared by its requests: attempts, backoff, deadline and the stop."""

    def __init__(self, name: str, shown_url: str, attempts: int, backoff: float, deadline: Deadline) -> None:
        self.name = name
        #: The URL as messages may show it (a presigned URL's signature redacted).
        self.shown_url = shown_url
        self.attempts = attempts
        self.backoff = backoff
        self.deadline = deadline
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._retries = 0

    @property
    def retries(self) -> int:
        """Ranges (or streams) asked for again after a failure."""
        return self._retries

    def check_cancel(self) -> None:
        """Raise ``Cancelled`` when another part has failed."""
        if self._cancel.is_set():
            raise Cancelled()

    def cancel(self) -> None:
        """Tell every part to stop."""
        self._cancel.set()

    def count_retry(self) -> None:
        """One more range (or stream) asked for again."""
        with self._lock:
            self._retries += 1

    def give_up_or_wait(self, err: BaseException, attempt: int, what: str) -> None:
        """Raise when ``err`` cannot be helped or the attempts are used up; else sleep the backoff."""
        self.check_cancel()
        reason = failure_reason(err)
        retry = not isinstance(err, RangeFailure) or err.retry
        if not retry or attempt >= self.attempts:
            tries = "" if not retry else f" after {attempt} attempts"
            raise DownloadError(f"downloading {self.name} from {self.shown_url} failed{tries}: {reason}") from None
        wait = self.backoff * (2 ** (attempt - 1)) * (1 + random.random() / 2)
        left = self.deadline.remaining()
        if left is not None:
            if left <= 0:
                raise DeadlineExceeded(f"the deadline passed while downloading {self.name} ({reason})")
            wait = min(wait, left)
        LOGGER.warning("%s: %s failed (%s); trying again in %.1f s", self.name, what, reason, wait)
        time.sleep(wait)
