"""The image bundle: a directory an image is exported to and imported from.

Layout (format ``ims-image-bundle``, version 1)::

    DIR/bundle.json     the record file, written last: a bundle without it is unfinished
    DIR/manifest.json   the source image's manifest, byte for byte
    DIR/rootfs ...      one file per manifest artifact, named after its S3 key's last part

``bundle.json`` holds ``format``, ``version``, ``image`` (``id``, ``name``,
``arch``, ``metadata`` of the source record), ``manifest`` (its link and md5)
and ``artifacts``: per file its ``file`` name, MIME ``type``, ``md5``, ``size``
and the ``source`` S3 path. While an export runs, ``.export.json`` names the
image being exported, and each artifact is written as ``NAME.part`` with its
progress beside it (``NAME.part.json``, ``NAME.part.spans``); only a file whose
md5 matched is renamed to ``NAME``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List

from ..errors import InputError
from ..publish.checks import md5_of_file

BUNDLE_FORMAT = "ims-image-bundle"
BUNDLE_VERSION = 1
RECORD_FILE = "bundle.json"
MANIFEST_FILE = "manifest.json"
IN_PROGRESS_FILE = ".export.json"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESERVED = {RECORD_FILE, MANIFEST_FILE, IN_PROGRESS_FILE}


class BundleError(InputError):
    """A bundle directory cannot be used: missing, unfinished, of another format, or its files do not match."""


@dataclass(frozen=True)
class BundleArtifact:
    """One artifact file of a bundle."""

    file: str
    type: str
    md5: str
    size: int
    source: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """The JSON shape in ``bundle.json``."""
        return {"file": self.file, "type": self.type, "md5": self.md5, "size": self.size, "source": self.source}


def file_name_for(key: str, taken: List[str]) -> str:
    """A safe, unused file name for the object ``key`` (its last part when that is safe)."""
    name = key.rpartition("/")[2]
    if not _SAFE_NAME.match(name) or name in _RESERVED or name in taken or name.endswith(".part"):
        name = f"artifact-{len(taken)}"
    return name


def write_json_atomically(path: str, document: Dict[str, Any]) -> None:
    """Write ``document`` beside ``path`` and rename it into place: the file is whole or absent."""
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=4, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def read_json(path: str, what: str) -> Dict[str, Any]:
    """A JSON object from ``path``; a ``BundleError`` naming ``what`` when it is absent or not an object."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise BundleError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise BundleError(f"{what} {path} cannot be read: {err}") from None
    if not isinstance(document, dict):
        raise BundleError(f"{what} {path} is not a JSON object")
    return document


@dataclass(frozen=True)
class Bundle:
    """A finished bundle as read from its directory (nothing checked against the files yet)."""

    directory: str
    document: Dict[str, Any]
    artifacts: List[BundleArtifact]

    @property
    def image(self) -> Dict[str, Any]:
        """The source record's fields kept in the bundle (id, name, arch, metadata)."""
        image = self.document.get("image")
        return image if isinstance(image, dict) else {}

    def path(self, artifact: BundleArtifact) -> str:
        """Where ``artifact``'s file is."""
        return os.path.join(self.directory, artifact.file)


def read_bundle(directory: str) -> Bundle:
    """Read ``DIR/bundle.json``; a ``BundleError`` when it is missing, unfinished or of another format/version."""
    if not os.path.isdir(directory):
        raise BundleError(f"bundle directory {directory} does not exist; give the DIR of an image export")
    record = os.path.join(directory, RECORD_FILE)
    if not os.path.exists(record) and os.path.exists(os.path.join(directory, IN_PROGRESS_FILE)):
        raise BundleError(f"{directory} holds an unfinished export; run image export again to finish it")
    document = read_json(record, "bundle record")
    if document.get("format") != BUNDLE_FORMAT or document.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"{record} is format {document.get('format')!r} version {document.get('version')!r}; "
            f"this client reads {BUNDLE_FORMAT!r} version {BUNDLE_VERSION}"
        )
    entries = document.get("artifacts")
    if not isinstance(entries, list) or not entries:
        raise BundleError(f"{record} lists no artifacts")
    artifacts = []
    for entry in entries:
        try:
            artifact = BundleArtifact(str(entry["file"]), str(entry["type"]), str(entry["md5"]), int(entry["size"]))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{record} has an artifact entry without file, type, md5 and size") from None
        if not _SAFE_NAME.match(artifact.file) or artifact.file in _RESERVED:
            raise BundleError(f"{record} names the artifact file {artifact.file!r}, which is not a plain file name")
        artifacts.append(artifact)
    return Bundle(directory, document, artifacts)


def check_files(bundle: Bundle) -> Dict[str, str]:
    """Check every artifact file's size and md5 against the record; returns path -> md5. Reads every byte."""
    checked: Dict[str, str] = {}
    for artifact in bundle.artifacts:
        path = bundle.path(artifact)
        try:
            size = os.stat(path).st_size
        except OSError:
            raise BundleError(f"bundle file {path} is missing; export the image again") from None
        if size != artifact.size:
            raise BundleError(f"bundle file {path} has {size} bytes, the bundle record says {artifact.size}")
        md5 = md5_of_file(path)
        if md5 != artifact.md5:
            raise BundleError(f"bundle file {path} has md5 {md5}, the bundle record says {artifact.md5}; export again")
        checked[path] = md5
    return checked
