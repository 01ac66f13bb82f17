"""Fetch an image or a recipe into a job pod's volume (the pods' first init container).

Pod scripts call ``FetchImage(path, url).run(unpack=True)`` or
``FetchRecipe(path, url).run()``; ``run()`` returns 0, or logs one line, sets
the job to ``error`` and raises ``SystemExit(1)``. Library callers use
``fetch_image`` and ``fetch_recipe`` (the work, in ``pod/fetching.py``), which
raise ``ImsHelperError`` instead.

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
import logging
import os
import sys
from typing import Callable, Optional, Sequence

from .clients.transport import ON_WORDS
from .config import POD_JOB_OPTIONS, PodSettings, pod_log_level, resolve_pod_settings
from .pod.fetching import (  # noqa: F401  (the library calls, importable from here as before)
    IMAGE_ARCHIVE,
    IMAGE_ROOT,
    RECIPE_ARCHIVE,
    SIGNAL_FILES,
    FetchOptions,
    PathLike,
    fetch_image,
    fetch_recipe,
    remove_signal_files,
    unsquash,
)
from .pod.job import DEFAULT_CA_CERT, JobStatus, configure_logging, run_step
from .progress import Progress, make_progress
from .vocabulary import DEFAULT_IMS_API_URL

#: The defaults of ``IMS_URL`` and ``CA_CERT`` (the pod's values are read when ``run()`` runs, not at import).
IMS_URL = DEFAULT_IMS_API_URL
CA_CERT = DEFAULT_CA_CERT
LOGGER = logging.getLogger(__name__)

#: Words that mean "unpack" in the pods' ``--image UNPACK`` argument: the on words every switch takes.
TRUE_WORDS = ON_WORDS


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
