"""Fetch an image or a recipe into a job pod's volume (the pods' first init container).

Pod scripts call ``FetchImage(path, url).run(unpack=True)`` or
``FetchRecipe(path, url).run()``; ``run()`` returns 0, or logs one line, sets
the job to ``error`` and raises ``SystemExit(1)``. Library callers use
``fetch_image`` and ``fetch_recipe``, which raise ``ImsHelperError`` instead.

Also a script::

    python -m ims_python_helper.fetch --image UNPACK PATH URL
    python -m ims_python_helper.fetch --recipe True PATH URL

Environment, read when ``run()`` runs, through the option table (``config``):
``IMS_JOB_ID`` (required), ``IMS_URL``, ``CA_CERT``, ``OAUTH_CONFIG_DIR`` or
``OAUTH_CLIENT_ID``/``OAUTH_CLIENT_SECRET``/``OAUTH_CLIENT_ENDPOINT``,
``DOWNLOAD_MD5SUM``, ``S3_SSL_VERIFY`` (an off word switches download TLS
verification off, as it does for a publish), ``TEMPLATE_DICTIONARY_PATH``,
``IMS_PROGRESS``, ``LOG_LEVEL``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

from .clients.oauth import Deadline
from .clients.transport import ON_WORDS
from .config import POD_JOB_OPTIONS, PodSettings, pod_log_level, resolve_pod_settings
from .errors import ConfigError, InputError
from .pod.download import DownloadOptions, download_file
from .pod.extract import safe_extract
from .pod.job import DEFAULT_CA_CERT, JobStatus, configure_logging, run_step
from .pod.template import DEFAULT_DICTIONARY_PATH, template_recipe
from .progress import Progress, make_progress
from .vocabulary import DEFAULT_IMS_API_URL

#: The defaults of ``IMS_URL`` and ``CA_CERT`` (the pod's values are read when ``run()`` runs, not at import).
IMS_URL = DEFAULT_IMS_API_URL
CA_CERT = DEFAULT_CA_CERT
LOGGER = logging.getLogger(__name__)

#: Files the job's later containers use to signal each other; stale ones from an earlier attempt are removed.
SIGNAL_FILES = ("ready", "complete", "exiting")
IMAGE_ARCHIVE = "image.sqsh"
IMAGE_ROOT = "image-root"
RECIPE_ARCHIVE = "recipe.tgz"
#: Words that mean "unpack" in the pods' ``--image UNPACK`` argument: the on words every switch takes.
TRUE_WORDS = ON_WORDS

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


class FetchBase:
    """What the pod fetch classes share: the target directory, the URL and the pod's settings."""

    #: The job status this kind of fetch reports.
    job_status = ""

    def __init__(self, path: PathLike, url: str) -> None:
        self.path = os.fspath(path)
        self.url = url
        self._settings: Optional[PodSettings] = None
        self._job: Optional[JobStatus] = None

    def settings(self) -> PodSettings:
        """The pod's settings from its environment and mounted files (read once, on first use)."""
        if self._settings is None:
            self._settings = resolve_pod_settings()
        return self._settings

    @property
    def ims_job_id(self) -> str:
        """``IMS_JOB_ID``."""
        return self.settings().ims_job_id

    @property
    def download_md5sum(self) -> Optional[str]:
        """``DOWNLOAD_MD5SUM``, or None."""
        return self.settings().download_md5

    def job(self) -> JobStatus:
        """The pod's IMS job (``IMS_JOB_ID`` at ``IMS_URL``, trusting ``CA_CERT``)."""
        if self._job is None:
            pod = self.settings()
            self._job = JobStatus(pod.ims_job_id, pod.ims_url, pod.ca_cert, LOGGER, pod.oauth)
        return self._job

    def _failed_job(self) -> Optional[JobStatus]:
        """The job to set to ``error`` after a failure (also when a step's setting was what failed)."""
        if self._job is None:
            pod = self._settings or resolve_pod_settings(names=POD_JOB_OPTIONS)
            if not pod.ims_job_id:
                return None
            self._job = JobStatus(pod.ims_job_id, pod.ims_url, pod.ca_cert, LOGGER, pod.oauth)
        return self._job

    def progress(self) -> Progress:
        """Bars on a terminal, log lines in a pod (``IMS_PROGRESS``)."""
        return make_progress(self.settings().progress, sys.stderr, "download")

    def options(self) -> FetchOptions:
        """The pod's fetch: its job, ``DOWNLOAD_MD5SUM``, TLS from ``S3_SSL_VERIFY``/``CA_CERT``, progress."""
        pod = self.settings()
        if pod.download_verify is False:
            LOGGER.warning("TLS verification of downloads is switched off (S3_SSL_VERIFY/S3_SSL_VALIDATE)")
        return FetchOptions(self.job(), pod.download_md5, pod.download_verify, progress=self.progress(), logger=LOGGER)

    def _run(self, step: Callable[[], object]) -> int:
        configure_logging(pod_log_level())
        return run_step(step, self._failed_job, LOGGER)


class FetchImage(FetchBase):
    """Fetch (and unpack) an image in a customization job's pod."""

    job_status = "fetching_image"

    def run(self, unpack: bool = True) -> int:
        """Fetch the image; 0 on success, else ``SystemExit(1)`` after setting the job to ``error``."""
        return self._run(lambda: fetch_image(self.path, self.url, unpack, self.options()))


class FetchRecipe(FetchBase):
    """Fetch, extract and template a recipe in an image-build job's pod."""

    job_status = "fetching_recipe"

    def run(self) -> int:
        """Fetch the recipe; 0 on success, else ``SystemExit(1)`` after setting the job to ``error``."""
        return self._run(lambda: fetch_recipe(self.path, self.url, self.settings().template_dictionary, self.options()))


def is_true(word: str) -> bool:
    """The pods' boolean words: true, 1, t, y, yes, on (any case)."""
    return word.strip().lower() in TRUE_WORDS


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--recipe True PATH URL`` or ``--image UNPACK PATH URL``, as the pods call it."""
    parser = argparse.ArgumentParser(prog="python -m ims_python_helper.fetch", description="Fetch a recipe or image")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--recipe", metavar="TRUE", help="fetch a recipe (the value is ignored)")
    kind.add_argument("--image", metavar="UNPACK", help="fetch an image; unpack it when true/1/t/y")
    parser.add_argument("path", help="directory to fetch into")
    parser.add_argument("url", help="URL of the archive (a presigned S3 URL)")
    args = parser.parse_args(argv)
    if args.recipe is not None:
        return FetchRecipe(args.path, args.url).run()
    return FetchImage(args.path, args.url).run(unpack=is_true(args.image))


if __name__ == "__main__":
    sys.exit(main())
