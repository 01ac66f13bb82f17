"""The download engine: parallel ranged GETs, the md5 taken from the bytes as they arrive, a failed range resumed alone.

The first request is a GET of the first part with a ``Range`` header (a
presigned S3 URL is signed for GET only, so a HEAD would be refused). A 206
answer tells the object's size and that ranges work: the file is made at its
full size and the parts are fetched by up to ``concurrency`` threads, each
reading its answer straight from the socket into a page-aligned buffer of its
own (one copy; no per-read ``bytes`` objects) and writing the bytes at their
offset (``os.pwrite``) as they arrive, with ``O_DIRECT`` where the file system
allows it (no second copy into the page cache; see ``FileWriter``). A 200
answer means no range support: that one stream is written front to back.

The md5 is taken from the bytes received, never by reading the file again
(``InOrderHasher``): after each read, the thread that received it hashes
whatever is next in file order, its own bytes or a part another thread
finished earlier; a part that finishes early waits in memory for the ones
before it. Parts are started at most ``window`` ahead of the hasher, so memory
stays below about ``part_size * (window + 1)``.

A range that fails (connection cut, short body, 5xx) is asked for again from
the first byte it has not received yet, with backoff, at most ``attempts``
times, never past the deadline. Every part after the first asks with
``If-Match`` on the first answer's ETag, so an object replaced mid-download
fails instead of mixing two versions.

The file is written beside its final path under a temporary name and renamed
into place only when every byte is there and the md5 matches; on any failure
it is removed.

Two other ways to run (``resume``): ``digest`` writes nothing and returns only
the size and md5 (``image verify``); ``fetch_into`` writes into a file the
caller owns, reading back the bytes a ``SpanLedger`` says an earlier run left
there and asking only for the rest (``image export``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import requests
from requests.adapters import HTTPAdapter

from ..clients.deadline import Deadline
from ..clients.defaults import MIB
from ..clients.redact import redact
from ..clients.transport import check_url, tls_failure_message
from ..errors import ImsHelperError
from ..progress import Progress
from .attempts import TRANSIENT, Attempts, DownloadError, RangeFailure, check_status, parse_content_range
from .http_body import body_reader, read_some
from .ranges import READ_CHUNK, RangedDownload, RangeJob, Span, pwrite_all
from .resume import SpanLedger

LOGGER = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 32 * MIB
#: Two streams of 32 MiB parts: on a quiet two-core machine a 1 GiB fetch took 2.2 to 2.8 s against 2.8 to 3.2 s
#: with four of 16 MiB, for the same CPU (BENCHMARKS.md, issue 20); with the window of three parts, memory
#: bound 32 x 4 = 128 MiB.
DEFAULT_CONCURRENCY = 2
#: How often one range (or the single stream) is tried before the download fails.
DEFAULT_ATTEMPTS = 5


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
    #: Parts started ahead of the hasher (0: ``concurrency + 1``, at least ``concurrency``); each may wait in
    #: memory for the ones before it.
    window: int = 0
    #: Write ranges with O_DIRECT where the file system allows: no copy into the page cache (see FileWriter).
    direct_io: bool = True

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
        """Parts started ahead of the hasher.

        One more than the ranges by default: a range that ends before the
        part ahead of it starts the next part at once, instead of waiting for
        that part to arrive and be hashed. With exactly as many as the ranges,
        they went in lock step, and a 1 GiB fetch sharing two CPUs with the
        server took 3.4 s instead of 2.7 (BENCHMARKS.md, issue 20).
        """
        return max(self.window, self.concurrency) if self.window else self.concurrency + 1


@dataclass(frozen=True)
class DownloadResult:
    """What was downloaded: where, how many bytes, their md5, and whether ranges were used."""

    path: str
    size: int
    md5: str
    ranged: bool
    #: Ranges (or streams) asked for again after a failure.
    retries: int


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
        self._etag: Optional[str] = None
        # The URL carries a signature: only its redacted form is ever shown.
        self._shown_url = redact(url)
        #: The retries, the backoff and the stop, shared with the range threads.
        self.attempts = Attempts(self.name, self._shown_url, self.options.attempts, self.options.backoff, self.deadline)

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
                size, md5, ranged = self._download_to(fd, temp)
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
            return DownloadResult(self.path, size, md5, ranged, self.attempts.retries)
        finally:
            if not succeeded:
                self.attempts.cancel()
                if os.path.lexists(temp):
                    os.unlink(temp)
            self.progress.close(succeeded)
            if self._own_session:
                self.session.close()

    def digest(self) -> DownloadResult:
        """Read the object through the engine into its md5 only: nothing is written anywhere (``path`` is unused)."""
        return self._run_in_place(-1, None)

    def fetch_into(self, fd: int, ledger: Optional[SpanLedger] = None) -> DownloadResult:
        """Download into the open file ``fd`` (at ``path``) in place, keeping what ``ledger`` says is there already.

        No temporary file and no rename: the caller owns the file, its name and
        what happens to it on failure (``admin.export`` keeps it to resume).
        """
        return self._run_in_place(fd, ledger)

    def _run_in_place(self, fd: int, ledger: Optional[SpanLedger]) -> DownloadResult:
        succeeded = False
        try:
            size, md5, ranged = self._download_to(fd, self.path, ledger)
            succeeded = True
            return DownloadResult(self.path if fd >= 0 else "", size, md5, ranged, self.attempts.retries)
        finally:
            if not succeeded:
                self.attempts.cancel()
            self.progress.close(succeeded)
            if self._own_session:
                self.session.close()

    # -- the first answer decides the way -------------------------------------------

    def _download_to(self, fd: int, temp: str, ledger: Optional[SpanLedger] = None) -> Tuple[int, str, bool]:
        # A file that already holds the first bytes needs only the size from the first answer.
        response = self._first_answer(probe=ledger is not None and ledger.kept(0, 1) > 0)
        if response.status_code == 200:
            LOGGER.info("%s: the server does not serve byte ranges; downloading in one stream", self.name)
            return self._single_stream(fd, response)
        if response.status_code == 416:
            # An empty object has no byte 0 to ask for.
            response.close()
            return self._single_stream(fd, self._get(None, first=True))
        try:
            total = self._total_size(response)
        except BaseException:
            response.close()
            raise
        self._etag = response.headers.get("ETag")
        options = self.options
        job = RangeJob(
            name=self.name,
            fd=fd,
            path=temp,
            total=total,
            part_size=options.part_size,
            concurrency=options.concurrency,
            window=options.window_parts,
            direct_io=options.direct_io,
            get_range=self.get_range,
            attempts=self.attempts,
            progress=self.progress,
            ledger=ledger,
        )
        return RangedDownload(job).run(response)

    def _first_answer(self, probe: bool = False) -> requests.Response:
        """The answer to the first range request: 200, 206 or 416, after retries of anything retryable."""
        attempt = 1
        while True:
            response = self._get(f"bytes=0-{0 if probe else self.options.part_size - 1}", first=True)
            if response.status_code in (200, 206, 416):
                return response
            response.close()
            try:
                check_status(response, 206)
            except RangeFailure as err:
                self.attempts.give_up_or_wait(err, attempt, "the first request")
                attempt += 1

    def _total_size(self, response: requests.Response) -> int:
        try:
            start, end, total = parse_content_range(response.headers.get("Content-Range", ""))
        except RangeFailure as err:
            raise DownloadError(f"downloading {self.name} from {self._shown_url} failed: {err}") from None
        if start != 0 or total is None:
            raise DownloadError(f"{self.name}: the server answered bytes 0- with range {start}-{end}/{total}")
        return total

    def _single_stream(self, fd: int, response: requests.Response) -> Tuple[int, str, bool]:
        """No ranges: the whole body in one stream, started again from byte 0 when it fails."""
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else 0
        self.progress.start(self.name, total)
        buffer = memoryview(bytearray(READ_CHUNK))
        attempt = 1
        while True:
            md5 = hashlib.md5()
            received = 0
            try:
                check_status(response, 200)
                if fd >= 0:
                    os.ftruncate(fd, 0)
                readinto = body_reader(response)
                while True:
                    count = read_some(readinto, buffer)
                    if not count:
                        break
                    if fd >= 0:
                        pwrite_all(fd, buffer[:count], received)
                    md5.update(buffer[:count])
                    received += count
                    self.progress.advance(self.name, count)
                response.close()
                if total and received != total:
                    raise RangeFailure(f"the answer ended after {received} of {total} bytes")
                self.progress.finish(self.name)
                return received, md5.hexdigest(), False
            except TRANSIENT as err:
                response.close()
                self.progress.advance(self.name, -received)
                self.attempts.give_up_or_wait(err, attempt, "the download")
                attempt += 1
                self.attempts.count_retry()
                response = self._get(None)

    # -- the requests (the range threads get ``get_range``) ---------------------------

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
                self.attempts.give_up_or_wait(err, attempt, "the first request")
                attempt += 1

    def get_range(self, span: Span) -> requests.Response:
        """A GET of what ``span`` still lacks, checked to be that range."""
        offset = span.start + span.received
        response = self._get(f"bytes={offset}-{span.end}")
        try:
            self.check_range(response, offset, span.end)
        except BaseException:
            response.close()
            raise
        return response

    @staticmethod
    def check_range(response: requests.Response, start: int, end: int) -> None:
        """Raise unless ``response`` is a 206 of bytes ``start``-``end``."""
        check_status(response, 206)
        got_start, got_end, _ = parse_content_range(response.headers.get("Content-Range", ""))
        if got_start != start or got_end != end:
            raise RangeFailure(f"asked for bytes {start}-{end}, got {got_start}-{got_end}", retry=False)


def download_file(
    url: str, path: Union[str, os.PathLike], expected_md5: Optional[str] = None, **settings: Any
) -> DownloadResult:
    """Download ``url`` to ``path`` (ranged and parallel when the server allows), md5 checked when given.

    ``settings`` are ``Downloader``'s keywords: ``options``, ``progress``,
    ``deadline``, ``name``. Raises ``DownloadError`` (or ``DeadlineExceeded``)
    when the download fails and ``ChecksumMismatch`` when the md5 differs; in
    every failure nothing is left at ``path`` or beside it.
    """
    return Downloader(url, path, **settings).run(expected_md5)
