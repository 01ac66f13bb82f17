"""``image export``: an image's manifest and artifacts into a bundle directory (format in ``bundle``).

Every artifact is read by the ranged download engine straight into
``NAME.part`` and its md5 taken from the network bytes; it is renamed to
``NAME`` only when that md5 is the manifest's. Each span's progress is
recorded as the bytes land (``NAME.part.spans``: one 8-byte count per span,
written in place), so a run that was killed is followed by one that reads
back what is there and asks only for the rest. ``bundle.json`` is written
last, whole or not at all.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any, Dict, List, Optional

import requests

from ..errors import ImsHelperError, StorageError, VerificationError
from ..pod.download import DownloadOptions
from ..pod.resume import SpanLedger
from ..publish.manifest import ManifestEntry
from ..publish.workflow import Services
from .bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    IN_PROGRESS_FILE,
    MANIFEST_FILE,
    RECORD_FILE,
    BundleArtifact,
    BundleError,
    file_name_for,
    read_json,
    write_json_atomically,
)
from .source import StoredImage, downloader, manifest_md5, read_image

LOGGER = logging.getLogger(__name__)
_COUNT = struct.Struct("<q")


class ExportError(ImsHelperError):
    """The bundle directory cannot be written (unwritable, full, or holding something else)."""


class SpanFile:
    """``NAME.part.spans``: the bytes of each span already in ``NAME.part``, updated in place as they land."""

    def __init__(self, path: str, spans: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        data = os.pread(self.fd, spans * _COUNT.size, 0)
        counts = [_COUNT.unpack_from(data, i * _COUNT.size)[0] for i in range(len(data) // _COUNT.size)]
        self.ledger = SpanLedger(counts + [0] * (spans - len(counts)), self.record)

    def record(self, index: int, written: int) -> None:
        """Span ``index`` has ``written`` bytes in the file (an 8-byte write at its slot: no torn state)."""
        os.pwrite(self.fd, _COUNT.pack(written), index * _COUNT.size)

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)


class ImageExporter:
    """Exports one image into a bundle directory (see the module docstring)."""

    def __init__(self, services: Services, options: Optional[DownloadOptions] = None) -> None:
        self.services = services
        self.options = options or DownloadOptions()
        #: Bytes already in the directory from an earlier run, and bytes fetched by this one.
        self.kept = 0
        self.fetched = 0

    def export(self, image_id: str, directory: str) -> Dict[str, Any]:
        """Export ``image_id`` into ``directory``; returns the result document with the bundle record."""
        image = read_image(self.services, image_id)
        directory = os.path.abspath(directory)
        finished = self._prepare(directory, image)
        if finished is not None:
            return self._result(directory, finished, already=True)
        try:
            artifacts = self._fetch_all(image, directory)
            with open(os.path.join(directory, MANIFEST_FILE), "wb") as handle:
                handle.write(image.manifest_bytes)
            document = self._record(image, artifacts)
            write_json_atomically(os.path.join(directory, RECORD_FILE), document)
        except (ImsHelperError, requests.RequestException):
            raise
        except OSError as err:
            raise ExportError(self._write_failure(directory, err)) from None
        _remove(os.path.join(directory, IN_PROGRESS_FILE))
        self.services.progress.close(True)
        return self._result(directory, document, already=False)

    def _result(self, directory: str, document: Dict[str, Any], already: bool) -> Dict[str, Any]:
        return {
            "result": "success",
            "image_id": document["image"]["id"],
            "directory": directory,
            "already_exported": already,
            "bytes_kept": self.kept,
            "bytes_fetched": self.fetched,
            "bundle": document,
        }

    @staticmethod
    def _write_failure(directory: str, err: OSError) -> str:
        where = err.filename or directory
        return (
            f"cannot write {where}: {err.strerror or err}; free space in {directory} or export elsewhere "
            "(a re-run into the same directory fetches only what is missing)"
        )

    def _prepare(self, directory: str, image: StoredImage) -> Optional[Dict[str, Any]]:
        """Make the directory ready; the finished record when it already holds this export, else None."""
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise ExportError(f"cannot create export directory {directory}: {err.strerror}; choose another") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ExportError(f"export directory {directory} is not writable; choose a writable directory")
        ours = {"image_id": image.image_id, "manifest_md5": manifest_md5(image)}
        record = os.path.join(directory, RECORD_FILE)
        if os.path.exists(record):
            document = read_json(record, "bundle record")
            if (
                document.get("image", {}).get("id") == ours["image_id"]
                and document.get("manifest", {}).get("md5") == ours["manifest_md5"]
            ):
                return document
            raise BundleError(f"{directory} already holds a finished bundle of another image; choose a new directory")
        marker = os.path.join(directory, IN_PROGRESS_FILE)
        if os.path.exists(marker):
            if read_json(marker, "export marker") != ours:
                raise BundleError(f"{directory} holds an unfinished export of another image; choose a new directory")
        elif os.listdir(directory):
            raise BundleError(f"export directory {directory} is not empty; choose an empty or new directory")
        try:
            write_json_atomically(marker, ours)
        except OSError as err:
            raise ExportError(self._write_failure(directory, err)) from None
        return None

    def _fetch_all(self, image: StoredImage, directory: str) -> List[BundleArtifact]:
        taken: List[str] = []
        artifacts = []
        for entry in image.manifest.artifacts:
            name = file_name_for(entry.link.key, taken)
            taken.append(name)
            artifacts.append(self._fetch(entry, os.path.join(directory, name)))
        return artifacts

    def _fetch(self, entry: ManifestEntry, final: str) -> BundleArtifact:
        """One artifact into ``final`` (through ``final.part``), resuming what an earlier run left."""
        info = self.services.storage.head(entry.link.key, bucket=entry.link.bucket or None)
        if info is None:
            raise StorageError(f"{entry.link.path} is missing from S3; the image cannot be exported whole")
        artifact = BundleArtifact(os.path.basename(final), entry.type, entry.md5, info.size, entry.link.path)
        if os.path.exists(final) and os.path.getsize(final) == info.size:
            LOGGER.info("%s is already exported (its md5 was checked when it was written)", final)
            self.kept += info.size
            return artifact
        part = final + ".part"
        header = {"source": entry.link.path, "etag": info.etag, "size": info.size, "md5": entry.md5}
        header["part_size"] = self.options.part_size
        spans = self._resume_state(part, header)
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        kept = sum(spans.ledger.written)
        self.kept += kept
        try:
            result = downloader(self.services, entry, part, self.options).fetch_into(fd, spans.ledger)
        finally:
            os.close(fd)
            spans.close()
        self.fetched += result.size - kept
        if result.md5 != entry.md5:
            _remove(part, part + ".json", part + ".spans")
            raise VerificationError(
                f"{entry.link.path} has md5 {result.md5}, its manifest says {entry.md5}; nothing kept of it "
                "(check the source with image verify)"
            )
        os.replace(part, final)
        _remove(part + ".json", part + ".spans")
        return artifact

    def _resume_state(self, part: str, header: Dict[str, Any]) -> SpanFile:
        """The span file of ``part``; started afresh unless the earlier run read the same object the same way."""
        state = part + ".json"
        count = max(1, -(-header["size"] // header["part_size"]))
        try:
            earlier = read_json(state, "export state") if os.path.exists(state) else None
        except BundleError:
            earlier = None
        if earlier != header or not os.path.exists(part):
            if earlier is not None:
                LOGGER.info("%s: the object or the part size changed since the last run; starting it afresh", part)
            _remove(part, part + ".spans")
            write_json_atomically(state, header)
        return SpanFile(part + ".spans", count)

    def _record(self, image: StoredImage, artifacts: List[BundleArtifact]) -> Dict[str, Any]:
        record = image.record
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "image": {
                "id": image.image_id,
                "name": record.get("name"),
                "arch": record.get("arch"),
                "metadata": record.get("metadata") or {},
            },
            "manifest": {"file": MANIFEST_FILE, "md5": manifest_md5(image), "source": image.link.path},
            "artifacts": [artifact.to_dict() for artifact in artifacts],
        }
