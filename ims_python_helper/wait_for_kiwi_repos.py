"""Wait until the package repositories a kiwi recipe names answer (an image-build job's init container).

The recipe's ``config.xml`` lists ``<repository><source path="..."/></repository>``;
every http(s) path must answer a HEAD of ``<path>/repodata/repomd.xml`` with
2xx. They are polled until all do or the timeout passes (the timeout bounds
the whole wait, whatever a repository does). A recipe with no http(s)
repository has nothing to wait for: that is success. The job's bearer token
goes only over https to the IMS and token-endpoint hosts and to the hosts of
``IMS_REPO_TOKEN_HOSTS``; every other repository is probed without
credentials. The work is in ``pod.repos`` and ``pod.probe``; this module is
the pods' fixed entry.

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
import sys
from typing import List, Optional, Sequence

import requests

from .clients.deadline import Deadline
from .config import admin_client_auth, pod_log_level, pod_token_hosts, resolve_pod_settings
from .errors import ImsHelperError
from .pod.job import JobStatus, configure_logging, step_status
from .pod.job import ims_session as pod_ims_session
from .pod.probe import RepoProbe, repomd_url
from .pod.repos import (
    DEFAULT_REPO_POLL_INTERVAL,
    DEFAULT_REPO_TIMEOUT,
    IMS_JOB_STATUS,
    MAX_CONFIG_BYTES,
    ReposUnavailable,
    kiwi_repositories,
)
from .pod.repos import wait_for_repos as wait_for_recipe_repos

LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT = DEFAULT_REPO_TIMEOUT
#: Seconds between polling rounds (cut to what the timeout leaves).
POLL_INTERVAL = DEFAULT_REPO_POLL_INTERVAL


def is_repo_available(
    session: requests.Session,
    repo_url: str,
    logger: logging.Logger,
    timeout: float,
    ims_url: Optional[str] = None,
    token_hosts: Sequence[str] = (),
) -> bool:
    """True when a HEAD of ``repo_url``'s ``repodata/repomd.xml`` answers 2xx, within ``timeout`` seconds.

    The session's CA is used; its bearer token goes along only over https to
    the host of ``ims_url``, of the session's token endpoint, or one of
    ``token_hosts`` (never after a redirect to another host).
    """
    probe = RepoProbe.for_session(session, ims_url, token_hosts, logger)
    return not probe.unavailable([repo_url], Deadline(timeout))


def wait_for_repos(
    session: requests.Session,
    recipe_root: str,
    timeout: float = DEFAULT_TIMEOUT,
    logger: Optional[logging.Logger] = None,
    poll_interval: Optional[float] = None,
    ims_url: Optional[str] = None,
    token_hosts: Sequence[str] = (),
) -> List[str]:
    """Poll the recipe's http(s) repositories until all answer; returns them. Raises ``ReposUnavailable`` on timeout.

    ``timeout`` bounds the whole wait. The bearer token of ``session`` goes only
    to the hosts ``is_repo_available`` names.
    """
    interval = POLL_INTERVAL if poll_interval is None else poll_interval
    return wait_for_recipe_repos(session, recipe_root, timeout, logger or LOGGER, interval, ims_url, token_hosts)


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
    token_hosts: Optional[Sequence[str]] = None,
    *,
    poll_interval: Optional[float] = None,
) -> int:
    """The pods' call: set the job to ``waiting_for_repos`` and wait.

    Returns 0 when all repositories answer, else 1 with the job set to ``error``.
    Without ``ims_job_id`` no status is set (as the earlier client did) and the
    wait's result is returned. ``token_hosts`` (default: the option table's
    ``IMS_REPO_TOKEN_HOSTS``) are the hosts besides IMS's that get the token.
    """
    made: List[JobStatus] = []

    def step() -> None:
        hosts = pod_token_hosts() if token_hosts is None else token_hosts
        if ims_job_id:
            made.append(JobStatus(ims_job_id, ims_url, ca_cert, logger, admin_client_auth()[0]))
            made[0].set(IMS_JOB_STATUS)
            session: requests.Session = made[0].client.session
        else:
            logger.info("IMS_JOB_ID is not set: waiting for the repositories without reporting a job status")
            session = ims_session(ca_cert)
        wait_for_repos(session, recipe_root, float(timeout), logger, poll_interval, ims_url, hosts)

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
        pod.repo_token_hosts,
        poll_interval=pod.repo_poll_interval,
    )


__all__ = [
    "IMS_JOB_STATUS",
    "MAX_CONFIG_BYTES",
    "ReposUnavailable",
    "is_repo_available",
    "ims_session",
    "kiwi_repositories",
    "repomd_url",
    "wait_for_kiwi_repos",
    "wait_for_repos",
]

if __name__ == "__main__":
    sys.exit(main())
