"""Wait until the package repositories a kiwi recipe names answer (an image-build job's init container).

The recipe's ``config.xml`` lists ``<repository><source path="..."/></repository>``;
every http(s) path must answer a HEAD of ``<path>/repodata/repomd.xml`` with
2xx. They are polled until all do or the timeout passes. A recipe with no
http(s) repository has nothing to wait for: that is success.

Pod scripts call ``wait_for_kiwi_repos(...)`` (returns 0 or 1, sets the job to
``error`` on 1); library callers use ``wait_for_repos`` (raises). Also a script::

    python -m ims_python_helper.wait_for_kiwi_repos

reading ``RECIPE_ROOT_PARENT``, ``IMS_JOB_ID``, ``IMS_URL``, ``CA_CERT`` and
``TIMEOUT`` (seconds, default 500) through the option table (``config``) and
exiting with the result (``REPO_POLL_INTERVAL`` sets the seconds between
rounds, default 5).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from typing import List, Optional

import requests

from .clients.oauth import Deadline
from .clients.redact import redact
from .clients.transport import check_transport, describe_request_error
from .config import admin_client_auth, pod_log_level, resolve_pod_settings
from .errors import ConfigError, DeadlineExceeded, ImsHelperError, InputError
from .pod.job import DEFAULT_REPO_POLL_INTERVAL, DEFAULT_REPO_TIMEOUT, JobStatus, configure_logging, step_status
from .pod.job import ims_session as pod_ims_session

LOGGER = logging.getLogger(__name__)

#: The job status this step reports.
IMS_JOB_STATUS = "waiting_for_repos"
DEFAULT_TIMEOUT = DEFAULT_REPO_TIMEOUT
#: Seconds between polling rounds (cut to what the timeout leaves).
POLL_INTERVAL = DEFAULT_REPO_POLL_INTERVAL
#: Largest config.xml read.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class ReposUnavailable(ImsHelperError):
    """Some repositories still did not answer when the timeout passed."""


def kiwi_repositories(config_path: str) -> List[str]:
    """The http(s) repository paths of a kiwi ``config.xml`` (others, such as ``obs://`` or dirs, are skipped).

    Refuses a document with a DOCTYPE or entity declarations: the standard
    parser would expand them (entity tricks), and kiwi descriptions need none.
    """
    try:
        with open(config_path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise InputError(f"cannot read the recipe's {config_path}: {err.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes; not a kiwi description")
    if _DTD.search(data):
        raise InputError(f"{config_path} declares a DOCTYPE or entities; refused (kiwi descriptions need none)")
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTDs refused above, so no entity expansion
    except ET.ParseError as err:
        raise InputError(f"{config_path} is not well-formed XML ({err}); fix the recipe") from None
    paths = []
    for source in root.iter("source"):
        path = (source.get("path") or "").strip()
        if path.lower().startswith(("http://", "https://")) and path not in paths:
            paths.append(path)
    return paths


def repomd_url(repo_path: str) -> str:
    """Where a repository's metadata index lives."""
    return repo_path.rstrip("/") + "/repodata/repomd.xml"


def is_repo_available(session: requests.Session, repo_url: str, logger: logging.Logger, timeout: float) -> bool:
    """True when a HEAD of ``repo_url``'s ``repodata/repomd.xml`` answers 2xx (bearer token and CA from ``session``).

    A plain-http repository that is not on this machine gets the HEAD without the
    token: credentials never travel over plain http.
    """
    url = repomd_url(repo_url)
    try:
        try:
            check_transport(url, "repository URL")
            response = session.head(url, timeout=timeout, allow_redirects=True)
        except ConfigError:
            response = requests.head(url, timeout=timeout, allow_redirects=True, verify=session.verify)
    except requests.exceptions.RequestException as err:
        logger.info("repository %s not available yet: %s", redact(repo_url), describe_request_error(err))
        return False
    except DeadlineExceeded:
        return False
    response.close()
    if 200 <= response.status_code < 300:
        logger.info("repository %s is available", redact(repo_url))
        return True
    logger.info("repository %s not available yet: HTTP %d", redact(repo_url), response.status_code)
    return False


def wait_for_repos(
    session: requests.Session,
    recipe_root: str,
    timeout: float = DEFAULT_TIMEOUT,
    logger: Optional[logging.Logger] = None,
    poll_interval: Optional[float] = None,
) -> List[str]:
    """Poll the recipe's http(s) repositories until all answer; returns them. Raises ``ReposUnavailable`` on timeout."""
    log = logger or LOGGER
    repos = kiwi_repositories(os.path.join(recipe_root, "config.xml"))
    if not repos:
        log.info("the recipe's config.xml names no http(s) repository: nothing to wait for")
        return []
    deadline = Deadline(timeout)
    waiting = list(repos)
    while True:
        per_request = max(1.0, min(30.0, deadline.remaining() or 30.0))
        waiting = [repo for repo in waiting if not is_repo_available(session, repo, log, per_request)]
        if not waiting:
            log.info("all %d repositories are available", len(repos))
            return repos
        left = deadline.remaining() or 0.0
        if left <= 0:
            raise ReposUnavailable(
                f"after {timeout:g} s, {len(waiting)} of {len(repos)} repositories still do not answer: "
                f"{', '.join(redact(r) for r in waiting)}; check them or raise TIMEOUT"
            )
        time.sleep(min(POLL_INTERVAL if poll_interval is None else poll_interval, left))


def ims_session(ca_cert: Optional[str], timeout: float = 60.0, deadline: Optional[Deadline] = None) -> requests.Session:
    """An OAuth2 session with the admin client's credentials (``OAUTH_*`` env or ``OAUTH_CONFIG_DIR`` files)."""
    return pod_ims_session(ca_cert, timeout, deadline, oauth=admin_client_auth()[0])


def wait_for_kiwi_repos(
    ims_job_id: str,
    ims_url: str,
    ca_cert: Optional[str],
    recipe_root: str,
    timeout: float,
    logger: logging.Logger,
    *,
    poll_interval: Optional[float] = None,
) -> int:
    """The pods' call: set the job to ``waiting_for_repos`` and wait.

    Returns 0 when all repositories answer, else 1 with the job set to ``error``.
    """
    made: List[JobStatus] = []

    def step() -> None:
        made.append(JobStatus(ims_job_id, ims_url, ca_cert, logger, admin_client_auth()[0]))
        made[0].set(IMS_JOB_STATUS)
        wait_for_repos(made[0].client.session, recipe_root, float(timeout), logger, poll_interval=poll_interval)

    def made_job() -> Optional[JobStatus]:
        return made[0] if made else None

    return step_status(step, made_job, logger)


def main() -> int:
    """The pod script: settings from the environment (through the option table), exit status from the wait."""
    configure_logging(pod_log_level())
    try:
        pod = resolve_pod_settings()
    except ImsHelperError as err:
        LOGGER.error("%s", err)
        return 1
    if not pod.recipe_root:
        LOGGER.error("RECIPE_ROOT_PARENT is not set; point it at the fetched recipe")
        return 1
    return wait_for_kiwi_repos(
        pod.ims_job_id,
        pod.ims_url,
        pod.ca_cert,
        pod.recipe_root,
        pod.repo_timeout,
        LOGGER,
        poll_interval=pod.repo_poll_interval,
    )


__all__ = ["IMS_JOB_STATUS", "is_repo_available", "ims_session", "wait_for_kiwi_repos", "wait_for_repos"]

if __name__ == "__main__":
    sys.exit(main())
