"""The upload engine: every artifact read once, hashed while it is sent, parts and artifacts in parallel.

Large files go up as multipart uploads through ``parts.PartUploads``: each
is read front to back, a part at a time, through a small buffer, while up to
``concurrency`` part uploads (of all artifacts together) are on the wire,
each sent from the file. The md5 (and optional SHA-256) is taken from the
bytes read, so the client reads a file once; the server checks every part
sent against the md5 of the bytes read for it. S3 wants user
metadata when a multipart upload starts, but the md5 is only known at the
end, so the ``md5sum`` metadata is added afterwards by a server-side copy
onto the same key. No data passes through the client again, and Ceph RGW
only rewrites the object's head (0.05 s for 1 GiB and for 4 GiB,
BENCHMARKS.md). Files no larger than one part are read whole and stored in
one PUT with Content-MD5, metadata included.

Every part carries the signed Content-MD5 of its bytes (``integrity``), so the
server checks every byte; afterwards the object's ETag must be the one
computed from the parts sent (or, after a single copy in place that the
server gave a new ETag, the file's md5), in the CompleteMultipartUpload answer
and in the HEAD that checks size and metadata.

Memory: every file is read a piece (1 MiB) at a time for its hashes, then
sent from the file: over plain HTTP from the page cache (``clients.sendfile``),
over TLS a piece at a time. A part holds a piece, not its size, whatever
the file sizes (see ``TransferOptions.memory_bound``).

When an upload fails, its multipart upload is aborted and the other uploads
are cancelled (and aborted) too; the caller sweeps the prefix for any upload
the server could not be told about.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Set

import botocore.exceptions
from s3transfer.utils import MAX_PARTS, ChunksizeAdjuster

from ..clients.deadline import Deadline
from ..clients.defaults import DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, PIECE
from ..clients.sendfile import FileRange
from ..clients.storage import ObjectInfo, S3Storage, describe_s3_error, s3_error_code
from ..errors import DeadlineExceeded, ImsHelperError, StorageError, UploadCancelled, VerificationError, s3_failure
from ..progress import Progress
from .integrity import HashingReader
from .parts import PartUploads, is_cancellation
from .stop_uploads import stop_transfers

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactUpload:
    """One local file to store at ``key``, with the metadata known before it is read."""

    name: str
    path: str
    key: str
    content_type: str
    size: int
    metadata: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadedObject:
    """A stored and verified object."""

    upload: ArtifactUpload
    md5: str
    etag: str
    sha256: Optional[str] = None


@dataclass(frozen=True)
class TransferOptions:
    """How big the parts are, how many requests run at once, and what to hash."""

    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    sha256: bool = False
    #: S3 allows at most this many parts; larger files get larger parts (tests lower it).
    max_parts: int = MAX_PARTS

    @property
    def pool_connections(self) -> int:
        """HTTP connections the S3 client keeps: one per parallel request, and a few for HEADs and listings."""
        return max(10, self.concurrency + 4)

    @property
    def memory_bound(self) -> int:
        """Most artifact bytes in memory at once: a piece per part being sent and per file being read.

        Every file is hashed a ``PIECE`` at a time and sent from the file (by
        ``sendfile`` over plain HTTP, a piece at a time over TLS), so a part
        being sent holds a piece, not its size, and so does each reading
        thread: one per large file (two are allowed for) and the small file
        being sent. The part size does not count.
        """
        return (self.concurrency + 3) * PIECE

    def part_size_for(self, size: int) -> int:
        """The part size a file of ``size`` bytes needs: ``part_size``, doubled until it fits ``max_parts``."""
        return int(ChunksizeAdjuster(max_parts=self.max_parts).adjust_chunksize(self.part_size, size))

    def planned_for(self, sizes: List[int]) -> TransferOptions:
        """These options with the part size every one of ``sizes`` fits in ``max_parts`` parts at.

        One part size for a whole publish: the part slots are shared by every
        file, and only a file past 10,000 parts at the configured size (156 GiB
        at 16 MiB) raises it.
        """
        return replace(self, part_size=max([self.part_size_for(size) for size in sizes] or [self.part_size]))

    def parts(self, size: int) -> int:
        """How many parts a file of ``size`` bytes is sent in (1 for a single PUT)."""
        return max(1, math.ceil(size / self.part_size_for(size)))

    def is_multipart(self, size: int) -> bool:
        """True when a file of ``size`` bytes goes up as a multipart upload."""
        return size > self.part_size


@dataclass(eq=False)
class ArtifactUploader:
    """Uploads a set of artifacts concurrently and verifies each stored object."""

    storage: S3Storage
    options: TransferOptions
    progress: Progress = field(default_factory=Progress)
    deadline: Deadline = field(default_factory=lambda: Deadline(None))

    def __post_init__(self) -> None:
        self._cancelled = threading.Event()
        self._futures: List[concurrent.futures.Future] = []
        self._abandoned = False
        # Small files are hashed and sent one at a time, each through a piece of its own.
        self._small_file_slot = threading.Semaphore(1)
        self._plan = self.options
        self._parts: Optional[PartUploads] = None

    def upload_all(self, uploads: List[ArtifactUpload]) -> List[UploadedObject]:
        """Upload every artifact at once; on the first failure cancel the rest and raise it.

        Results come back in the order of ``uploads``. The engine aborts the
        multipart uploads it cancels; the caller still sweeps the prefix for any
        it could not abort (the server may be gone). After a signal, see ``stop_transfers``.
        """
        if not uploads:
            return []
        succeeded = False
        self._plan = self.options.planned_for([upload.size for upload in uploads])
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(uploads), thread_name_prefix="artifact")
        parts = self._parts = PartUploads(
            self.storage.client, self.storage.bucket, self._plan.part_size, self._plan.concurrency, self._cancelled
        )
        try:
            try:
                results = self._run_all(pool, uploads)
            except BaseException as err:
                self._abandoned = True  # until stop_transfers has seen every upload stop
                self._abandoned, raised = stop_transfers(parts.cancel, self._futures, err)
                raise _cause(raised, self._futures)
            succeeded = True
            return results
        finally:
            parts.shutdown(wait=not self._abandoned)
            pool.shutdown(wait=not self._abandoned)
            self.progress.close(succeeded)

    def _run_all(
        self, pool: concurrent.futures.ThreadPoolExecutor, uploads: List[ArtifactUpload]
    ) -> List[UploadedObject]:
        # Smallest first: the small ones take their buffers (and start sending) before the rootfs.
        order = sorted(range(len(uploads)), key=lambda i: uploads[i].size)
        futures = {i: pool.submit(self._upload_or_cancel, uploads[i]) for i in order}
        self._futures = list(futures.values())
        done, pending = concurrent.futures.wait(
            futures.values(), timeout=self.deadline.remaining(), return_when=concurrent.futures.FIRST_EXCEPTION
        )
        failed = _failures(done)
        if failed:
            raise failed[0]
        if pending:
            raise DeadlineExceeded(
                f"the run's deadline of {self.deadline.seconds:g} s passed while uploading; raise --deadline"
            )
        return [futures[i].result() for i in range(len(uploads))]

    def _upload_or_cancel(self, upload: ArtifactUpload) -> UploadedObject:
        try:
            return self._upload_one(upload)
        except BaseException:
            # Here, before the next small file takes the slot and sends (and retries). It sets
            # ``_cancelled`` and wakes any reader waiting for a part buffer; made before any upload runs.
            assert self._parts is not None
            self._parts.cancel()
            raise

    def _upload_one(self, upload: ArtifactUpload) -> UploadedObject:
        self.progress.start(upload.name, upload.size)
        copied_in_parts = False
        with open(upload.path, "rb", buffering=0) as handle:
            multipart = self._plan.is_multipart(upload.size)
            reader = HashingReader(handle, sha256=self._plan.sha256)
            if multipart:
                copied_in_parts = self._put_large(upload, reader)
            else:
                self._put_small(upload, reader)
        _check_size_read(upload, reader)
        info = self.storage.head(upload.key)
        if info is None:
            raise VerificationError(f"s3://{self.storage.bucket}/{upload.key} is missing right after its upload")
        self._verify(upload, reader, info, copied_in_parts)
        self.progress.finish(upload.name)
        return UploadedObject(upload=upload, md5=reader.md5, etag=info.etag, sha256=reader.sha256)

    def _verify(self, upload: ArtifactUpload, reader: HashingReader, info: ObjectInfo, copied_in_parts: bool) -> None:
        """Compare what a HEAD says with what was sent: size, md5 and other metadata, type, ETag."""
        expected = self._final_metadata(upload, reader)
        wrong = [
            f"{name} {info.metadata.get(name)!r} instead of {value!r}"
            for name, value in expected.items()
            if info.metadata.get(name) != value
        ]
        if info.size != upload.size:
            wrong.insert(0, f"size {info.size} instead of {upload.size}")
        if info.content_type and info.content_type != upload.content_type:
            wrong.append(f"type {info.content_type!r} instead of {upload.content_type!r}")
        wrong.extend(_etag_mismatch(info.etag, _expected_etags(reader, copied_in_parts)))
        if wrong:
            raise VerificationError(
                f"s3://{self.storage.bucket}/{upload.key} does not match {upload.path}: {'; '.join(wrong)}"
            )

    def _final_metadata(self, upload: ArtifactUpload, reader: HashingReader) -> Dict[str, str]:
        metadata = dict(upload.metadata)
        metadata["md5sum"] = reader.md5
        if reader.sha256:
            metadata["sha256sum"] = reader.sha256
        return metadata

    def _put_small(self, upload: ArtifactUpload, reader: HashingReader) -> str:
        """Hash a small file a piece at a time, then send it from the file in one PUT (as the parts are sent)."""
        with self._small_file_slot:
            self._check_running(upload)
            size = reader.read_through(memoryview(bytearray(PIECE)))
            # Its own event, never set: a small PUT is not stopped once begun, as it was not when it was bytes.
            body = FileRange(reader.fileno(), 0, size, threading.Event())
            metadata = self._final_metadata(upload, reader)
            etag = self.storage.put_body(upload.key, body, reader.md5_digest, upload.content_type, metadata)
            self.progress.advance(upload.name, size)
            return etag

    def _put_large(self, upload: ArtifactUpload, reader: HashingReader) -> bool:
        """Send a file as a multipart upload and check the server's ETag; True when its metadata was copied in parts."""
        self._check_running(upload)
        assert self._parts is not None
        failed = f"upload of {upload.path} to s3://{self.storage.bucket}/{upload.key} failed"
        try:
            self._parts.upload(
                upload.key,
                reader,
                {"ContentType": upload.content_type, "Metadata": dict(upload.metadata)},
                progress=lambda size: self.progress.advance(upload.name, size),
                check=lambda: self._check_running(upload),
            )
        except botocore.exceptions.ClientError as err:
            _check_size_read(upload, reader)  # a file cut short ends in no parts or a part too small
            if not self._completed_before_its_answer_was_lost(upload, reader, err):
                raise s3_failure(f"{failed}: {describe_s3_error(err)}", err) from None
        except botocore.exceptions.BotoCoreError as err:
            if is_cancellation(err):
                raise UploadCancelled(f"upload of {upload.path} was cancelled") from None
            raise StorageError(f"{failed}: {describe_s3_error(err)}") from None
        except ImsHelperError:
            raise
        except OSError as err:
            raise StorageError(f"cannot read {upload.path}: {err.strerror or err}") from None
        except Exception as err:
            raise StorageError(f"{failed}: {type(err).__name__}: {err}") from None
        self._check_completed_etag(upload, reader)
        self._check_running(upload)
        started = time.monotonic()
        copied_in_parts = self.storage.replace_metadata(
            upload.key, upload.content_type, self._final_metadata(upload, reader), upload.size
        )
        LOGGER.debug("%s: md5sum metadata set by a copy in place in %.3f s", upload.name, time.monotonic() - started)
        return copied_in_parts

    def _check_completed_etag(self, upload: ArtifactUpload, reader: HashingReader) -> None:
        """The ETag of the CompleteMultipartUpload answer must be the one of the parts that were sent."""
        expected = reader.multipart_etag
        if reader.completed_etag and reader.completed_etag != expected:
            raise VerificationError(
                f"s3://{self.storage.bucket}/{upload.key} does not match {upload.path}: the server completed it "
                f"with ETag {reader.completed_etag}, not {expected}, the ETag of the {reader.parts} parts sent"
            )

    def _completed_before_its_answer_was_lost(
        self, upload: ArtifactUpload, reader: HashingReader, err: botocore.exceptions.ClientError
    ) -> bool:
        """True when a ``NoSuchUpload`` means the upload was completed and only the answer was lost.

        A ``CompleteMultipartUpload`` that the server carried out but whose answer
        never arrived is retried by botocore, and the retry finds no such upload.
        The object is then there: it is ours when it has the file's size and the
        ETag of exactly the parts that were read and sent.
        """
        if s3_error_code(err) != "NoSuchUpload" or reader.bytes_read != upload.size:
            return False
        info = self.storage.head(upload.key)
        if info is None or info.size != upload.size or info.etag != reader.multipart_etag:
            return False
        LOGGER.info("%s: the multipart upload was completed although its answer was lost", upload.name)
        return True

    def _check_running(self, upload: ArtifactUpload) -> None:
        if self._cancelled.is_set():
            raise UploadCancelled(f"upload of {upload.path} was cancelled")
        self.deadline.check(f"uploading {upload.path}")


def _check_size_read(upload: ArtifactUpload, reader: HashingReader) -> None:
    """Raise when the file did not have the size it had when the publish began."""
    if reader.bytes_read != upload.size:
        raise VerificationError(
            f"{upload.path} changed while it was read ({reader.bytes_read} bytes read, {upload.size} expected); "
            "publish it again once it is complete"
        )


def _cause(raised: BaseException, futures: List[concurrent.futures.Future]) -> BaseException:
    """The error worth reporting once the uploads have stopped: not a cancellation where there is a cause.

    A cancelled upload only says that another one failed, and it often ends
    first: the failing one still waits for its parts in flight and aborts its
    multipart upload (against a server that may be gone) before its own error
    comes out. ``stop_transfers`` has waited for them all, except after a signal.
    """
    if not isinstance(raised, UploadCancelled):
        return raised
    causes = [err for err in _failures({f for f in futures if f.done()}) if not isinstance(err, UploadCancelled)]
    return causes[0] if causes else raised


def _failures(futures: Set[concurrent.futures.Future]) -> List[BaseException]:
    """The errors of the finished ``futures``, an upload's own failure before any cancellation it caused."""
    errors = [err for err in (f.exception() for f in futures) if err is not None]
    return sorted(errors, key=lambda err: isinstance(err, UploadCancelled))


def _expected_etags(reader: HashingReader, copied_in_parts: bool) -> List[str]:
    """The ETags the stored object may have: of the parts sent, or (after a single copy) of the whole file.

    Ceph RGW keeps a multipart object's ETag through the copy in place that
    adds ``md5sum``; AWS and moto give the copy the md5 of its bytes. A copy
    made part by part (past 5 GiB) has an ETag of its own copy parts: nothing
    to compare then, and the upload's own ETag was checked in the
    CompleteMultipartUpload answer.
    """
    if copied_in_parts:
        return []
    if reader.parts:
        return [reader.multipart_etag, reader.md5]
    return [reader.md5]


def _etag_mismatch(etag: str, expected: List[str]) -> List[str]:
    """A one-item list naming the wrong ETag, or nothing when ``etag`` is expected (or nothing is)."""
    if not expected or etag in expected:
        return []
    return [f"ETag {etag} instead of {' or '.join(expected)} (computed from the bytes sent)"]
