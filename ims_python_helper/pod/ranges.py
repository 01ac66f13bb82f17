"""The pieces of a ranged download: the span plan, the body reader, the in-order hasher and the range threads.

``download.Downloader`` decides the way from the first answer; when the server
serves ranges, ``RangedDownload`` fetches the spans with a few threads. See
``download``'s docstring for the design.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import mmap
import os
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Union

import requests
import urllib3.exceptions

from ..clients.transport import describe_request_error
from .resume import DiscardWriter, SpanLedger

if TYPE_CHECKING:
    from .download import Downloader

LOGGER = logging.getLogger("ims_python_helper.pod.download")
MIB = 1024 * 1024
#: Bytes asked of the socket per read (and written per ``pwrite``, hashed per update): large reads keep the
#: per-byte Python cost low, and md5 releases the GIL only for large updates.
READ_CHUNK = 1 * MIB
#: Statuses worth asking again for (gateways and overloaded servers).
RETRY_STATUSES = (429, 500, 502, 503, 504)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


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
    match = _CONTENT_RANGE.match(value.strip())
    if not match:
        raise RangeFailure(f"the server answered a range request with Content-Range {value!r}", retry=False)
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def body_reader(response: requests.Response) -> Callable[[memoryview], int]:
    """A ``readinto`` for the answer's body that fills the caller's buffer straight from the socket.

    http.client's ``readinto`` (beneath urllib3) copies once, from the kernel
    into the buffer; urllib3's own ``read``/``readinto`` copy every byte two
    more times. A cut-off answer still hands over the bytes that came before
    the cut (a short read, then 0), so a resumed range asks for the rest only.
    """
    raw = response.raw
    inner = getattr(raw, "_fp", None)
    if isinstance(inner, http.client.HTTPResponse) and not getattr(raw, "_decoder", None):
        return inner.readinto
    return raw.readinto


def read_some(readinto: Callable[[memoryview], int], view: memoryview) -> int:
    """Bytes read into ``view`` (0 at the end of the answer); a broken read becomes a ``RangeFailure``."""
    try:
        return readinto(view) or 0
    except socket.timeout:
        raise RangeFailure("timed out waiting for an answer") from None
    except (OSError, http.client.HTTPException, ValueError):
        # ValueError: http.client's buffer was closed under the read (the connection was dropped).
        raise RangeFailure("the answer was cut off before its end") from None


def release(response: requests.Response) -> None:
    """Give the connection back for the next range when its answer was read to the end; else close it.

    The body was read beneath urllib3, which therefore cannot tell; http.client
    closes its side once the last byte announced is read. Reusing the
    connection spares a TCP (and TLS) handshake per part.
    """
    inner = getattr(response.raw, "_fp", None)
    if isinstance(inner, http.client.HTTPResponse) and inner.isclosed():
        response.raw.release_conn()
    else:
        response.close()


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


#: O_DIRECT writes must start, end and sit in memory on this boundary (the largest logical block size in use).
DIRECT_ALIGN = 4096


class FileWriter:
    """Writes bytes at their offsets in the file, bypassing the page cache (``O_DIRECT``) where it can.

    Copying a gigabyte into the page cache costs about a CPU second, the
    largest cost of a download after the md5; a direct write hands the
    (page-aligned) buffer to the disk instead. Unaligned pieces (a file's last
    bytes) and file systems that refuse ``O_DIRECT`` (tmpfs, some overlays)
    are written through the page cache as usual.
    """

    def __init__(self, fd: int, path: str, direct: bool) -> None:
        self.fd = fd
        self.direct_fd: Optional[int] = None
        flag = getattr(os, "O_DIRECT", 0)
        if direct and flag:
            try:
                self.direct_fd = os.open(path, os.O_WRONLY | flag)
            except OSError:
                LOGGER.debug("%s: O_DIRECT refused; writing through the page cache", path)

    def write(self, view: memoryview, offset: int) -> None:
        """Write all of ``view`` at ``offset``."""
        direct = self.direct_fd
        if direct is not None and offset % DIRECT_ALIGN == 0 and len(view) % DIRECT_ALIGN == 0:
            try:
                pwrite_all(direct, view, offset)
                return
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                LOGGER.debug("O_DIRECT write refused (%s); writing through the page cache", err)
                self.close()
        pwrite_all(self.fd, view, offset)

    def close(self) -> None:
        """Close the direct descriptor (the caller owns the other)."""
        direct, self.direct_fd = self.direct_fd, None
        if direct is not None:
            os.close(direct)


def new_buffer(size: int) -> mmap.mmap:
    """A page-aligned, writable buffer of ``size`` bytes (as O_DIRECT needs)."""
    return mmap.mmap(-1, size)


class Span:
    """One range of the file: its bytes as they arrive, and how many of them are received, written and hashed."""

    __slots__ = ("buffer", "end", "hashed", "received", "start", "written")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end  # inclusive, as in the Range header
        self.received = 0
        #: Bytes of ``buffer`` in the file; the hasher reads no further, so a written span's buffer is free.
        self.written = 0
        self.hashed = 0
        self.buffer: Optional[mmap.mmap] = None

    @property
    def size(self) -> int:
        return self.end + 1 - self.start


def plan_spans(total: int, part_size: int) -> List[Span]:
    """The ranges a file of ``total`` bytes is fetched in, in file order."""
    return [Span(offset, min(offset + part_size, total) - 1) for offset in range(0, total, part_size)]


class InOrderHasher:
    """The md5 of the spans' bytes in file order, taken by whichever range thread has just received bytes.

    A thread that cannot take the lock leaves the work to the thread holding
    it, which looks again after letting go; so no thread waits for another's
    hashing, and every byte is hashed once, in order, as soon as the bytes
    before it are.
    """

    def __init__(self, spans: List[Span], free: List[mmap.mmap]) -> None:
        self.md5 = hashlib.md5()
        self.spans = spans
        #: Where the buffers of hashed spans go, for spans started later.
        self.free = free
        #: The first span not wholly hashed; spans before it have given back their buffers.
        self.index = 0
        self._lock = threading.Lock()
        #: Notified when ``index`` moves (range threads wait on it to stay within the window).
        self.moved = threading.Condition()

    def offer(self) -> None:
        """Hash what is next in order, if this thread can; call after receiving bytes."""
        while self._lock.acquire(blocking=False):
            try:
                moved = self._drain()
            finally:
                self._lock.release()
            if moved:
                with self.moved:
                    self.moved.notify_all()
            if not self._ready():
                return

    def _ready(self) -> bool:
        if self.index >= len(self.spans):
            return False
        span = self.spans[self.index]
        return span.written > span.hashed

    def _drain(self) -> bool:
        moved = False
        while self._ready():
            span = self.spans[self.index]
            assert span.buffer is not None
            written = span.written
            self.md5.update(memoryview(span.buffer)[span.hashed : written])
            span.hashed = written
            if written == span.size:
                self.free.append(span.buffer)
                span.buffer = None
                self.index += 1
                moved = True
        return moved

    def hexdigest(self) -> str:
        """The md5 of every byte; only once every span is hashed."""
        if self.index < len(self.spans):
            raise RuntimeError("the download ended before every range was hashed")
        return self.md5.hexdigest()


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


class RangedDownload:
    """The parts of one ranged download: threads that claim spans in order, fetch them and feed the hasher."""

    def __init__(self, owner: Downloader, fd: int, path: str, total: int, ledger: Optional[SpanLedger] = None) -> None:
        self.owner = owner
        #: Spans an earlier run kept in the file (``fd`` < 0: no file, the bytes are only hashed).
        self.ledger = ledger
        self.fd = fd
        self.path = path
        self.total = total
        self.part_size = owner.options.part_size
        self.spans = plan_spans(total, self.part_size)
        #: Buffers of hashed spans, handed to spans started later (no new allocation per part).
        self._free: List[mmap.mmap] = []
        self.hasher = InOrderHasher(self.spans, self._free)
        self.window = owner.options.window_parts
        self._claim_lock = threading.Lock()
        self._next = 0
        self._first: Optional[requests.Response] = None

    def run(self, first: requests.Response) -> Tuple[int, str, bool]:
        """Fetch every span (``first`` answers span 0) and return the size, the md5 and True."""
        owner = self.owner
        self._first = first
        threads = min(owner.options.concurrency, len(self.spans))
        owner.progress.start(owner.name, self.total)
        LOGGER.info(
            "%s: downloading %d bytes in %d ranges, up to %d at a time",
            owner.name,
            self.total,
            len(self.spans),
            threads,
        )
        self.writer: Union[FileWriter, DiscardWriter] = DiscardWriter()
        if self.fd >= 0:
            os.ftruncate(self.fd, self.total)
            self.writer = FileWriter(self.fd, self.path, owner.options.direct_io)
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="download") as pool:
                futures = [pool.submit(self._work) for _ in range(threads)]
                try:
                    errors = [err for err in (f.exception() for f in futures) if err is not None]
                except BaseException:
                    # An interrupt (Ctrl-C) stops the range threads too; the pool's exit waits for them.
                    self._stop()
                    raise
        finally:
            self.writer.close()
            if self._first is not None:
                self._first.close()
        if errors:
            # The first failure that is not just another thread stopping because of it.
            raise next((err for err in errors if not isinstance(err, Cancelled)), errors[0])
        owner.progress.finish(owner.name)
        return self.total, self.hasher.hexdigest(), True

    def _work(self) -> None:
        try:
            while True:
                span = self._claim()
                if span is None:
                    return
                self._fetch(span)
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        """Tell every range thread to stop, waking those waiting for the window."""
        self.owner.cancel()
        with self.hasher.moved:
            self.hasher.moved.notify_all()

    def _claim(self) -> Optional[Span]:
        """The next span to fetch, once it is within the window ahead of the hasher; None when all are taken."""
        with self._claim_lock:
            index = self._next
            if index >= len(self.spans):
                return None
            self._next += 1
        with self.hasher.moved:
            # Keep at most `window` spans ahead of the hasher: that bounds the memory.
            while index >= self.hasher.index + self.window:
                self.owner.check_cancel()
                self.hasher.moved.wait(1.0)
        span = self.spans[index]
        span.buffer = self._free.pop() if self._free else new_buffer(self.part_size)
        if self.ledger is not None:
            self._restore(index, span)
        return span

    def _restore(self, index: int, span: Span) -> None:
        """Read back (and hash, in order) what an earlier run kept of ``span``, so only the rest is fetched."""
        assert span.buffer is not None and self.ledger is not None
        kept = self.ledger.kept(index, span.size)
        view = memoryview(span.buffer)
        while span.received < kept:
            count = os.preadv(self.fd, [view[span.received : kept]], span.start + span.received)
            if not count:
                raise OSError(errno.EIO, f"{self.path} ends before byte {span.start + kept}")
            span.received += count
        span.written = span.received
        self.owner.progress.advance(self.owner.name, span.received)
        self.hasher.offer()

    def _fetch(self, span: Span) -> None:
        """Fetch ``span``, resuming from its first missing byte after a failure."""
        response = None
        if span.start == 0:
            response, self._first = self._first, None
            if response is not None and span.received:
                response.close()  # the first answer starts at byte 0, which the file already holds
                response = None
        attempt = 1
        while span.received < span.size:
            self.owner.check_cancel()
            try:
                if response is None:
                    response = self.owner.get_range(span)
                self._receive(span, response)
                release(response)
                if span.received < span.size:
                    raise RangeFailure(f"the answer for bytes {span.start}-{span.end} ended early")
                return
            except TRANSIENT as err:
                # What did arrive is written and hashed: keep it, and ask only for the rest.
                if response is not None:
                    response.close()
                response = None
                self.owner.give_up_or_wait(err, attempt, f"bytes {span.start}-{span.end}")
                attempt += 1
                self.owner.count_retry()
                LOGGER.info(
                    "%s: resuming bytes %d-%d from byte %d",
                    self.owner.name,
                    span.start,
                    span.end,
                    span.start + span.received,
                )

    def _receive(self, span: Span, response: requests.Response) -> None:
        """Read the answer into the span's buffer, writing each read at its offset and offering it to the hasher."""
        assert span.buffer is not None
        view = memoryview(span.buffer)
        readinto = body_reader(response)
        owner = self.owner
        while span.received < span.size:
            owner.check_cancel()
            start = span.received
            count = read_some(readinto, view[start : min(start + READ_CHUNK, span.size)])
            if not count:
                return
            span.received = start + count
            self._write_ready(span, view)
            owner.progress.advance(owner.name, count)
            self.hasher.offer()

    def _write_ready(self, span: Span, view: memoryview) -> None:
        """Write the span's received bytes up to the last aligned boundary (all of them once the span is whole)."""
        received = span.received
        end = received if received == span.size else received - received % DIRECT_ALIGN
        if end > span.written:
            self.writer.write(view[span.written : end], span.start + span.written)
            span.written = end
            if self.ledger is not None:
                self.ledger.record(span.start // self.part_size, end)
