"""The image manifest (version 1.0): built and read in one place."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from ..artifacts import SQUASHFS_ARTIFACT_TYPE
from ..errors import ImsHelperError

MANIFEST_VERSION = "1.0"


class ManifestError(ImsHelperError):
    """A manifest could not be read: not JSON, wrong version, or malformed entries."""


def _split(path: str) -> Tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` path; a path urlsplit cannot read (``s3://[x``) gives ('', '')."""
    try:
        parts = urlsplit(path)
    except ValueError:
        return "", ""
    return parts.netloc, parts.path.lstrip("/")


@dataclass(frozen=True)
class ArtifactLink:
    """Where an artifact is stored: ``s3://bucket/key`` and the object's ETag."""

    path: str
    etag: str = ""
    type: str = "s3"

    @classmethod
    def s3(cls, bucket: str, key: str, etag: str) -> ArtifactLink:
        """The link for ``key`` in ``bucket``; ETag quotes are stripped."""
        return cls(path=f"s3://{bucket}/{key}", etag=etag.strip('"'))

    @property
    def bucket(self) -> str:
        """Bucket part of the path ('' when the path is not a URL)."""
        return _split(self.path)[0]

    @property
    def key(self) -> str:
        """Key part of the path ('' when the path is not a URL)."""
        return _split(self.path)[1]

    def to_dict(self) -> Dict[str, str]:
        """The JSON shape IMS stores."""
        return {"path": self.path, "etag": self.etag, "type": self.type}


@dataclass(frozen=True)
class ManifestEntry:
    """One artifact in a manifest: its link, MIME type and the md5 of the whole file."""

    link: ArtifactLink
    type: str
    md5: str

    def to_dict(self) -> Dict[str, Any]:
        """The JSON shape written to the manifest and returned to callers."""
        return {"link": self.link.to_dict(), "type": self.type, "md5": self.md5}

    @classmethod
    def from_dict(cls, data: Any) -> ManifestEntry:
        """Read one entry; raise ``ManifestError`` when it lacks a link path or type."""
        if not isinstance(data, dict):
            raise ManifestError(f"manifest artifact entry is a {type(data).__name__}, expected an object")
        link = data.get("link")
        if not isinstance(link, dict) or not isinstance(link.get("path"), str) or not isinstance(link.get("type"), str):
            raise ManifestError("manifest artifact entry has no link with a path and a type")
        etag = link.get("etag", "")
        return cls(
            link=ArtifactLink(path=link["path"], etag=etag if isinstance(etag, str) else "", type=link["type"]),
            type=str(data.get("type", "")),
            md5=str(data.get("md5", "")),
        )


@dataclass
class Manifest:
    """An image manifest, version 1.0."""

    artifacts: List[ManifestEntry] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"))
    version: str = MANIFEST_VERSION

    def to_dict(self) -> Dict[str, Any]:
        """The JSON document."""
        return {"version": self.version, "created": self.created, "artifacts": [a.to_dict() for a in self.artifacts]}

    def to_json(self) -> bytes:
        """The bytes stored in S3 (sorted keys, indented, as earlier clients wrote them)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=4).encode("utf-8")

    def md5_by_type(self) -> Dict[str, str]:
        """Artifact MIME type to md5 (the last entry wins if a type repeats)."""
        return {entry.type: entry.md5 for entry in self.artifacts}

    def rootfs(self) -> Optional[ManifestEntry]:
        """The rootfs entry, if any."""
        return next((a for a in self.artifacts if a.type == SQUASHFS_ARTIFACT_TYPE), None)

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Read a manifest; raise ``ManifestError`` for anything but a well-formed version 1.0 manifest."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ManifestError("manifest is not valid JSON") from None
        if not isinstance(document, dict):
            raise ManifestError(f"manifest is a JSON {type(document).__name__}, expected an object")
        if document.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"manifest version is {document.get('version')!r}, expected {MANIFEST_VERSION!r}")
        artifacts = document.get("artifacts")
        if not isinstance(artifacts, list):
            raise ManifestError("manifest has no artifacts list")
        created = document.get("created", "")
        return cls(
            artifacts=[ManifestEntry.from_dict(a) for a in artifacts],
            created=created if isinstance(created, str) else str(created),
        )
