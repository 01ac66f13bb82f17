"""The multipart loop: each part read into a reused buffer, hashed, and sent from it as it lies.

``transfer.ArtifactUploader`` hands every file larger than one part to
``PartUploads.upload``. The artifact's thread reads the file front to back,
one part at a time, into one of ``concurrency + 1`` buffers that every
artifact of the publish shares (``PartBuffers``), and adds the part to the
file's md5 (``HashingReader.read_part_into``). One of ``concurrency`` sender
threads then takes the part's md5 and sends the part with it as
``Content-MD5``, the request body being a view of the buffer itself
(``PartBody``): between the page cache and the socket there is no copy and
no allocation, and the buffer goes back to the pool when the part is stored.
Memory is therefore exactly ``part_size * (concurrency + 1)`` for all the
parts of all the files, whatever their sizes.

The buffers replace s3transfer's path (a new ``bytes`` per part, zeroed by
the kernel, futures and callbacks per part): the client's CPU beyond its
hashes is what issue 20 measures (BENCHMARKS.md). What s3transfer did for a
failed transfer is done here: a part that fails stops the file's other
parts and every other artifact (``cancel``); each file's multipart upload is
aborted after its parts in flight have ended, and botocore retries a part
from its buffer (``PartBody.seek``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import threading
from typing import Any, Callable, Dict, List

import botocore.exceptions

from ..clients.storage import s3_error_code
from ..errors import UploadCancelled
from .integrity import HashingReader

LOGGER = logging.getLogger(__name__)


class PartBuffers:
    """``count`` buffers of ``size`` bytes, made when first needed and reused for every part after that.

    ``take`` waits for a free one; ``cancel`` wakes every waiter, which then
    raises ``UploadCancelled``.
    """

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self._free: List[bytearray] = []
        self._made = 0
        self._cancelled = False
        self._lock = threading.Condition()

    def take(self) -> bytearray:
        """A free buffer, waiting for one when all are in use."""
        with self._lock:
            while not self._free and self._made == self.count and not self._cancelled:
                self._lock.wait()
            if self._cancelled:
                raise UploadCancelled("the upload was cancelled")
            if self._free:
                return self._free.pop()
            self._made += 1
        return bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        """Return ``buffer`` to the pool."""
        with self._lock:
            self._free.append(buffer)
            self._lock.notify()

    def cancel(self) -> None:
        """Make every ``take``, waiting or to come, raise ``UploadCancelled``."""
        with self._lock:
            self._cancelled = True
            self._lock.notify_all()


class PartBody:
    """A part's request body: a view of its buffer, handed to the HTTP layer whole in one read.

    urllib3 reads a body in 16 KiB blocks; this gives it the rest of the part
    at the first read, as a view (no copy), which it writes to the socket in
    one call. botocore seeks back to 0 for a retry. Once the publish is
    cancelled an attempt that begins reading raises, so a retry of a part
    nobody wants fails at once (``s3retry`` does not retry an error raised by
    the body); one that has sent its body is left to finish.
    """

    def __init__(self, data: memoryview, cancelled: threading.Event) -> None:
        self._data = data
        self._cancelled = cancelled
        self._at = 0

    def read(self, amount: int = -1) -> memoryview:
        """The rest of the part, whatever ``amount`` is asked for."""
        if self._at == 0 and self._cancelled.is_set():  # an attempt that has not begun sending
            raise UploadCancelled("the upload was cancelled")
        rest = self._data[self._at :]
        self._at = len(self._data)
        return rest

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` from the start (``whence`` 0) or the end (2)."""
        self._at = offset if whence == 0 else len(self._data) + offset
        return self._at

    def tell(self) -> int:
        """Position in the part."""
        return self._at

    def __len__(self) -> int:
        return len(self._data)


class PartUploads:
    """The sender threads and the buffers of one publish; ``upload`` sends one file as a multipart upload."""

    def __init__(self, client: Any, bucket: str, part_size: int, concurrency: int, cancelled: threading.Event) -> None:
        self.client = client
        self.bucket = bucket
        self.cancelled = cancelled
        self.buffers = PartBuffers(concurrency + 1, part_size)
        self._senders = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="part")

    def cancel(self) -> None:
        """Stop every upload: parts not yet sent are not sent, readers waiting for a buffer stop."""
        self.cancelled.set()
        self.buffers.cancel()

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
        while True:
            check()
            buffer = self.buffers.take()
            try:
                data = reader.read_part_into(memoryview(buffer))
            except BaseException:
                self.buffers.give(buffer)
                raise
            if not data:
                self.buffers.give(buffer)
                return
            number = reader.parts
            sent.append(self._senders.submit(self._send, key, upload_id, number, reader, data, buffer, progress))
            if len(data) < len(buffer):
                return

    def _send(
        self,
        key: str,
        upload_id: str,
        number: int,
        reader: HashingReader,
        data: memoryview,
        buffer: bytearray,
        progress: Callable[[int], None],
    ) -> Dict[str, Any]:
        """Send part ``number`` (in a sender thread) and give its buffer back, whatever happens."""
        size = len(data)
        try:
            if self.cancelled.is_set():
                raise UploadCancelled(f"part {number} of s3://{self.bucket}/{key} was cancelled")
            digest = reader.part_md5(number, size)
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=PartBody(data, self.cancelled),
                ContentMD5=base64.b64encode(digest).decode("ascii"),
            )
        except BaseException:
            self.cancel()
            raise
        finally:
            self.buffers.give(buffer)
        progress(size)
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


def _failures(parts: List[concurrent.futures.Future]) -> List[BaseException]:
    """The errors of the parts that failed (every part has ended)."""
    return [err for err in (part.exception() for part in parts) if err is not None]


def _first_failure(errors: List[BaseException]) -> BaseException:
    """The failure worth raising: the first that is not a cancellation (which only says another one failed)."""
    return sorted(errors, key=is_cancellation)[0]


def is_cancellation(err: BaseException) -> bool:
    """True for ``UploadCancelled``, also as botocore gives it when a part body raised it."""
    return isinstance(err, UploadCancelled) or isinstance(getattr(err, "kwargs", {}).get("error"), UploadCancelled)
