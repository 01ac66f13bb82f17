"""The pieces of a ranged download: the span plan, the file writer, the in-order hasher and the range threads.

``download.Downloader`` decides the way from the first answer; when the server
serves ranges, ``RangedDownload`` fetches the spans with a few threads. It is
given what it needs (a function that GETs a span, the shared ``Attempts``, the
progress display), never the ``Downloader``, so the imports go one way:
``download`` -> ``ranges`` -> ``http_body`` -> ``attempts``. See
``download``'s docstring for the design.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import requests

from ..clients.defaults import MIB
from ..progress import Progress
from .attempts import TRANSIENT, Attempts, Cancelled, RangeFailure
from .http_body import body_reader, read_some, release
from .resume import DiscardWriter, SpanLedger

LOGGER = logging.getLogger("ims_python_helper.pod.download")

#: Bytes asked of the socket per read (and written per ``pwrite``, hashed per update): large reads keep the
#: per-byte Python cost low, and md5 releases the GIL only for large updates.
READ_CHUNK = 1 * MIB


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
    """A page-aligned, writable buffer of ``size`` bytes (as O_DIRECT needs).

    Private, not ``mmap``'s default of shared: anonymous shared memory is a
    tmpfs file underneath, and its pages cost more to fault in and to give
    back (three 32 MiB buffers: 0.026 CPU s less per fetch, BENCHMARKS.md).
    """
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


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


@dataclass(frozen=True)
class RangeJob:
    """What the range threads of one download are given: where the bytes go and how to ask for a span.

    ``get_range`` GETs what a span still lacks (checked to be that range);
    ``attempts`` is shared with the rest of the download, for the retries and
    the stop; ``progress`` shows the bytes under ``name``.
    """

    name: str
    fd: int
    #: The file's path, for opening it a second time with O_DIRECT.
    path: str
    total: int
    part_size: int
    #: Range threads at most.
    concurrency: int
    #: Spans started ahead of the hasher.
    window: int
    direct_io: bool
    get_range: Callable[[Span], requests.Response]
    attempts: Attempts
    progress: Progress
    #: What an earlier run kept of each span in the file (``image export``'s resume), or None.
    ledger: Optional[SpanLedger] = None


class RangedDownload:
    """The parts of one ranged download: threads that claim spans in order, fetch them and feed the hasher."""

    def __init__(self, job: RangeJob) -> None:
        self.job = job
        self.attempts = job.attempts
        #: Spans an earlier run kept in the file (``job.fd`` < 0: no file, the bytes are only hashed).
        self.ledger = job.ledger
        self.total = job.total
        self.part_size = job.part_size
        self.spans = plan_spans(job.total, job.part_size)
        #: Buffers of hashed spans, handed to spans started later (no new allocation per part).
        self._free: List[mmap.mmap] = []
        self.hasher = InOrderHasher(self.spans, self._free)
        self.window = job.window
        self._claim_lock = threading.Lock()
        self._next = 0
        self._first: Optional[requests.Response] = None

    def run(self, first: requests.Response) -> Tuple[int, str, bool]:
        """Fetch every span (``first`` answers span 0) and return the size, the md5 and True."""
        job = self.job
        self._first = first
        threads = min(job.concurrency, len(self.spans))
        job.progress.start(job.name, self.total)
        LOGGER.info(
            "%s: downloading %d bytes in %d ranges, up to %d at a time",
            job.name,
            self.total,
            len(self.spans),
            threads,
        )
        self.writer: Union[FileWriter, DiscardWriter] = DiscardWriter()
        if job.fd >= 0:
            os.ftruncate(job.fd, self.total)
            self.writer = FileWriter(job.fd, job.path, job.direct_io)
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
        job.progress.finish(job.name)
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
        self.attempts.cancel()
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
                self.attempts.check_cancel()
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
            count = os.preadv(self.job.fd, [view[span.received : kept]], span.start + span.received)
            if not count:
                raise OSError(errno.EIO, f"{self.job.path} ends before byte {span.start + kept}")
            span.received += count
        span.written = span.received
        self.job.progress.advance(self.job.name, span.received)
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
            self.attempts.check_cancel()
            try:
                if response is None:
                    response = self.job.get_range(span)
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
                self.attempts.give_up_or_wait(err, attempt, f"bytes {span.start}-{span.end}")
                attempt += 1
                self.attempts.count_retry()
                LOGGER.info(
                    "%s: resuming bytes %d-%d from byte %d",
                    self.job.name,
                    span.start,
                    span.end,
                    span.start + span.received,
                )

    def _receive(self, span: Span, response: requests.Response) -> None:
        """Read the answer into the span's buffer, writing each read at its offset and offering it to the hasher."""
        assert span.buffer is not None
        view = memoryview(span.buffer)
        readinto = body_reader(response)
        job = self.job
        while span.received < span.size:
            self.attempts.check_cancel()
            start = span.received
            count = read_some(readinto, view[start : min(start + READ_CHUNK, span.size)])
            if not count:
                return
            span.received = start + count
            self._write_ready(span, view)
            job.progress.advance(job.name, count)
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
