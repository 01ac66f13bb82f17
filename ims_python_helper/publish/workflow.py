"""What the image and recipe workflows share: their services, record reuse, and undo after a failure."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..clients.deadline import Deadline
from ..clients.ims import ImsClient, Record
from ..clients.storage import S3Storage
from ..errors import CleanupError, ImsApiError, ImsHelperError, Interrupted
from ..progress import Progress
from .checks import md5_of_file
from .transfer import ArtifactUpload, ArtifactUploader, TransferOptions, UploadedObject

LOGGER = logging.getLogger(__name__)


@dataclass
class Services:
    """IMS, the bucket and the upload engine of one helper, with a per-run md5 cache."""

    ims: ImsClient
    storage: S3Storage
    transfer: TransferOptions
    progress: Progress
    deadline: Deadline
    md5_cache: Dict[Tuple[str, int, int], str] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        """The bucket new objects go to."""
        return self.storage.bucket

    def local_md5(self, path: str) -> str:
        """md5 of a local file, computed at most once per run (keyed by path, size and mtime)."""
        key = self._md5_key(path)
        if key not in self.md5_cache:
            self.md5_cache[key] = md5_of_file(path)
        return self.md5_cache[key]

    def remember_md5(self, path: str, md5: str) -> None:
        """Record an md5 already taken while reading the file for another reason."""
        self.md5_cache[self._md5_key(path)] = md5

    @staticmethod
    def _md5_key(path: str) -> Tuple[str, int, int]:
        info = os.stat(path)
        return (path, info.st_size, info.st_mtime_ns)

    def upload(self, uploads: List[ArtifactUpload]) -> List[UploadedObject]:
        """Upload and verify files (see ``transfer.ArtifactUploader``)."""
        return ArtifactUploader(self.storage, self.transfer, self.progress, self.deadline).upload_all(uploads)


def find_reusable(
    records: Sequence[Record], holds_same: Callable[[Record], Any]
) -> Tuple[Optional[Record], Any, Optional[Record]]:
    """Look among same-name records for one this run can use instead of creating another.

    Returns ``(done, evidence, empty)``: ``done`` is the first linked record for
    which ``holds_same`` returns something true (``evidence``, e.g. its manifest);
    otherwise ``empty`` is the newest record without a link, to upload into.
    """
    for record in records:
        if record.get("link"):
            evidence = holds_same(record)
            if evidence:
                return record, evidence, None
    empty = [r for r in records if not r.get("link")]
    return None, None, (empty[-1] if empty else None)


class Cleanup:
    """What a run created, removed again when the run fails.

    After the first S3 failure the other S3 deletes are not tried (S3 is down or
    refusing; each would wait through its own retries) but named as leftovers.
    A record marked ``keep_if_s3_fails`` is then kept rather than deleted: a
    re-run finds it, clears its prefix and finishes it, whereas deleting it would
    orphan what is left in S3.

    ``owned`` is asked before each destructive step: once it says False
    (another run of the same job took the work over), nothing more is removed.
    After SIGTERM/SIGINT cleanup gets a fixed time
    (``Interrupted.CLEANUP_SECONDS`` from the signal) and S3 requests with short
    timeouts; ``pending`` always names what is not removed yet.
    """

    def __init__(self, services: Services, what: str, owned: Optional[Callable[[], bool]] = None) -> None:
        self.services = services
        self.what = what
        self.owned = owned or (lambda: True)
        self.prefix: Optional[str] = None
        self.keys: List[str] = []
        self._record: Optional[Tuple[str, Callable[[], None], bool]] = None
        self.pending: List[str] = []

    def objects(self, prefix: str, keys: Sequence[str]) -> None:
        """Multipart uploads under ``prefix`` and the objects ``keys`` are this run's."""
        self.prefix = prefix
        self.keys = list(keys)

    def record(self, label: str, delete: Callable[[], None], keep_if_s3_fails: bool = False) -> None:
        """The record named ``label`` (``IMS image record ID``) is this run's; ``delete`` removes it."""
        self._record = (label, delete, keep_if_s3_fails)

    def undo(self, original: BaseException) -> None:
        """Remove what the run created; raise ``CleanupError`` naming whatever is left."""
        LOGGER.warning("%s failed (%s); removing what this run created", self.what, type(original).__name__)
        storage = self._prepare(original)
        if not self.owned():
            LOGGER.warning("another run of this job owns this image now; leaving its objects and record to it")
            self.pending.clear()
            return
        try:
            s3_failed = self._undo_objects(storage)
            self._undo_record(s3_failed)
        except Interrupted as late:  # a signal during the undo of another failure: say what is left, now
            late.pending = self.pending
            LOGGER.warning("cleanup stopped by %s", late.signal_name)
        if self.pending:
            raise CleanupError(original, list(self.pending)) from original
        if isinstance(original, Interrupted):
            original.cleaned = True

    def _prepare(self, original: BaseException) -> S3Storage:
        """List what is to be removed, and pick the S3 client and time cleanup gets."""
        url = f"s3://{self.services.bucket}/"
        self.pending[:] = [f"multipart uploads under {url}{self.prefix}"] if self.prefix is not None else []
        self.pending += [f"{url}{key}" for key in self.keys]
        self.pending += [self._record[0]] if self._record is not None else []
        if not isinstance(original, Interrupted):
            self.services.deadline.allow_cleanup()
            return self.services.storage.for_cleanup(after_signal=False)
        original.pending = self.pending
        self.services.deadline.interrupt(original.at + Interrupted.CLEANUP_SECONDS)
        return self.services.storage.for_cleanup(after_signal=True)

    def _done(self, label: str, action: Callable[[], Any]) -> bool:
        """Run one S3 step of the undo; True when it worked (``label`` is then no longer pending)."""
        try:
            action()
        except Interrupted:
            raise
        except ImsHelperError as err:
            LOGGER.warning("cleanup: %s", err)
            return False
        self.pending.remove(label)
        return True

    def _undo_objects(self, storage: S3Storage) -> bool:
        """Abort the uploads and delete the keys until S3 fails; True when it did."""
        url = f"s3://{self.services.bucket}/"
        steps: List[Tuple[str, Callable[[], Any]]] = [
            (f"{url}{key}", functools.partial(storage.delete, key)) for key in self.keys
        ]
        if self.prefix is not None:
            abort = functools.partial(storage.abort_multipart_uploads, self.prefix)
            steps.insert(0, (f"multipart uploads under {url}{self.prefix}", abort))
        # any() stops at the first failure: the rest stay pending.
        return any(not self._done(label, action) for label, action in steps)

    def _undo_record(self, s3_failed: bool) -> None:
        if self._record is None:
            return
        label, delete, keep_if_s3_fails = self._record
        if s3_failed and keep_if_s3_fails:
            self.pending[self.pending.index(label)] = f"{label} (kept: a re-run of this job finishes it)"
            return
        if not self.owned():
            self.pending.remove(label)  # another run of the job took it over while we removed the objects
            return
        try:
            delete()
        except ImsApiError as err:
            if err.status != 404:  # already gone is what cleanup wants
                return
        except Interrupted:
            raise
        except ImsHelperError:
            return
        self.pending.remove(label)
