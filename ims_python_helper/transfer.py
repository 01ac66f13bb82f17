"""The upload engine: every artifact read once, hashed while it is sent, parts and artifacts in parallel.

Large files are handed to s3transfer as a read-only stream, so s3transfer reads
them front to back in one thread while several part uploads run at once; the md5
(and optional SHA-256) is taken from exactly those bytes. S3 needs user metadata
when an upload starts, but the md5 is only known at the end, so the
``md5sum`` metadata is added afterwards with a server-side copy onto the same
key (no bytes pass through the client). Small files are read whole and stored
in one PUT with Content-MD5. Memory is bounded by part size times concurrency.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Optional

import botocore.exceptions
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from .errors import DeadlineExceeded, ImsHelperError, StorageError, VerificationError
from .progress import Progress
from .session import Deadline
from .storage import S3Storage, describe_s3_error

LOGGER = logging.getLogger(__name__)
MIB = 1024 * 1024


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

    part_size: int = 16 * MIB
    concurrency: int = 8
    sha256: bool = False


class HashingReader:
    """A read-only stream over a file that hashes every byte it hands out.

    It deliberately has no ``seek``: s3transfer then reads it sequentially in one
    thread, which keeps the hash in file order and memory bounded.
    """

    def __init__(self, handle: IO[bytes], sha256: bool = False) -> None:
        self._handle = handle
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if sha256 else None
        self.bytes_read = 0

    def read(self, amount: int = -1) -> bytes:
        """Read up to ``amount`` bytes (all when negative) and add them to the hashes."""
        data = self._handle.read(amount)
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        """Always True: this is an input stream."""
        return True

    @property
    def md5(self) -> str:
        """Hex md5 of what has been read so far."""
        return self._md5.hexdigest()

    @property
    def sha256(self) -> Optional[str]:
        """Hex SHA-256 of what has been read so far, when asked for."""
        return self._sha256.hexdigest() if self._sha256 is not None else None


class _ProgressSubscriber(BaseSubscriber):
    """Forwards s3transfer's byte counts to a ``Progress`` and provides the transfer size up front."""

    def __init__(self, progress: Progress, name: str, size: int) -> None:
        self._progress = progress
        self._name = name
        self._size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        # A known size lets s3transfer plan the parts without buffering the start of the stream.
        future.meta.provide_transfer_size(self._size)

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._progress.advance(self._name, bytes_transferred)


class ArtifactUploader:
    """Uploads a set of artifacts concurrently and verifies each stored object."""

    def __init__(
        self,
        storage: S3Storage,
        options: TransferOptions,
        progress: Optional[Progress] = None,
        deadline: Optional[Deadline] = None,
    ) -> None:
        self.storage = storage
        self.options = options
        self.progress = progress or Progress()
        self.deadline = deadline or Deadline(None)
        self._cancelled = threading.Event()

    def upload_all(self, uploads: List[ArtifactUpload]) -> List[UploadedObject]:
        """Upload every artifact at once; on the first failure cancel the rest and raise it.

        s3transfer aborts the multipart uploads it cancels; the caller still sweeps
        the prefix for any it could not abort (the server may be gone).
        """
        if not uploads:
            return []
        config = TransferConfig(
            multipart_threshold=self.options.part_size,
            multipart_chunksize=self.options.part_size,
            max_request_concurrency=self.options.concurrency,
            max_submission_concurrency=max(2, len(uploads)),
            # Bytes read ahead of the network: this bounds memory whatever the file size.
            max_in_memory_upload_chunks=self.options.concurrency,
        )
        manager = TransferManager(self.storage.client, config)
        succeeded = False
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(uploads), thread_name_prefix="artifact")
        try:
            futures = [pool.submit(self._upload_one, manager, upload) for upload in uploads]
            done, pending = concurrent.futures.wait(
                futures, timeout=self.deadline.remaining(), return_when=concurrent.futures.FIRST_EXCEPTION
            )
            failed = [f for f in done if f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            if pending:
                raise DeadlineExceeded(
                    f"the run's deadline of {self.deadline.seconds:g} s passed while uploading; raise --deadline"
                )
            results = [f.result() for f in futures]
            succeeded = True
            return results
        finally:
            if not succeeded:
                self._cancelled.set()
            # On failure this cancels queued and running transfers; s3transfer aborts their multipart uploads.
            manager.shutdown(cancel=not succeeded, cancel_msg="publish failed")
            pool.shutdown(wait=True)
            self.progress.close(succeeded)

    def _upload_one(self, manager: TransferManager, upload: ArtifactUpload) -> UploadedObject:
        self.progress.start(upload.name, upload.size)
        with open(upload.path, "rb") as handle:
            reader = HashingReader(handle, sha256=self.options.sha256)
            if upload.size < self.options.part_size:
                etag = self._put_small(upload, reader)
            else:
                self._put_large(manager, upload, reader)
                etag = ""
        if reader.bytes_read != upload.size:
            raise VerificationError(
                f"{upload.path} changed while it was read ({reader.bytes_read} bytes read, {upload.size} expected)"
            )
        info = self.storage.head(upload.key)
        if info is None:
            raise VerificationError(f"s3://{self.storage.bucket}/{upload.key} is missing right after its upload")
        if info.size != upload.size or info.metadata.get("md5sum") != reader.md5:
            raise VerificationError(
                f"s3://{self.storage.bucket}/{upload.key} does not match {upload.path} "
                f"(size {info.size} vs {upload.size}, md5 {info.metadata.get('md5sum')} vs {reader.md5})"
            )
        if etag and "-" not in info.etag and info.etag != etag:
            raise VerificationError(f"s3://{self.storage.bucket}/{upload.key} changed after it was written")
        self.progress.finish(upload.name)
        return UploadedObject(upload=upload, md5=reader.md5, etag=info.etag, sha256=reader.sha256)

    def _final_metadata(self, upload: ArtifactUpload, reader: HashingReader) -> Dict[str, str]:
        metadata = dict(upload.metadata)
        metadata["md5sum"] = reader.md5
        if reader.sha256:
            metadata["sha256sum"] = reader.sha256
        return metadata

    def _put_small(self, upload: ArtifactUpload, reader: HashingReader) -> str:
        data = reader.read()
        self._check_running(upload)
        etag = self.storage.put_bytes(upload.key, data, upload.content_type, self._final_metadata(upload, reader))
        self.progress.advance(upload.name, len(data))
        return etag

    def _put_large(self, manager: TransferManager, upload: ArtifactUpload, reader: HashingReader) -> None:
        self._check_running(upload)
        future = manager.upload(
            reader,
            self.storage.bucket,
            upload.key,
            extra_args={"ContentType": upload.content_type, "Metadata": dict(upload.metadata)},
            subscribers=[_ProgressSubscriber(self.progress, upload.name, upload.size)],
        )
        try:
            future.result()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(
                f"upload of {upload.path} to s3://{self.storage.bucket}/{upload.key} failed: {describe_s3_error(err)}"
            ) from None
        except ImsHelperError:
            raise
        except Exception as err:
            if self._cancelled.is_set():
                raise StorageError(f"upload of {upload.path} was cancelled") from None
            raise StorageError(f"upload of {upload.path} failed: {type(err).__name__}: {err}") from None
        self._check_running(upload)
        self.storage.replace_metadata(
            upload.key, upload.content_type, self._final_metadata(upload, reader), upload.size
        )

    def _check_running(self, upload: ArtifactUpload) -> None:
        if self._cancelled.is_set():
            raise StorageError(f"upload of {upload.path} was cancelled")
        self.deadline.check(f"uploading {upload.path}")


def file_size(path: str) -> int:
    """Size of a regular file in bytes."""
    return os.stat(path).st_size
