"""Safe extraction of a tar archive (a recipe): nothing outside the destination, nothing half-done.

Every member is checked before anything is written: no absolute names, no
``..`` components, only regular files, directories, symlinks and hardlinks (no
devices, fifos or sockets), hardlinks only to earlier members and symlinks only
to relative targets. The archive is then written into a fresh directory made
inside the destination (so the final moves stay on one filesystem, even when
the destination is a volume's root), and each path is checked again as it is
written: its parent must resolve inside that directory, a symlink's target
must resolve inside it, and files are created without following a link. Only
when every member is in place are the top-level entries moved into the
destination; on any refusal or error the directory is removed and the
destination is as it was.

Python's own tar filters (3.12 and later) are applied too where present, as a
second opinion; the checks here do not depend on them (the package runs on 3.9).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import tempfile
from typing import Dict, List, Tuple, Union

from ..errors import InputError

LOGGER = logging.getLogger(__name__)
COPY_CHUNK = 1024 * 1024


class UnsafeArchive(InputError):
    """An archive member would land outside the destination, or is of a kind never extracted."""


def _member_parts(name: str, archive: str) -> Tuple[str, ...]:
    """The member name as path components, refusing absolute names and ``..``."""
    if not name or "\x00" in name:
        raise UnsafeArchive(f"{archive}: refused member {name!r}: empty or NUL in its name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive}: refused member {name!r}: absolute path; recipe archives hold relative paths")
    parts = tuple(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: refused member {name!r}: '..' in its path points outside the destination")
    return parts


#: Members already checked, by name components (hardlinks may point only at earlier files).
_Seen = Dict[Tuple[str, ...], tarfile.TarInfo]


def _inside(root: str, path: str) -> bool:
    """True when the real ``path`` is ``root`` or below it (by components, not string prefix)."""
    return os.path.commonpath([root, path]) == root


def _refuse(archive: str, member: tarfile.TarInfo, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"{archive}: refused member {member.name!r}: {why}")


#: What a member may be; anything else (devices, fifos, sockets) is refused.
_ALLOWED_KINDS = (tarfile.TarInfo.isreg, tarfile.TarInfo.isdir, tarfile.TarInfo.issym, tarfile.TarInfo.islnk)


def _check_kind(member: tarfile.TarInfo, parts: Tuple[str, ...], archive: str, seen: _Seen) -> None:
    if member.isdev() or member.isfifo() or not any(kind(member) for kind in _ALLOWED_KINDS):
        kind = "fifo" if member.isfifo() else "device file" if member.isdev() else "special file"
        raise _refuse(archive, member, f"{kind}; only files, directories and links")


def _check_symlink(member: tarfile.TarInfo, parts: Tuple[str, ...], archive: str, seen: _Seen) -> None:
    if not member.issym():
        return
    target = member.linkname
    if not target or target.startswith("/"):
        raise _refuse(archive, member, f"symlink to absolute path {target!r} points outside the destination")
    # Lexically first (a link one level down may climb one level, no more); the real check follows on disk.
    depth = len(parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise _refuse(archive, member, f"symlink to {target!r} points outside the destination")


def _check_hardlink(member: tarfile.TarInfo, parts: Tuple[str, ...], archive: str, seen: _Seen) -> None:
    if not member.islnk():
        return
    earlier = seen.get(_member_parts(member.linkname, archive))
    if earlier is None or not earlier.isreg():
        raise _refuse(archive, member, f"hardlink to {member.linkname!r}, which is not a file earlier in the archive")


def _check_with_data_filter(member: tarfile.TarInfo, parts: Tuple[str, ...], archive: str, seen: _Seen) -> None:
    """Python's own tar filter (3.12 and later), as a second opinion."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return
    try:
        data_filter(member, "/nonexistent-destination")
    except tarfile.FilterError as err:
        raise _refuse(archive, member, str(err)) from None


#: The checks every member passes before anything is written, in order; each raises ``UnsafeArchive``.
MEMBER_CHECKS = (_check_kind, _check_symlink, _check_hardlink, _check_with_data_filter)


def check_members(tar: tarfile.TarFile, archive: str) -> List[Tuple[tarfile.TarInfo, Tuple[str, ...]]]:
    """Check every member before anything is written; returns the members with their name components."""
    checked = []
    seen: _Seen = {}
    for member in tar.getmembers():
        parts = _member_parts(member.name, archive)
        for check in MEMBER_CHECKS:
            check(member, parts, archive, seen)
        seen[parts] = member
        checked.append((member, parts))
    return checked


def _real_parent(member: tarfile.TarInfo, parts: Tuple[str, ...], root: str, archive: str) -> str:
    """The member's directory, made if missing, resolved, and checked to be inside ``root``."""
    parent = os.path.join(root, *parts[:-1])
    os.makedirs(parent, exist_ok=True)
    real_parent = os.path.realpath(parent)
    if not _inside(root, real_parent):
        raise _refuse(archive, member, "its directory resolves outside the destination")
    return real_parent


def _place_directory(member: tarfile.TarInfo, path: str, archive: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    os.makedirs(path, exist_ok=True)
    if os.path.islink(path):
        raise _refuse(archive, member, "a symlink stands where it is a directory")


def _clear(member: tarfile.TarInfo, path: str, archive: str) -> None:
    """Remove an earlier member of the same name (a later one replaces it, as tar does); never a directory."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        raise _refuse(archive, member, "a directory of that name is in the archive")
    os.unlink(path)


def _place_symlink(member: tarfile.TarInfo, path: str, root: str, archive: str) -> None:
    resolved = os.path.realpath(os.path.join(os.path.dirname(path), member.linkname))
    if not _inside(root, resolved):
        raise _refuse(archive, member, f"symlink to {member.linkname!r} resolves outside the destination")
    os.symlink(member.linkname, path)


def _place_hardlink(member: tarfile.TarInfo, path: str, root: str, archive: str) -> None:
    source = os.path.realpath(os.path.join(root, *_member_parts(member.linkname, archive)))
    if not _inside(root, source) or not os.path.isfile(source):
        raise _refuse(archive, member, f"hardlink to {member.linkname!r} resolves outside the destination")
    os.link(source, path)


def _place_file(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, archive: str) -> None:
    source_handle = tar.extractfile(member)
    if source_handle is None:
        raise _refuse(archive, member, "no data for a regular file")
    # O_NOFOLLOW|O_EXCL: the path was just cleared, so nothing may have put a link there since.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as target, source_handle:
        shutil.copyfileobj(source_handle, target, COPY_CHUNK)
    os.chmod(path, member.mode & 0o777)
    os.utime(path, (member.mtime, member.mtime))


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, parts: Tuple[str, ...], root: str, archive: str
) -> None:
    if not parts:
        return  # "." itself
    path = os.path.join(_real_parent(member, parts, root, archive), parts[-1])
    if member.isdir():
        _place_directory(member, path, archive)
        return
    _clear(member, path, archive)
    if member.issym():
        _place_symlink(member, path, root, archive)
    elif member.islnk():
        _place_hardlink(member, path, root, archive)
    else:
        _place_file(tar, member, path, archive)


def safe_extract(archive: Union[str, os.PathLike], destination: Union[str, os.PathLike]) -> List[str]:
    """Extract the tar ``archive`` (any compression tarfile reads) into ``destination``, safely.

    Returns the top-level names placed in ``destination``. Raises ``UnsafeArchive``
    naming the first refused member, or ``InputError`` when the file is not a
    readable tar archive; in both cases nothing of the archive is left behind.
    Top-level entries already in ``destination`` with the same names are replaced.
    """
    archive_path = os.fspath(archive)
    dest = os.path.realpath(os.fspath(destination))
    os.makedirs(dest, exist_ok=True)
    shown = os.path.basename(archive_path)
    staging = tempfile.mkdtemp(prefix=".extract-", dir=dest)
    root = os.path.realpath(staging)
    try:
        try:
            tar = tarfile.open(archive_path, "r:*")  # noqa: SIM115 - closed by the with below
        except (tarfile.TarError, OSError) as err:
            raise InputError(f"{shown} is not a readable tar archive ({err}); check the recipe upload") from None
        with tar:
            try:
                members = check_members(tar, shown)
                directories = []
                for member, parts in members:
                    _write_member(tar, member, parts, root, shown)
                    if member.isdir() and parts:
                        directories.append((os.path.join(root, *parts), member.mode & 0o777))
            except (tarfile.TarError, EOFError, OSError) as err:
                raise InputError(f"{shown}: cannot extract ({err}); the archive may be truncated") from None
        # Directory modes last: a read-only directory would have refused its own members.
        for path, mode in reversed(directories):
            os.chmod(path, mode | stat.S_IRWXU)
        names = sorted(os.listdir(root))
        for name in names:
            target = os.path.join(dest, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)
            os.replace(os.path.join(root, name), target)
        LOGGER.info("extracted %s into %s (%d members)", shown, dest, len(members))
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)
