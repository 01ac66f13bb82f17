"""The job-pod steps as CLI commands: ``image fetch``, ``recipe fetch``, ``recipe wait_for_repos``.

Each runs one step of ``fetch`` or ``wait_for_kiwi_repos`` for one IMS job (the
argument after the paths, else ``IMS_JOB_ID``), with the settings the option
table built (``StepSettings``): the job's status is set as the pods set it,
and on any failure the job becomes ``error`` and the error is raised for the
CLI to print. Every argument is checked before IMS or the download is contacted.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Callable, Dict, Optional, Tuple

from ..clients.deadline import Deadline
from ..clients.ims import ImsClient
from ..clients.oauth import open_oauth_session
from ..clients.transport import check_url
from ..errors import ConfigError, UsageError
from ..pod.download import DownloadOptions
from ..pod.fetching import FetchOptions, fetch_image, fetch_recipe
from ..pod.job import JobStatus, StepSettings
from ..pod.repos import IMS_JOB_STATUS, wait_for_repos
from ..pod.template import DEFAULT_DICTIONARY_PATH
from ..progress import Progress
from .arguments import SwitchOnce, job_id_from, uuid_argument

LOGGER = logging.getLogger(__name__)

#: Help line and description of each step command, keyed as the CLI registers them.
STEP_TEXTS: Dict[str, Tuple[str, Optional[str]]] = {
    "image fetch": (
        "fetch an image's rootfs into a job's directory and unpack it (job status fetching_image)",
        "Download URL (a presigned S3 URL of an image's rootfs) to PATH/image.sqsh, check its md5 "
        "(--md5 or DOWNLOAD_MD5SUM), remove stale signal files, and unless --no-unpack unsquash it "
        "to PATH/image-root. On failure the job's status becomes error.",
    ),
    "recipe fetch": (
        "fetch a recipe into a job's directory, extract and template it (job status fetching_recipe)",
        "Download URL (a presigned S3 URL of a recipe tarball), extract it safely into PATH and render the "
        "templates its .ims_recipe_template.yaml lists. On failure the job's status becomes error.",
    ),
    "wait_for_repos": (
        "wait until the repositories a kiwi recipe names answer (job status waiting_for_repos)",
        "Poll <path>/repodata/repomd.xml of every http(s) repository in RECIPE_ROOT/config.xml until all "
        "answer or --repo-timeout passes. The job's token goes only over https to the IMS and token-endpoint "
        "hosts and those of --repo-token-hosts. On failure the job's status becomes error.",
    ),
}


# -- arguments ----------------------------------------------------------------------


def _job_argument(parser: Any) -> None:
    parser.add_argument(
        "ims_job_id", nargs="?", type=uuid_argument, default=None, help="IMS job to report to (default: IMS_JOB_ID)"
    )


def image_fetch_arguments(parser: Any) -> None:
    """``image fetch URL PATH [IMS_JOB_ID] [--no-unpack]``."""
    parser.add_argument("url", help="URL of the image's rootfs (a presigned S3 URL)")
    parser.add_argument("path", help="directory to fetch into (made when missing)")
    _job_argument(parser)
    parser.add_argument(
        "--no-unpack", action=SwitchOnce, default=None, help="keep PATH/image.sqsh instead of unsquashing it"
    )


def recipe_fetch_arguments(parser: Any) -> None:
    """``recipe fetch URL PATH [IMS_JOB_ID]``."""
    parser.add_argument("url", help="URL of the recipe tarball (a presigned S3 URL)")
    parser.add_argument("path", help="directory to extract the recipe into (made when missing)")
    _job_argument(parser)


def wait_arguments(parser: Any) -> None:
    """``recipe wait_for_repos RECIPE_ROOT [IMS_JOB_ID]``."""
    parser.add_argument("recipe_root", help="directory of the fetched recipe (holding config.xml)")
    _job_argument(parser)


# -- checks made before anything is contacted ----------------------------------------


def _check_download_url(url: str) -> None:
    try:
        check_url(url, "download URL", "https://s3.example/bucket/key?X-Amz-Signature=...")
    except ConfigError as err:
        raise UsageError(str(err)) from None


def _check_directory(path: str, what: str, must_exist: bool = False) -> str:
    if os.path.isdir(path):
        return path
    if must_exist or os.path.lexists(path):
        raise UsageError(f"{what} {path!r} is not a directory; give a directory")
    return path


def _checked_job_id(args: argparse.Namespace, settings: StepSettings) -> str:
    job_id = job_id_from(args.ims_job_id, settings.ims_job_id, required=True)
    assert job_id is not None  # required=True raises instead
    return job_id


def _checked_fetch(args: argparse.Namespace, settings: StepSettings) -> Tuple[str, str]:
    """A fetch's job id and target directory, checked (with its URL) before anything is contacted."""
    job_id = _checked_job_id(args, settings)
    _check_download_url(args.url)
    return job_id, _check_directory(args.path, "PATH")


def _check_dictionary(path: str) -> str:
    # The default may be absent (fetch warns and goes on untemplated); one named explicitly must be there.
    if path != DEFAULT_DICTIONARY_PATH and not os.path.isfile(path):
        raise UsageError(
            f"template dictionary {path!r} (--template-dictionary-file/TEMPLATE_DICTIONARY_PATH) is not a file"
        )
    return path


# -- running a step for a job ---------------------------------------------------------


def _open_job(settings: StepSettings, job_id: str) -> JobStatus:
    deadline = Deadline(settings.deadline)
    session = open_oauth_session(settings.oauth, deadline=deadline)
    client = ImsClient(settings.ims_url, session, timeout=settings.timeout, deadline=deadline)
    return JobStatus.for_client(job_id, client, LOGGER)


def _run_for_job(job: JobStatus, work: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run a step; on any failure set the job to ``error`` (even past the deadline) and raise."""
    try:
        result = work()
    except BaseException:
        job.client.deadline.allow_cleanup()
        job.set_error_quietly()
        raise
    record = job.client.get_job(job.job_id)
    return dict({"result": "success", "ims_job_id": job.job_id, "ims_job_record": record}, **result)


def _fetch_options(settings: StepSettings, job: JobStatus, progress: Progress) -> FetchOptions:
    return FetchOptions(
        job,
        settings.download_md5,
        settings.download_verify,
        DownloadOptions(timeout=settings.timeout),
        progress,
        job.client.deadline,
        LOGGER,
    )


def image_fetch(args: argparse.Namespace, settings: StepSettings, progress: Progress) -> Dict[str, Any]:
    """``image fetch``: the customization job's first step."""
    job_id, path = _checked_fetch(args, settings)
    job = _open_job(settings, job_id)

    def work() -> Dict[str, Any]:
        return {"path": fetch_image(path, args.url, not args.no_unpack, _fetch_options(settings, job, progress))}

    return _run_for_job(job, work)


def recipe_fetch(args: argparse.Namespace, settings: StepSettings, progress: Progress) -> Dict[str, Any]:
    """``recipe fetch``: the image-build job's first step."""
    job_id, path = _checked_fetch(args, settings)
    dictionary = _check_dictionary(settings.template_dictionary)
    job = _open_job(settings, job_id)

    def work() -> Dict[str, Any]:
        rendered = fetch_recipe(path, args.url, dictionary, _fetch_options(settings, job, progress))
        root = os.path.realpath(path)
        return {"path": path, "templates_rendered": [os.path.relpath(name, root) for name in rendered]}

    return _run_for_job(job, work)


def recipe_wait_for_repos(args: argparse.Namespace, settings: StepSettings) -> Dict[str, Any]:
    """``recipe wait_for_repos``: the image-build job's second step."""
    job_id = _checked_job_id(args, settings)
    root = _check_directory(args.recipe_root, "RECIPE_ROOT", must_exist=True)
    job = _open_job(settings, job_id)

    def work() -> Dict[str, Any]:
        job.set(IMS_JOB_STATUS)
        repos = wait_for_repos(
            job.client.session,
            root,
            settings.repo_timeout,
            LOGGER,
            poll_interval=settings.repo_poll_interval,
            ims_url=settings.ims_url,
            token_hosts=settings.repo_token_hosts,
        )
        return {"repositories": repos}

    return _run_for_job(job, work)
