"""A kiwi recipe's package repositories, and the wait until they all answer (an image-build job's second step).

The recipe's ``config.xml`` lists ``<repository><source path="..."/></repository>``;
every http(s) path must answer a HEAD of ``<path>/repodata/repomd.xml`` with
2xx (``pod.probe``: the job's token only where it belongs). They are polled
until all do or the timeout passes; the timeout bounds the whole wait,
whatever a repository does. A recipe with no http(s) repository has nothing
to wait for: that is success.
"""

from __future__ import annotations

import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence

import requests

from ..clients.deadline import Deadline
from ..clients.redact import redact
from ..errors import ImsHelperError, InputError
from .probe import RepoProbe

LOGGER = logging.getLogger(__name__)

#: The job status the wait reports.
IMS_JOB_STATUS = "waiting_for_repos"
#: Seconds the wait may take, and between polling rounds (cut to what the timeout leaves), unless the caller says.
DEFAULT_REPO_TIMEOUT = 500.0
DEFAULT_REPO_POLL_INTERVAL = 5.0
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


def wait_for_repos(
    session: requests.Session,
    recipe_root: str,
    timeout: float,
    logger: Optional[logging.Logger] = None,
    poll_interval: Optional[float] = None,
    ims_url: Optional[str] = None,
    token_hosts: Sequence[str] = (),
) -> List[str]:
    """Poll the recipe's http(s) repositories until all answer; returns them. Raises ``ReposUnavailable`` on timeout.

    ``timeout`` bounds the whole wait, whatever the repositories do. The bearer
    token of ``session`` goes only over https to the hosts of ``ims_url``, of
    the session's token endpoint and of ``token_hosts`` (``pod.probe``).
    """
    log = logger or LOGGER
    repos = kiwi_repositories(os.path.join(recipe_root, "config.xml"))
    if not repos:
        log.info("the recipe's config.xml names no http(s) repository: nothing to wait for")
        return []
    deadline = Deadline(timeout)
    probe = RepoProbe.for_session(session, ims_url, token_hosts, log)
    for repo in repos:
        log.info("%s", probe.describe(repo))
    waiting = list(repos)
    interval = DEFAULT_REPO_POLL_INTERVAL if poll_interval is None else poll_interval
    while True:
        waiting = probe.unavailable(waiting, deadline)
        if not waiting:
            log.info("all %d repositories are available", len(repos))
            return repos
        left = deadline.remaining() or 0.0
        if left <= 0:
            raise ReposUnavailable(
                f"after {timeout:g} s, {len(waiting)} of {len(repos)} repositories still do not answer: "
                f"{', '.join(redact(r) for r in waiting)}; check them or raise TIMEOUT"
            )
        time.sleep(min(interval, left))
