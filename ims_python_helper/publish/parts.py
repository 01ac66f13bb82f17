"""The multipart loop: each part hashed as it is read, then sent from the file by the kernel.

``transfer.ArtifactUploader`` hands every file larger than one part to
``PartUploads.upload``. The artifact's thread reads the file front to back,
one part at a time, through a small buffer that stays in the CPU's cache
(``PIECE``), and each piece goes into the file's md5 and the part's md5 at
once (``HashingReader.read_part``). One of ``concurrency`` sender threads then
sends the part with its md5 as ``Content-MD5``, the request body being the
part's range of the file (``clients.sendfile.FileRange``): over plain HTTP
the kernel sends it from the page cache (``os.sendfile``), so a part's bytes
never sit in the client's memory and are copied once, into the piece buffer
for the hashes. Over TLS the range is read whole for its attempt.

At most ``concurrency + 1`` parts of all the files of the publish are read
and not yet stored (``PartSlots``), which keeps the reading just ahead of the
sending, and the page cache holding the parts between the two.

This loop replaces s3transfer's path (a new ``bytes`` per part, zeroed by
the kernel, futures and callbacks per part), and then its own part buffers:
the client's CPU beyond its hashes is what issue 20 measures (BENCHMARKS.md).
What s3transfer did for a failed transfer is done here: a part that fails
stops the file's other parts and every other artifact (``cancel``); each
file's multipart upload is aborted after its parts in flight have ended, and
botocore retries a part from the file (``FileRange.seek``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from typing import Any, Callable, Dict, List

import botocore.exceptions

from ..clients.defaults import PIECE
from ..clients.s3retry import wrapped_error
from ..clients.sendfile import FileRange
from ..clients.storage import md5_header, s3_error_code
from ..errors import UploadCancelled
from .integrity import HashingReader

LOGGER = logging.getLogger(__name__)


class PartSlots:
    """At most ``count`` parts read and not yet stored; ``take`` waits for a free slot.

    ``cancel`` wakes every waiter, which then raises ``UploadCancelled``.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._taken = 0
        self._cancelled = False
        self._lock = threading.Condition()

    def take(self) -> None:
        """Take a slot, waiting for one when all are taken."""
        with self._lock:
            while self._taken == self.count and not self._cancelled:
                self._lock.wait()
            if self._cancelled:
                raise UploadCancelled("the upload was cancelled")
            self._taken += 1

    def give(self) -> None:
        """Free a slot."""
        with self._lock:
            self._taken -= 1
            self._lock.notify()

    def cancel(self) -> None:
        """Make every ``take``, waiting or to come, raise ``UploadCancelled``."""
        with self._lock:
            self._cancelled = True
            self._lock.notify_all()


class PartUploads:
    """The sender threads and the part slots of one publish; ``upload`` sends one file as a multipart upload."""

    def __init__(self, client: Any, bucket: str, part_size: int, concurrency: int, cancelled: threading.Event) -> None:
        self.client = client
        self.bucket = bucket
        self.cancelled = cancelled
        self.part_size = part_size
        self.slots = PartSlots(concurrency + 1)
        #: Whether the part md5s are taken beside the reading thread (``HashingReader.read_part``).
        self.hash_beside = more_than_one_cpu()
        self._senders = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="part")

    def cancel(self) -> None:
        """Stop every upload: parts not yet sent are not sent, readers waiting for a slot stop."""
        self.cancelled.set()
        self.slots.cancel()

    def shutdown(self, wait: bool) -> None:
        """End the sender threads (at once, without waiting, when some are left hanging on S3)."""
        self._senders.shutdown(wait=wait)

    def upload(
        self,
        key: str,
        reader: HashingReader,
        extra: Dict[str, Any],
        progress: Callable[[int], None],
        check: Callable[[], None],
    ) -> None:
        """Store what ``reader`` reads at ``key``; the multipart upload is aborted when anything fails.

        ``extra`` are CreateMultipartUpload's own arguments (type, metadata);
        ``progress`` is told the size of each stored part; ``check`` raises
        when the publish is to stop (cancelled, past its deadline). botocore's
        errors and ``UploadCancelled`` are raised as they are.
        """
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
        try:
            parts = self._send_all(key, upload_id, reader, progress, check)
            answer = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            reader.completed_etag = str(answer.get("ETag", "")).strip('"')
        except BaseException:
            # Only this upload: a CompleteMultipartUpload whose answer was lost fails here although
            # the object is stored (``transfer`` checks), and the other artifacts go on meanwhile.
            self._abort(key, upload_id)
            raise

    def _send_all(
        self,
        key: str,
        upload_id: str,
        reader: HashingReader,
        progress: Callable[[int], None],
        check: Callable[[], None],
    ) -> List[Dict[str, Any]]:
        """Read and send every part; once all have ended, their list for CompleteMultipartUpload, or the failure."""
        sent: List[concurrent.futures.Future] = []
        try:
            self._read_and_send(key, upload_id, reader, sent, progress, check)
        except BaseException as err:
            self.cancel()
            concurrent.futures.wait(sent)  # the parts in flight end before the upload is aborted
            raise _first_failure([*_failures(sent), err]) from None
        concurrent.futures.wait(sent)
        failed = _failures(sent)
        if failed:
            raise _first_failure(failed)
        check()  # all parts are stored, but an upload cancelled meanwhile is not completed
        return [part.result() for part in sent]

    def _read_and_send(
        self,
        key: str,
        upload_id: str,
        reader: HashingReader,
        sent: List[concurrent.futures.Future],
        progress: Callable[[int], None],
        check: Callable[[], None],
    ) -> None:
        piece = memoryview(bytearray(PIECE))
        with self._md5_beside() as beside:
            while True:
                check()
                self.slots.take()
                try:
                    offset = reader.bytes_read
                    size = reader.read_part(self.part_size, piece, beside)
                except BaseException:
                    self.slots.give()
                    raise
                if not size:
                    self.slots.give()
                    return
                body = FileRange(reader.fileno(), offset, size, self.cancelled)
                sent.append(self._senders.submit(self._send, key, upload_id, reader.parts, reader, body, progress))
                if size < self.part_size:
                    return

    def _md5_beside(self) -> Any:
        """A thread for the part md5s beside the reading one, where there is a CPU for it (else nothing)."""
        if not self.hash_beside:
            return contextlib.nullcontext()
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-md5")

    def _send(
        self,
        key: str,
        upload_id: str,
        number: int,
        reader: HashingReader,
        body: FileRange,
        progress: Callable[[int], None],
    ) -> Dict[str, Any]:
        """Send part ``number`` (in a sender thread) and free its slot, whatever happens."""
        try:
            if self.cancelled.is_set():
                raise UploadCancelled(f"part {number} of s3://{self.bucket}/{key} was cancelled")
            digest = reader.part_md5(number, len(body))
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=md5_header(digest),
            )
        except BaseException:
            self.cancel()
            raise
        finally:
            self.slots.give()
        progress(len(body))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; a failure is logged (the caller's sweep of the prefix still finds it)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as err:
            if s3_error_code(err) != "NoSuchUpload":  # completed, or aborted already: nothing to abort
                LOGGER.warning("could not abort the multipart upload of s3://%s/%s: %s", self.bucket, key, err)
        except botocore.exceptions.BotoCoreError as err:
            LOGGER.warning("could not abort the multipart upload of s3://%s/%s: %s", self.bucket, key, err)


def more_than_one_cpu() -> bool:
    """True when this process may run on more than one CPU (it is not pinned to one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) > 1
    return (os.cpu_count() or 1) > 1


def _failures(parts: List[concurrent.futures.Future]) -> List[BaseException]:
    """The errors of the parts that failed (every part has ended)."""
    return [err for err in (part.exception() for part in parts) if err is not None]


def _first_failure(errors: List[BaseException]) -> BaseException:
    """The failure worth raising: the first that is not a cancellation (which only says another one failed)."""
    return sorted(errors, key=is_cancellation)[0]


def is_cancellation(err: BaseException) -> bool:
    """True for ``UploadCancelled``, also as botocore gives it when a part body raised it."""
    return isinstance(err, UploadCancelled) or isinstance(wrapped_error(err), UploadCancelled)
