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
``TIMEOUT`` (seconds, default 500) and exiting with the result
(``REPO_POLL_INTERVAL`` sets the seconds between rounds, default 5).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Sequence

import requests

from .clients.oauth import Deadline
from .clients.redact import redact
from .errors import ImsHelperError
from .pod import repos
from .pod.job import JobStatus, configure_logging, ims_session, ims_url_from_env
from .pod.probe import RepoProbe, repomd_url
from .pod.repos import IMS_JOB_STATUS, MAX_CONFIG_BYTES, ReposUnavailable, kiwi_repositories

LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 500
#: Seconds between polling rounds (cut to what the timeout leaves).
POLL_INTERVAL = repos.DEFAULT_POLL_INTERVAL


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
    return repos.wait_for_repos(session, recipe_root, timeout, logger or LOGGER, interval, ims_url, token_hosts)


def wait_for_kiwi_repos(
    ims_job_id: str,
    ims_url: str,
    ca_cert: Optional[str],
    recipe_root: str,
    timeout: float,
    logger: logging.Logger,
    token_hosts: Optional[Sequence[str]] = None,
    poll_interval: Optional[float] = None,
) -> int:
    """The pods' call: set the job to ``waiting_for_repos`` and wait.

    Returns 0 when all repositories answer, else 1 with the job set to ``error``.
    Without ``ims_job_id`` no status is set (as the earlier client did) and the
    wait's result is returned. ``token_hosts`` (default: the option table's
    ``IMS_REPO_TOKEN_HOSTS``) are the hosts besides IMS's that get the token.
    """
    job = None
    try:
        hosts = _token_hosts() if token_hosts is None else token_hosts
        if ims_job_id:
            job = JobStatus(ims_job_id, ims_url, ca_cert, logger)
            job.set(IMS_JOB_STATUS)
            session: requests.Session = job.client.session
        else:
            logger.info("IMS_JOB_ID is not set: waiting for the repositories without reporting a job status")
            session = ims_session(ca_cert)
        wait_for_repos(session, recipe_root, float(timeout), logger, poll_interval, ims_url, hosts)
        return 0
    except ImsHelperError as err:
        logger.error("%s", err)
    except Exception as err:  # the job must still be marked failed
        logger.error("unexpected failure: %s: %s", type(err).__name__, " ".join(redact(str(err)).split())[:300])
    if job is not None:
        job.set_error_quietly()
    return 1


def _token_hosts() -> Sequence[str]:
    """The allow-list from the option table (``IMS_REPO_TOKEN_HOSTS``), for pods that call without one."""
    from .config import resolve_option  # an entry reads the option table; here, as config imports the steps

    hosts: Sequence[str] = resolve_option("repo_token_hosts")
    return hosts


def main() -> int:
    """The pod script: settings from the environment, exit status from ``wait_for_kiwi_repos``."""
    configure_logging()
    try:
        timeout = float(os.environ.get("TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        LOGGER.error("TIMEOUT=%r is not a number of seconds", os.environ.get("TIMEOUT"))
        return 1
    recipe_root = os.environ.get("RECIPE_ROOT_PARENT", "")
    if not recipe_root:
        LOGGER.error("RECIPE_ROOT_PARENT is not set; point it at the fetched recipe")
        return 1
    from .pod import job as jobpod

    global POLL_INTERVAL
    POLL_INTERVAL = float(os.environ.get("REPO_POLL_INTERVAL") or POLL_INTERVAL)
    return wait_for_kiwi_repos(
        os.environ.get("IMS_JOB_ID", ""),
        ims_url_from_env(),
        os.environ.get("CA_CERT", jobpod.DEFAULT_CA_CERT),
        recipe_root,
        timeout,
        LOGGER,
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
