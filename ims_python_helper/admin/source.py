"""An image as stored: its IMS record, its manifest, and a ranged download of any of its objects.

``image verify`` and ``image export`` both start here: the record is read,
its link followed to the manifest, and each artifact is read through the pods'
download engine (``pod.download``) from a presigned GET URL, so the bytes are
fetched in parallel ranges and hashed in order as they arrive.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Optional

from ..clients.ims import Record
from ..errors import ImsApiError, InputError, StorageError
from ..pod.download import Downloader, DownloadOptions
from ..progress import Progress
from ..publish.checks import check_uuid
from ..publish.manifest import ArtifactLink, Manifest, ManifestEntry, ManifestError
from ..publish.workflow import Services

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    """An image record, where its manifest is, the manifest's bytes and what they say."""

    record: Record
    link: ArtifactLink
    manifest_bytes: bytes
    manifest: Manifest

    @property
    def image_id(self) -> str:
        """The record's id."""
        return str(self.record.get("id", ""))


class ImageMissing(InputError):
    """IMS has no such image, or it has no manifest to check against."""


def read_record(services: Services, image_id: str) -> Record:
    """The image record ``image_id``; a clear error when IMS does not know it."""
    image_id = check_uuid(image_id, "image id")
    try:
        return services.ims.get_image(image_id)
    except ImsApiError as err:
        if err.status == 404:
            raise ImageMissing(f"IMS has no image {image_id}; check the image id (ims image list)") from None
        raise


def manifest_link(record: Record) -> ArtifactLink:
    """Where the record's manifest is; an error naming the image when it has none."""
    link = record.get("link")
    if not isinstance(link, dict) or not isinstance(link.get("path"), str):
        raise ImageMissing(f"image {record.get('id')} has no link: it holds no artifacts to check or export")
    location = ArtifactLink(path=link["path"], etag=str(link.get("etag") or ""))
    if not location.bucket or not location.key:
        raise ImageMissing(f"image {record.get('id')} links to {location.path!r}, which is not an s3:// path")
    return location


def read_image(services: Services, image_id: str) -> StoredImage:
    """Read the record and its manifest; errors name what is missing or unreadable."""
    record = read_record(services, image_id)
    link = manifest_link(record)
    data = services.storage.get_bytes(link.key, bucket=link.bucket)
    if data is None:
        raise StorageError(f"the manifest of image {record.get('id')} ({link.path}) is missing from S3")
    try:
        manifest = Manifest.parse(data)
    except ManifestError as err:
        raise StorageError(f"the manifest of image {record.get('id')} ({link.path}) cannot be read: {err}") from None
    return StoredImage(record, link, data, manifest)


def manifest_md5(image: StoredImage) -> str:
    """md5 of the manifest's bytes as stored."""
    return hashlib.md5(image.manifest_bytes).hexdigest()


def artifact_name(entry: ManifestEntry) -> str:
    """How results and progress name an artifact: its key's last part (``rootfs``)."""
    return entry.link.key.rpartition("/")[2] or entry.type


class _OneOfMany(Progress):
    """Hands a download's events to the run's progress but keeps it open for the next artifact."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, name: str, total: int) -> None:
        self.progress.start(name, total)

    def advance(self, name: str, amount: int) -> None:
        self.progress.advance(name, amount)

    def finish(self, name: str) -> None:
        self.progress.finish(name)


def downloader(
    services: Services, entry: ManifestEntry, path: str, options: Optional[DownloadOptions] = None
) -> Downloader:
    """A download engine for one artifact, reading it from a presigned GET URL with the S3 settings' TLS trust."""
    storage = services.storage
    # Long enough for a slow link: every range of the artifact is asked for with this one URL.
    url = storage.presigned_get(entry.link.key, bucket=entry.link.bucket or None, expires=6 * 3600)
    chosen = replace(options or DownloadOptions(), verify=storage.settings.verify, timeout=storage.settings.timeout)
    return Downloader(
        url, path, chosen, progress=_OneOfMany(services.progress), deadline=services.deadline, name=artifact_name(entry)
    )
