"""``image verify``: are an image's artifacts in S3 still what its manifest says?

Quick checks need no object body: the record's link against the stored
manifest (ETag, and the manifest's own ``md5sum`` metadata), then per
artifact that the object exists, that its ETag is the one the manifest
recorded (an object rewritten since, even with bytes of the same size, has
another), and that its ``md5sum`` metadata agrees with the manifest. The full
check adds the md5 of every byte, read through the ranged download engine into
the hash alone: nothing is written to disk, memory stays within the engine's
window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import ImsHelperError
from ..pod.download import DownloadOptions
from ..publish.manifest import ManifestEntry
from ..publish.workflow import Services
from .source import StoredImage, artifact_name, downloader, manifest_md5, read_image

LOGGER = logging.getLogger(__name__)

OK = "ok"
MISSING = "missing"
SIZE_MISMATCH = "size mismatch"
MD5_MISMATCH = "md5 mismatch"
ETAG_MISMATCH = "etag mismatch"


@dataclass
class Check:
    """What one object's check found: ``status`` and, for a mismatch, both values."""

    name: str
    path: str
    type: str
    status: str = OK
    expected_md5: str = ""
    md5: Optional[str] = None
    size: Optional[int] = None
    problems: List[str] = field(default_factory=list)

    def fail(self, status: str, problem: str) -> None:
        """Record a problem; the first one sets the status."""
        if self.status == OK:
            self.status = status
        self.problems.append(problem)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON shape of one entry of the result."""
        data: Dict[str, Any] = {"name": self.name, "path": self.path, "type": self.type, "status": self.status}
        data.update({"expected_md5": self.expected_md5, "md5": self.md5, "size": self.size})
        if self.problems:
            data["problems"] = self.problems
        return data


class ImageVerifier:
    """Checks one image's manifest and artifacts (see the module docstring)."""

    def __init__(self, services: Services, options: Optional[DownloadOptions] = None) -> None:
        self.services = services
        self.options = options

    def verify(self, image_id: str, quick: bool = False) -> Dict[str, Any]:
        """The result document: ``ok`` is True only when every check holds."""
        image = read_image(self.services, image_id)
        manifest = self._check_manifest(image)
        checks = [self._check_object(entry, quick) for entry in image.manifest.artifacts]
        ok = manifest.status == OK and all(check.status == OK for check in checks)
        result: Dict[str, Any] = {
            "result": "success" if ok else "failure",
            "ok": ok,
            "mode": "quick" if quick else "full",
            "image_id": image.image_id,
            "manifest": manifest.to_dict(),
            "artifacts": [check.to_dict() for check in checks],
        }
        if not ok:
            bad = [check for check in [manifest, *checks] if check.status != OK]
            result["error"] = "; ".join(f"{check.name}: {', '.join(check.problems)}" for check in bad)
        self.services.progress.close(ok)
        return result

    def _check_manifest(self, image: StoredImage) -> Check:
        check = Check("manifest", image.link.path, "application/json", expected_md5=manifest_md5(image))
        check.md5, check.size = manifest_md5(image), len(image.manifest_bytes)
        info = self.services.storage.head(image.link.key, bucket=image.link.bucket)
        if info is None:
            check.fail(MISSING, f"{image.link.path} is missing")
            return check
        if image.link.etag and info.etag != image.link.etag:
            check.fail(ETAG_MISMATCH, f"the record links ETag {image.link.etag}, the object has {info.etag}")
        stored = info.metadata.get("md5sum")
        if stored and stored != check.md5:
            check.fail(MD5_MISMATCH, f"md5sum metadata {stored}, bytes {check.md5}")
        return check

    def _check_object(self, entry: ManifestEntry, quick: bool) -> Check:
        check = Check(artifact_name(entry), entry.link.path, entry.type, expected_md5=entry.md5)
        info = self.services.storage.head(entry.link.key, bucket=entry.link.bucket or None)
        if info is None:
            check.fail(MISSING, f"{entry.link.path} is missing")
            return check
        check.size = info.size
        if entry.link.etag and info.etag != entry.link.etag:
            check.fail(ETAG_MISMATCH, f"manifest ETag {entry.link.etag}, object ETag {info.etag} (rewritten since)")
        stored = info.metadata.get("md5sum")
        if stored and stored != entry.md5:
            check.fail(MD5_MISMATCH, f"manifest md5 {entry.md5}, md5sum metadata {stored}")
        if not quick:
            self._check_bytes(entry, check, info.size)
        return check

    def _check_bytes(self, entry: ManifestEntry, check: Check, size: int) -> None:
        """The md5 of the object's bytes, taken by the download engine with nothing written."""
        try:
            read = downloader(self.services, entry, "", self.options).digest()
        except ImsHelperError as err:
            check.fail(MISSING, f"cannot read {entry.link.path}: {err}")
            return
        check.md5 = read.md5
        if read.size != size:
            check.fail(SIZE_MISMATCH, f"HEAD says {size} bytes, the body had {read.size}")
        if read.md5 != entry.md5:
            check.fail(MD5_MISMATCH, f"manifest md5 {entry.md5}, object md5 {read.md5}")
