"""The download engine: parallel ranged GETs, the md5 taken from the bytes as they arrive, a failed range resumed alone.

The first request is a GET of the first part with a ``Range`` header (a
presigned S3 URL is signed for GET only, so a HEAD would be refused). A 206
answer tells the object's size and that ranges work: the file is made at its
full size and the parts are fetched by up to ``concurrency`` threads, each
writing its bytes at their offset (``os.pwrite``) as they arrive. A 200 answer
means no range support: that one stream is written front to back.

The md5 is taken from the bytes received, never by reading the file again:
the parts are handed to the hasher in order, and a part that finishes early
waits in memory for the ones before it. Parts are started at most
``concurrency`` ahead of the hasher, so memory stays below about
``part_size * (concurrency + 1)``.

A range that fails (connection cut, short body, 5xx) is asked for again from
the first byte it has not received yet, with backoff, at most ``attempts``
times, never past the deadline. Every part after the first asks with
``If-Match`` on the first answer's ETag, so an object replaced mid-download
fails instead of mixing two versions.

The file is written beside its final path under a temporary name and renamed
into place only when every byte is there and the md5 matches; on any failure
it is removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple, Union

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .errors import DeadlineExceeded, ImsHelperError, TransportError
from .progress import Progress
from .redact import redact
from .session import Deadline
from .transport import check_url, describe_request_error, tls_failure_message

LOGGER = logging.getLogger(__name__)
MIB = 1024 * 1024

DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_CONCURRENCY = 8
#: How often one range (or the single stream) is tried before the download fails.
DEFAULT_ATTEMPTS = 5
#: Bytes handed from the socket per read; large reads keep the per-byte CPU cost low.
READ_CHUNK = 1 * MIB
#: Statuses worth asking again for (gateways and overloaded servers).
RETRY_STATUSES = (429, 500, 502, 503, 504)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(TransportError):
    """A download failed: the server refused it, or it kept failing after the retries."""


class ChecksumMismatch(ImsHelperError):
    """The downloaded bytes do not have the md5 the caller expected (the file is removed)."""


@dataclass(frozen=True)
class DownloadOptions:
    """How a download runs: part size, parallel ranges, attempts per range, TLS verification."""

    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    attempts: int = DEFAULT_ATTEMPTS
    #: Seconds to wait for a connection or for the next bytes of an answer.
    timeout: float = 60.0
    #: requests' ``verify``: True (system store), a CA bundle path, or False to switch verification off.
    verify: Union[bool, str] = True
    #: First backoff wait in seconds (doubled per attempt, with jitter).
    backoff: float = 0.5
    #: Parts started ahead of the hasher (0: ``concurrency``); each may wait in memory for the ones before it.
    window: int = 0

    def __post_init__(self) -> None:
        if self.part_size < 64 * 1024:
            raise ValueError("part_size must be at least 64 KiB")
        if self.concurrency < 1 or self.attempts < 1:
            raise ValueError("concurrency and attempts must be at least 1")

    @property
    def memory_bound(self) -> int:
        """Most bytes held in memory at once: the parts waiting for the hasher and the one being hashed."""
        return self.part_size * (self.window_parts + 1)

    @property
    def window_parts(self) -> int:
        """Parts started ahead of the hasher."""
        return max(self.window, self.concurrency)


@dataclass(frozen=True)
class DownloadResult:
    """What was downloaded: where, how many bytes, their md5, and whether ranges were used."""

    path: str
    size: int
    md5: str
    ranged: bool
    #: Ranges (or streams) asked for again after a failure.
    retries: int


def _body(response: requests.Response) -> Iterator[bytes]:
    """The answer's bytes as they arrive; a cut-off answer still yields what came before the cut.

    ``iter_content`` drops the bytes of a read that ends in a broken connection;
    urllib3's ``read1`` hands over whatever has arrived, so a resumed range asks
    for the missing bytes only.
    """
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(READ_CHUNK)
        return
    while True:
        data = read1(READ_CHUNK)
        if not data:
            return
        yield data


class _Cancelled(Exception):
    """Another part failed; this one stops."""


class _RangeFailure(Exception):
    """One attempt at a range failed; ``retry`` says whether asking again can help."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


#: Failures of one attempt that asking again may cure (raw urllib3 reads raise urllib3's own errors).
_TRANSIENT = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, _RangeFailure)


def _parse_content_range(value: str) -> Tuple[int, int, Optional[int]]:
    match = _CONTENT_RANGE.match(value.strip())
    if not match:
        raise _RangeFailure(f"the server answered a range request with Content-Range {value!r}", retry=False)
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


class Downloader:
    """Downloads one URL to one file; see the module docstring for how."""

    def __init__(
        self,
        url: str,
        path: Union[str, os.PathLike],
        options: Optional[DownloadOptions] = None,
        progress: Optional[Progress] = None,
        deadline: Optional[Deadline] = None,
        name: Optional[str] = None,
        session: Optional[requests.Session] = None,
    ) -> None:
        check_url(url, "download URL")
        self.url = url
        self.path = os.fspath(path)
        self.options = options or DownloadOptions()
        self.progress = progress or Progress()
        self.deadline = deadline or Deadline(None)
        self.name = name or os.path.basename(self.path)
        self._own_session = session is None
        self.session = session or requests.Session()
        if self._own_session:
            # Retries are ours (per range, resuming); urllib3's would restart a range from its first byte.
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.options.concurrency + 1, max_retries=0)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
        self._window = self.options.window_parts
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._retries = 0
        self._etag: Optional[str] = None
        # The URL carries a signature: only its redacted form is ever shown.
        self._shown_url = redact(url)

    # -- public ---------------------------------------------------------------

    def run(self, expected_md5: Optional[str] = None) -> DownloadResult:
        """Download, check ``expected_md5`` when given, and move the file into place; raises on failure."""
        expected = expected_md5.strip().lower() if expected_md5 else None
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise DownloadError(f"cannot download to {self.path}: directory {directory} does not exist")
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".download", dir=directory)
        succeeded = False
        try:
            try:
                size, md5, ranged = self._download_to(fd)
            finally:
                os.close(fd)
            if expected and md5 != expected:
                raise ChecksumMismatch(
                    f"{self.name}: md5 of the downloaded bytes is {md5}, expected {expected} "
                    "(DOWNLOAD_MD5SUM); the file was removed"
                )
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
            succeeded = True
            return DownloadResult(self.path, size, md5, ranged, self._retries)
        finally:
            if not succeeded:
                self._cancel.set()
                if os.path.lexists(temp):
                    os.unlink(temp)
            self.progress.close(succeeded)
            if self._own_session:
                self.session.close()

    # -- the two ways ---------------------------------------------------------------

    def _download_to(self, fd: int) -> Tuple[int, str, bool]:
        part = self.options.part_size
        attempt = 1
        while True:
            response = self._get(f"bytes=0-{part - 1}", first=True)
            if response.status_code in (200, 206, 416):
                break
            response.close()
            try:
                self._check_status(response, 206)
            except _RangeFailure as err:
                self._give_up_or_wait(err, attempt, "the first request")
                attempt += 1
        if response.status_code == 200:
            LOGGER.info("%s: the server does not serve byte ranges; downloading in one stream", self.name)
            return self._single_stream(fd, response)
        if response.status_code == 416:
            # An empty object has no byte 0 to ask for.
            response.close()
            return self._single_stream(fd, self._get(None, first=True))
        try:
            start, end, total = _parse_content_range(response.headers.get("Content-Range", ""))
        except _RangeFailure as err:
            response.close()
            raise DownloadError(f"downloading {self.name} from {self._shown_url} failed: {err}") from None
        if start != 0 or total is None:
            response.close()
            raise DownloadError(f"{self.name}: the server answered bytes 0- with range {start}-{end}/{total}")
        self._etag = response.headers.get("ETag")
        os.ftruncate(fd, total)
        ranges = [(offset, min(offset + part, total) - 1) for offset in range(0, total, part)]
        self.progress.start(self.name, total)
        LOGGER.info(
            "%s: downloading %d bytes in %d ranges, up to %d at a time",
            self.name,
            total,
            len(ranges),
            self.options.concurrency,
        )
        md5 = hashlib.md5()
        futures: Dict[int, Future] = {}
        next_submit = 0
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="download") as pool:
            try:
                for index in range(len(ranges)):
                    # Keep at most `concurrency` parts ahead of the hasher: that bounds the memory.
                    while next_submit < len(ranges) and next_submit < index + self._window:
                        first = response if next_submit == 0 else None
                        futures[next_submit] = pool.submit(self._fetch_range, fd, ranges[next_submit], first)
                        next_submit += 1
                    chunks = futures.pop(index).result()
                    for chunk in chunks:
                        md5.update(chunk)
                    del chunks
            except BaseException:
                self._cancel.set()
                for future in futures.values():
                    future.cancel()
                response.close()
                raise
        self.progress.finish(self.name)
        return total, md5.hexdigest(), True

    def _single_stream(self, fd: int, response: requests.Response) -> Tuple[int, str, bool]:
        """No ranges: the whole body in one stream, started again from byte 0 when it fails."""
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else 0
        self.progress.start(self.name, total)
        attempt = 1
        while True:
            md5 = hashlib.md5()
            received = 0
            try:
                self._check_status(response, 200)
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                for chunk in response.iter_content(READ_CHUNK):
                    os.write(fd, chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    self.progress.advance(self.name, len(chunk))
                if total and received != total:
                    raise _RangeFailure(f"the answer ended after {received} of {total} bytes")
                self.progress.finish(self.name)
                return received, md5.hexdigest(), False
            except _TRANSIENT as err:
                response.close()
                self.progress.advance(self.name, -received)
                self._give_up_or_wait(err, attempt, "the download")
                attempt += 1
                with self._lock:
                    self._retries += 1
                response = self._get(None)

    # -- one range ------------------------------------------------------------------

    def _fetch_range(self, fd: int, span: Tuple[int, int], response: Optional[requests.Response]) -> List[bytes]:
        """Fetch bytes ``span`` (inclusive), writing them at their offset; returns them for the hasher."""
        start, end = span
        chunks: List[bytes] = []
        pending: List[bytes] = []
        received = 0  # bytes of the range written so far
        pending_bytes = 0

        def flush() -> None:
            # Bytes are gathered to about READ_CHUNK before a write: fewer system calls than one per socket read.
            nonlocal received, pending_bytes
            if pending:
                block = b"".join(pending)
                pending.clear()
                pending_bytes = 0
                os.pwrite(fd, block, start + received)
                chunks.append(block)
                received += len(block)

        attempt = 1
        while True:
            if self._cancel.is_set():
                raise _Cancelled()
            offset = start + received
            try:
                if response is None:
                    response = self._get(f"bytes={offset}-{end}")
                self._check_status(response, 206)
                got_start, got_end, _ = _parse_content_range(response.headers.get("Content-Range", ""))
                if got_start != offset or got_end != end:
                    raise _RangeFailure(f"asked for bytes {offset}-{end}, got {got_start}-{got_end}", retry=False)
                gathered = 0
                wanted = end + 1 - offset
                for data in _body(response):
                    if self._cancel.is_set():
                        raise _Cancelled()
                    data = data[: wanted - gathered]
                    pending.append(data)
                    pending_bytes += len(data)
                    gathered += len(data)
                    self.progress.advance(self.name, len(data))
                    if gathered >= wanted:
                        break
                    if pending_bytes >= READ_CHUNK:
                        flush()
                flush()
                response.close()
                if start + received <= end:
                    raise _RangeFailure(f"the answer for bytes {offset}-{end} ended after {start + received - offset}")
                return chunks
            except _TRANSIENT as err:
                # What did arrive is good: keep it, and ask only for the rest.
                flush()
                if response is not None:
                    response.close()
                response = None
                self._give_up_or_wait(err, attempt, f"bytes {start}-{end}")
                attempt += 1
                with self._lock:
                    self._retries += 1
                LOGGER.info("%s: resuming bytes %d-%d from byte %d", self.name, start, end, start + received)

    # -- plumbing -------------------------------------------------------------------

    def _get(self, byte_range: Optional[str], first: bool = False) -> requests.Response:
        """One GET of ``byte_range`` (None: the whole object); the first request is retried here."""
        headers = {"Accept-Encoding": "identity"}
        if byte_range:
            headers["Range"] = byte_range
        if self._etag and not first:
            headers["If-Match"] = self._etag
        attempt = 1
        while True:
            self.deadline.check(f"downloading {self.name}")
            try:
                return self.session.get(
                    self.url,
                    headers=headers,
                    stream=True,
                    timeout=self.deadline.cap(self.options.timeout),
                    verify=self.options.verify,
                )
            except requests.exceptions.SSLError as err:
                raise DownloadError(tls_failure_message(self.url, self.options.verify, err)) from None
            except requests.exceptions.RequestException as err:
                # Later requests are retried by their range's loop, which knows what was received.
                if not first:
                    raise
                self._give_up_or_wait(err, attempt, "the first request")
                attempt += 1

    def _check_status(self, response: requests.Response, wanted: int) -> None:
        status = response.status_code
        if status == wanted:
            return
        if status in RETRY_STATUSES:
            raise _RangeFailure(f"HTTP {status}")
        if status == 412:
            raise _RangeFailure("the object changed during the download (ETag no longer matches)", retry=False)
        if status in (401, 403):
            raise _RangeFailure(f"HTTP {status}: access refused (the presigned URL may have expired)", retry=False)
        if status == 404:
            raise _RangeFailure("HTTP 404: no such object", retry=False)
        raise _RangeFailure(f"unexpected HTTP {status}", retry=False)

    def _give_up_or_wait(self, err: BaseException, attempt: int, what: str) -> None:
        """Raise when ``err`` cannot be helped or the attempts are used up; else sleep the backoff."""
        if self._cancel.is_set():
            raise _Cancelled()
        if isinstance(err, requests.exceptions.RequestException):
            reason = describe_request_error(err)
        elif isinstance(err, urllib3.exceptions.ProtocolError):
            reason = "the answer was cut off before its end"
        elif isinstance(err, urllib3.exceptions.ReadTimeoutError):
            reason = "timed out waiting for an answer"
        elif isinstance(err, _RangeFailure):
            reason = str(err)
        else:
            reason = type(err).__name__
        retry = not isinstance(err, _RangeFailure) or err.retry
        if not retry or attempt >= self.options.attempts:
            tries = "" if not retry else f" after {attempt} attempts"
            raise DownloadError(f"downloading {self.name} from {self._shown_url} failed{tries}: {reason}") from None
        wait = self.options.backoff * (2 ** (attempt - 1)) * (1 + random.random() / 2)
        left = self.deadline.remaining()
        if left is not None:
            if left <= 0:
                raise DeadlineExceeded(f"the deadline passed while downloading {self.name} ({reason})")
            wait = min(wait, left)
        LOGGER.warning("%s: %s failed (%s); trying again in %.1f s", self.name, what, reason, wait)
        time.sleep(wait)


def download_file(
    url: str,
    path: Union[str, os.PathLike],
    expected_md5: Optional[str] = None,
    options: Optional[DownloadOptions] = None,
    progress: Optional[Progress] = None,
    deadline: Optional[Deadline] = None,
    name: Optional[str] = None,
) -> DownloadResult:
    """Download ``url`` to ``path`` (ranged and parallel when the server allows), md5 checked when given.

    Raises ``DownloadError`` (or ``DeadlineExceeded``) when the download fails and
    ``ChecksumMismatch`` when the md5 differs; in every failure nothing is left at
    ``path`` or beside it.
    """
    return Downloader(url, path, options=options, progress=progress, deadline=deadline, name=name).run(expected_md5)
