"""What the job-pod steps share: their settings, the IMS session, job status reports, logging, exit codes.

The steps (``fetch``, ``wait_for_kiwi_repos``) are library functions that raise;
``run_step`` wraps one for a pod script: it logs the failure as one line, sets
the job to ``error`` and exits 1, as the pods expect. The pod's environment is
read by the entry modules through the option table (``config``), never here.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ..clients.deadline import Deadline
from ..clients.ims import ImsClient
from ..clients.oauth import ClientCredentialsSession, OAuthSettings, admin_credentials, open_oauth_session
from ..clients.redact import install_log_redaction, redact
from ..errors import ConfigError, ImsHelperError
from .repos import DEFAULT_REPO_POLL_INTERVAL, DEFAULT_REPO_TIMEOUT
from .template import DEFAULT_DICTIONARY_PATH

LOGGER = logging.getLogger(__name__)

#: The platform CA the pods mount; used when CA_CERT is not set and the file is there.
DEFAULT_CA_CERT = "/etc/cray/ca/certificate_authority.crt"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class StepSettings:
    """What the job-pod steps need, as the option table builds it (for the CLI's step commands and the pods)."""

    ims_url: str
    timeout: float
    #: Seconds the whole run may take, or None for no limit.
    deadline: Optional[float]
    oauth: OAuthSettings
    #: TLS verification of the download: True, False or a CA bundle path.
    download_verify: Union[bool, str] = True
    download_md5: Optional[str] = None
    template_dictionary: str = DEFAULT_DICTIONARY_PATH
    repo_timeout: float = DEFAULT_REPO_TIMEOUT
    repo_poll_interval: float = DEFAULT_REPO_POLL_INTERVAL
    #: Hosts besides IMS's and the token endpoint's that get the job's token when probed (over https).
    repo_token_hosts: Tuple[str, ...] = ()
    #: ``IMS_JOB_ID``: the job when the command names none.
    ims_job_id: Optional[str] = None


def ca_bundle(ca_cert: Optional[str]) -> Union[bool, str]:
    """requests' ``verify`` for a CA path: the path when it exists; True (system store) when unset or the platform
    default is not mounted.

    Any other CA bundle that is not there is an error, not a silent fallback (the option table has already
    refused a ``CA_CERT`` that names a missing file, naming the variable).
    """
    if ca_cert and os.path.isfile(ca_cert):
        return ca_cert
    if not ca_cert or ca_cert == DEFAULT_CA_CERT:
        return True
    raise ConfigError(f"CA bundle {ca_cert!r} (CA_CERT) is not a readable file; mount the platform CA or fix CA_CERT")


def ims_session(
    ca_cert: Optional[str],
    timeout: float = 60.0,
    deadline: Optional[Deadline] = None,
    oauth: Optional[OAuthSettings] = None,
) -> ClientCredentialsSession:
    """An OAuth2 session with the admin client's credentials (``oauth``, read by the entry from the pod's env)."""
    client_id, client_secret, token_url = admin_credentials(
        oauth or OAuthSettings(None, None, None), "OAUTH_CONFIG_DIR"
    )
    verify = ca_bundle(ca_cert)
    settings = OAuthSettings(client_id, client_secret, token_url, verify if isinstance(verify, str) else None, timeout)
    return open_oauth_session(settings, deadline=deadline)


class JobStatus:
    """Sets one IMS job's status; the session is made on first use."""

    def __init__(
        self,
        job_id: str,
        ims_url: str,
        ca_cert: Optional[str],
        logger: Optional[logging.Logger] = None,
        oauth: Optional[OAuthSettings] = None,
    ):
        if not job_id:
            raise ConfigError("IMS_JOB_ID is not set; the job pod must name its IMS job")
        self.job_id = job_id
        self.ims_url = ims_url
        self.ca_cert = ca_cert
        self.logger = logger or LOGGER
        #: The admin client's credentials (the pod entries read them through the option table).
        self.oauth = oauth
        self._client: Optional[ImsClient] = None

    @classmethod
    def for_client(cls, job_id: str, client: ImsClient, logger: Optional[logging.Logger] = None) -> JobStatus:
        """The job ``job_id`` reached through an IMS client the caller made (the CLI's settings, not the pod's env)."""
        job = cls(job_id, client.base_url, None, logger)
        job._client = client
        return job

    @property
    def client(self) -> ImsClient:
        """The IMS client (made on first use)."""
        if self._client is None:
            self._client = ImsClient(self.ims_url, ims_session(self.ca_cert, oauth=self.oauth))
        return self._client

    def set(self, status: str) -> Dict[str, Any]:
        """Patch the job's status and return the record; raises ``ImsHelperError`` when IMS refuses or is not there."""
        record = self.client.patch_job(self.job_id, {"status": status})
        self.logger.info("job %s status: %s", self.job_id, status)
        return record

    def set_error_quietly(self) -> None:
        """Best effort on a failure path: set ``error``, log (never raise) when that fails too."""
        try:
            self.set("error")
        except ImsHelperError as err:
            self.logger.error("could not set job %s to error: %s", self.job_id, err)


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (the pod's ``LOG_LEVEL``) with secrets masked, unless logging is set up already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    install_log_redaction(handler)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)


def step_status(
    step: Callable[[], object], job: Optional[Callable[[], Optional[JobStatus]]], logger: logging.Logger
) -> int:
    """Run ``step``: 0 on success; on failure 1, after one log line and setting the job (when there is one) to error."""
    try:
        step()
        return 0
    except ImsHelperError as err:
        logger.error("%s", err)
    except Exception as err:  # a pod must still report the failure to IMS
        logger.error("unexpected failure: %s: %s", type(err).__name__, " ".join(redact(str(err)).split())[:300])
    try:
        reporter = job() if job is not None else None
    except ImsHelperError as err:
        logger.error("cannot report the failure to IMS: %s", err)
        reporter = None
    if reporter is not None:
        reporter.set_error_quietly()
    return 1


def run_step(
    step: Callable[[], object], job: Optional[Callable[[], Optional[JobStatus]]], logger: logging.Logger
) -> int:
    """Run ``step`` for a pod script: 0 on success; on failure one log line, job ``error``, ``SystemExit(1)``."""
    if step_status(step, job, logger):
        raise SystemExit(1)
    return 0
