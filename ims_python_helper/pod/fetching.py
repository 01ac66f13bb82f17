"""Fetching for a job pod: an image (download, md5 check, unsquash) or a recipe (download, safe extraction, templates).

The library calls ``fetch_image`` and ``fetch_recipe`` raise ``ImsHelperError``;
the pods' fixed entry ``ims_python_helper.fetch`` wraps them for pod scripts,
and the CLI's step commands (``image fetch``, ``recipe fetch``) call them too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from ..clients.deadline import Deadline
from ..errors import ConfigError, InputError
from ..progress import Progress
from .download import DownloadOptions, download_file
from .extract import safe_extract
from .job import JobStatus
from .template import DEFAULT_DICTIONARY_PATH, template_recipe

LOGGER = logging.getLogger(__name__)

#: Files the job's later containers use to signal each other; stale ones from an earlier attempt are removed.
SIGNAL_FILES = ("ready", "complete", "exiting")
IMAGE_ARCHIVE = "image.sqsh"
IMAGE_ROOT = "image-root"
RECIPE_ARCHIVE = "recipe.tgz"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class FetchOptions:
    """How a fetch runs: the job it reports to, the md5 to check, TLS, download tuning, progress, deadline, logger."""

    #: The job set to ``fetching_image``/``fetching_recipe`` first (None: no status is set).
    job: Optional[JobStatus] = None
    expected_md5: Optional[str] = None
    #: requests' ``verify`` for the download; the one TLS setting of a fetch (it wins over ``download``'s).
    verify: Union[bool, str] = True
    download: Optional[DownloadOptions] = None
    progress: Optional[Progress] = None
    deadline: Optional[Deadline] = None
    logger: Optional[logging.Logger] = None

    @property
    def log(self) -> logging.Logger:
        """The logger to use."""
        return self.logger or LOGGER


def _download_into(path: PathLike, archive_name: str, status: str, url: str, how: FetchOptions) -> Tuple[str, str]:
    """Report ``status``, make the directory and download into it; returns (directory, archive path)."""
    directory = os.fspath(path)
    if how.job is not None:
        how.job.set(status)
    os.makedirs(directory, exist_ok=True)
    archive = os.path.join(directory, archive_name)
    options = dataclasses.replace(how.download or DownloadOptions(), verify=how.verify)
    result = download_file(
        url, archive, how.expected_md5, options=options, progress=how.progress, deadline=how.deadline
    )
    how.log.info("downloaded %s (%d bytes, md5 %s)", archive, result.size, result.md5)
    return directory, archive


def remove_signal_files(path: PathLike, logger: Optional[logging.Logger] = None) -> None:
    """Remove ``ready``, ``complete`` and ``exiting`` from ``path`` when present."""
    for name in SIGNAL_FILES:
        target = os.path.join(os.fspath(path), name)
        if os.path.lexists(target):
            os.unlink(target)
            (logger or LOGGER).info("removed stale signal file %s", target)


def unsquash(archive: str, destination: str) -> None:
    """``unsquashfs -f -d DESTINATION ARCHIVE``; raises with unsquashfs's last error line on failure."""
    if shutil.which("unsquashfs") is None:
        raise ConfigError("unsquashfs is not installed; install squashfs-tools")
    done = subprocess.run(["unsquashfs", "-f", "-d", destination, archive], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise InputError(f"unsquashfs of {os.path.basename(archive)} failed: {reason}")


def fetch_image(path: PathLike, url: str, unpack: bool = True, how: Optional[FetchOptions] = None) -> str:
    """Download an image's rootfs to ``PATH/image.sqsh`` and, with ``unpack``, unsquash it to ``PATH/image-root``.

    Sets ``how.job`` to ``fetching_image`` first (when given). Returns the
    archive's path (without ``unpack``) or the unpacked root's. Raises ``ImsHelperError``.
    """
    how = how or FetchOptions()
    directory, archive = _download_into(path, IMAGE_ARCHIVE, "fetching_image", url, how)
    remove_signal_files(directory, how.log)
    if not unpack:
        return archive
    root = os.path.join(directory, IMAGE_ROOT)
    unsquash(archive, root)
    os.unlink(archive)
    how.log.info("unpacked the image into %s", root)
    return root


def _remove_members(directory: str, names: List[str]) -> None:
    for name in names:
        target = os.path.join(directory, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.lexists(target):
            os.unlink(target)


def fetch_recipe(
    path: PathLike, url: str, dictionary_path: Optional[PathLike] = None, how: Optional[FetchOptions] = None
) -> List[str]:
    """Download a recipe to ``PATH/recipe.tgz``, extract it safely into ``PATH``, template it, delete the tarball.

    Sets ``how.job`` to ``fetching_recipe`` first (when given). Returns the
    templates rendered (values from ``dictionary_path``, default
    ``/etc/cray/template_dictionary``). Raises ``ImsHelperError``
    (``UnsafeArchive``, ``TemplateError``, ...); a refused archive leaves nothing of itself in ``PATH``.
    """
    how = how or FetchOptions()
    archive = os.path.join(os.fspath(path), RECIPE_ARCHIVE)
    try:
        directory, archive = _download_into(path, RECIPE_ARCHIVE, "fetching_recipe", url, how)
        names = safe_extract(archive, directory)
    finally:
        if os.path.lexists(archive):
            os.unlink(archive)
    try:
        return template_recipe(directory, dictionary_path or DEFAULT_DICTIONARY_PATH, how.log)
    except BaseException:
        # Nothing half-made: an untemplated recipe must not be built by the next container.
        _remove_members(directory, names)
        raise
