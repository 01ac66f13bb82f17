"""Input checks: every name, id, file and archive a caller gives is checked before any request is sent."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from ..errors import InputError, InvalidIdError, RefusedInput
from ..vocabulary import ARCHES, ARTIFACT_KINDS, JOB_STATUSES, MAX_NAME_LENGTH, RECIPE_DISTROS, ArtifactKind
from .integrity import HashingReader

LOGGER = logging.getLogger(__name__)
HASH_BLOCK = 1024 * 1024

T = TypeVar("T")
PathArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None]


@dataclass(frozen=True)
class LocalArtifact:
    """An artifact file given by the caller, checked to be a readable regular file."""

    kind: ArtifactKind
    path: str
    size: int


def check_name(name: Any, what: str = "image name") -> str:
    """A name must be a printable string of 1 to 256 characters (``RefusedInput``, an ``HTTPError``, otherwise)."""
    if not isinstance(name, str) or not name.strip():
        raise RefusedInput(f"the {what} is empty; give a descriptive name")
    if len(name) > MAX_NAME_LENGTH:
        raise RefusedInput(f"the {what} is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if not name.isprintable():
        raise RefusedInput(f"the {what} {name!r} contains control characters; use printable characters only")
    return name


def check_uuid(value: Any, what: str = "job id") -> str:
    """An IMS id must be a UUID (``InvalidIdError``, an ``HTTPError`` like IMS's 404 for it, otherwise)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidIdError(f"the {what} {str(value)[:80]!r} is not a UUID (like 0e6d4c2a-...-5f1b)") from None


def known_or_passed(value: T, known: Sequence[str], what: str) -> T:
    """``value`` as given: IMS judges its own vocabulary, so a value this client does not know still goes to IMS.

    A newer IMS may accept a distro, architecture or status added after these
    tables were written; an older one answers with its own error, which the
    caller gets as an ``ImsApiError`` (an ``HTTPError``) carrying IMS's answer.
    """
    if value not in known:
        LOGGER.debug("%s %r is not one this client knows (%s); IMS decides", what, value, ", ".join(known))
    return value


def check_arch(arch: Optional[str]) -> Optional[str]:
    """``None`` or an architecture, passed to IMS as given (see ``known_or_passed``)."""
    return None if arch is None else known_or_passed(arch, ARCHES, "architecture")


def check_file(path: Any, what: str) -> Tuple[str, int]:
    """Resolve ``path`` and check it is a readable regular file; returns the real path and size."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise InputError(f"{what} was given {len(path)} times; give exactly one file")
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what} must be a file path, not a {type(path).__name__}")
    given = os.fspath(path)
    if not given:
        raise InputError(f"{what} path is empty; give a file path")
    if "\x00" in str(given):
        raise InputError(f"{what} path contains a NUL character")
    real = os.path.realpath(given)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise InputError(f"{what} file {given!r} does not exist; check the path") from None
    except OSError as err:
        raise InputError(f"{what} file {given!r} cannot be read: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what} path {given!r} is a directory; give the file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} path {given!r} is not a regular file (device, pipe or socket)")
    try:
        with open(real, "rb"):
            pass
    except OSError as err:
        raise InputError(f"{what} file {given!r} is not readable: {err.strerror}") from None
    if real != os.path.abspath(given):
        LOGGER.info("%s %s is a link to %s", what, given, real)
    return real, info.st_size


def resolve_artifacts(paths: Mapping[str, PathArg]) -> List[LocalArtifact]:
    """Check the artifact files given per kind name (``rootfs`` ...), in table order."""
    artifacts = []
    for kind in ARTIFACT_KINDS:
        value = paths.get(kind.name)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        real, size = check_file(value, f"{kind.name} ({kind.flags[0]})")
        artifacts.append(LocalArtifact(kind=kind, path=real, size=size))
    return artifacts


#: Why a publish without a rootfs is refused.
NO_ROOTFS = "no rootfs given (-r/--rootfs); IMS links only images with exactly one rootfs"


def check_publish(
    image_name: Any, job_id: Optional[str], arch: Optional[str], paths: Mapping[str, PathArg]
) -> Tuple[Optional[str], List[LocalArtifact]]:
    """Check a publish before anything is contacted: the name, job id, arch and files; returns job id and files."""
    check_name(image_name)
    checked_job = check_uuid(job_id) if job_id else None
    check_arch(arch)
    artifacts = resolve_artifacts(paths)
    if not any(a.kind.name == "rootfs" for a in artifacts):
        raise RefusedInput(NO_ROOTFS)
    return checked_job, artifacts


def md5_of_file(path: str) -> str:
    """Hex md5 of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_job_status(status: str) -> str:
    """A job state, passed to IMS as given (see ``known_or_passed``)."""
    return known_or_passed(status, JOB_STATUSES, "job status")


def check_distro(distro: str) -> str:
    """A recipe's distribution, passed to IMS as given (see ``known_or_passed``)."""
    return known_or_passed(distro, RECIPE_DISTROS, "distro")


def check_templates(template_dictionary: Optional[Mapping[str, str]]) -> dict:
    """A recipe's template dictionary: non-empty string keys, string values."""
    templates = dict(template_dictionary or {})
    for key, value in templates.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise RefusedInput("template dictionary keys and values must be non-empty strings")
    return templates


def check_gzipped_tar(path: str) -> str:
    """Refuse anything but a complete gzip-compressed tar archive; returns the file's hex md5.

    The file is read once, to its end: every tar header is walked and gzip checks
    its CRC and length, so a truncated or corrupted archive is refused too; the
    md5 is taken from the same bytes.
    """
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise InputError(f"recipe {path!r} is not gzip-compressed; give a .tar.gz archive")
        handle.seek(0)
        reader = HashingReader(handle)
        try:
            with gzip.GzipFile(fileobj=reader, mode="rb") as unzipped:  # type: ignore[call-overload]  # reading needs no seek
                with tarfile.open(fileobj=unzipped, mode="r|") as archive:
                    for _member in archive:
                        pass
                while unzipped.read(HASH_BLOCK):  # to the end, where gzip checks CRC and length
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise InputError(f"recipe {path!r} is not a readable gzipped tar archive ({type(err).__name__})") from None
        while reader.read(HASH_BLOCK):  # whatever gzip did not need still belongs to the md5
            pass
    return reader.md5


def recipe_md5(path: str) -> str:
    """The recipe file's hex md5; a file that is not a readable gzipped tar is warned about, not refused.

    Earlier clients uploaded any file, and callers (the artifact loader's sample
    manifest among them) rely on it: the check warns and the upload goes on.
    """
    try:
        return check_gzipped_tar(path)
    except InputError as err:
        LOGGER.warning("%s; uploading it as given (IMS jobs expect a gzipped tar)", err)
        return md5_of_file(path)
