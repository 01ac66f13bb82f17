"""Probing a recipe's package repositories: one HEAD each, bounded in time, the bearer token only where it belongs.

A recipe is data from whoever wrote it, so the hosts its ``config.xml`` names
decide nothing about credentials. The job's bearer token goes with a probe only

- over https,
- to a host the package already talks to (the host of ``IMS_URL`` and of the
  token endpoint) or one named in the allow-list (``--repo-token-hosts`` /
  ``IMS_REPO_TOKEN_HOSTS``, empty by default),
- and, after a redirect, only while the redirect stays on the first host.

Every other repository is probed without credentials. Redirects are followed
here, hop by hop, so that rule is the code's and not a library default.

Each probe runs in a daemon thread that the wait stops waiting for at its
deadline: a repository that refuses, never answers, answers slowly or trickles
its headers (which a socket timeout alone does not bound) cannot hold the wait
past its timeout.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Union
from urllib.parse import urljoin, urlsplit

import requests

from ..clients.deadline import Deadline
from ..clients.redact import redact
from ..clients.transport import describe_request_error
from ..errors import ImsHelperError

LOGGER = logging.getLogger(__name__)

#: Redirects followed for one probe.
MAX_REDIRECTS = 10
#: Longest single HEAD; the wait's deadline cuts it shorter.
MAX_PROBE_SECONDS = 30.0
#: Shortest timeout given to a request (one that must end sooner is not started).
MIN_PROBE_SECONDS = 0.05


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


@dataclass(frozen=True)
class TokenHosts:
    """The hosts the bearer token may go to (over https): the IMS gateway, the token endpoint, the allow-list."""

    hosts: FrozenSet[str] = frozenset()

    @classmethod
    def build(cls, urls: Iterable[Optional[str]] = (), allowed: Iterable[str] = ()) -> TokenHosts:
        """The hosts of ``urls`` (IMS, the token endpoint) and the ``allowed`` host names."""
        hosts = {_host(url) for url in urls if url}
        hosts.update(name.strip().lower() for name in allowed if name.strip())
        hosts.discard("")
        return cls(frozenset(hosts))

    def allows(self, url: str) -> bool:
        """True when a request to ``url`` may carry the token: https to one of the hosts."""
        return url.lower().startswith("https://") and _host(url) in self.hosts


class SessionToken:
    """The ``Authorization`` value of an IMS session, asked for only when a probe needs it (one at a time).

    Takes the OAuth session's fresh bearer header (``ClientCredentialsSession.bearer_header``),
    or the ``Authorization`` header a plain ``requests.Session`` carries.
    """

    def __init__(self, session: requests.Session) -> None:
        self._session = session
        self._lock = threading.Lock()

    def __call__(self) -> Optional[str]:
        with self._lock:
            bearer = getattr(self._session, "bearer_header", None)
            if callable(bearer):
                return str(bearer()["Authorization"])
            value = self._session.headers.get("Authorization")
            return str(value) if value else None


@dataclass
class RepoProbe:
    """HEADs ``<repo>/repodata/repomd.xml``; the token goes only where ``token_hosts`` allows."""

    token_hosts: TokenHosts
    #: The ``Authorization`` value for a host that may have it (None: no token to give).
    authorization: Callable[[], Optional[str]]
    #: requests' ``verify``: the platform CA, True for the system store.
    verify: Union[bool, str] = True
    logger: logging.Logger = field(default=LOGGER)

    @classmethod
    def for_session(
        cls,
        session: requests.Session,
        ims_url: Optional[str] = None,
        allowed: Sequence[str] = (),
        logger: Optional[logging.Logger] = None,
    ) -> RepoProbe:
        """A probe with the CA and the token of an IMS session; the token may go to IMS's and its endpoint's hosts."""
        hosts = TokenHosts.build([ims_url, getattr(session, "token_url", None)], allowed)
        verify = session.verify if session.verify is not None else True
        return cls(hosts, SessionToken(session), verify, logger or LOGGER)

    def describe(self, repo_url: str) -> str:
        """How a repository is probed, for the log."""
        if self.token_hosts.allows(repo_url):
            return f"repository {redact(repo_url)} is probed with the job's token (an IMS or allow-listed host)"
        return f"repository {redact(repo_url)} is probed without credentials"

    def available(self, repo_url: str, timeout: float) -> bool:
        """True when a HEAD of ``repo_url``'s ``repodata/repomd.xml`` answers 2xx; logs why not."""
        try:
            with requests.Session() as session:
                response = self._head(session, repomd_url(repo_url), timeout)
        except requests.exceptions.RequestException as err:
            self.logger.info("repository %s not available yet: %s", redact(repo_url), describe_request_error(err))
            return False
        except ImsHelperError as err:  # the token could not be had (token endpoint down, deadline)
            self.logger.info("repository %s not probed: %s", redact(repo_url), err)
            return False
        if 200 <= response.status_code < 300:
            self.logger.info("repository %s is available", redact(repo_url))
            return True
        hint = ""
        if response.status_code in (401, 403) and not self.token_hosts.allows(repo_url):
            hint = " (probed without credentials; add its host to IMS_REPO_TOKEN_HOSTS if it needs the job's token)"
        self.logger.info("repository %s not available yet: HTTP %d%s", redact(repo_url), response.status_code, hint)
        return False

    def _head(self, session: requests.Session, url: str, timeout: float) -> requests.Response:
        """HEAD ``url``, following redirects by hand: the token never leaves the first host, nor https."""
        first_host = _host(url)
        for _hop in range(MAX_REDIRECTS + 1):
            headers: Dict[str, str] = {}
            if self.token_hosts.allows(url) and _host(url) == first_host:
                token = self.authorization()
                if token:
                    headers["Authorization"] = token
            response = session.head(url, headers=headers, timeout=timeout, allow_redirects=False, verify=self.verify)
            location = response.headers.get("Location") if response.is_redirect else None
            response.close()
            if not location:
                return response
            url = urljoin(url, location)
            if urlsplit(url).scheme not in ("http", "https"):
                raise requests.exceptions.InvalidURL(f"redirected to a non-http(s) URL {redact(url)}")
        raise requests.exceptions.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def unavailable(self, repos: Sequence[str], deadline: Deadline) -> List[str]:
        """Probe ``repos`` at once, each in its own thread; returns those not available by the deadline."""
        left = deadline.remaining()
        timeout = MAX_PROBE_SECONDS if left is None else min(MAX_PROBE_SECONDS, max(left, MIN_PROBE_SECONDS))
        answers: Dict[str, bool] = {}

        def probe(repo: str) -> None:
            answers[repo] = self.available(repo, timeout)

        threads = [threading.Thread(target=probe, args=(repo,), name="repo-probe", daemon=True) for repo in repos]
        for thread in threads:
            thread.start()
        for thread in threads:
            left = deadline.remaining()
            thread.join(None if left is None else max(left, 0.0))
        settled = dict(answers)  # a late thread may still answer; this round's verdict is taken now
        for repo in repos:
            if repo not in settled:
                self.logger.info("repository %s not available yet: no answer within the time left", redact(repo))
        return [repo for repo in repos if not settled.get(repo)]


def repomd_url(repo_path: str) -> str:
    """Where a repository's metadata index lives."""
    return repo_path.rstrip("/") + "/repodata/repomd.xml"
