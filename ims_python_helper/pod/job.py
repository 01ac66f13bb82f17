"""What the job-pod steps share: the pod's environment, the IMS session, job status reports, logging, exit codes.

The steps (``fetch``, ``wait_for_kiwi_repos``) are library functions that raise;
``run_step`` wraps one for a pod script: it logs the failure as one line, sets
the job to ``error`` and exits 1, as the pods expect.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict, Optional, Union

from ..clients.ims import ImsClient
from ..clients.oauth import ClientCredentialsSession, Deadline, create_oauth_session, get_admin_client_auth
from ..clients.redact import install_log_redaction, redact
from ..errors import ConfigError, ImsHelperError
from ..vocabulary import DEFAULT_IMS_API_URL

LOGGER = logging.getLogger(__name__)

#: The platform CA the pods mount; used when CA_CERT is not set and the file is there.
DEFAULT_CA_CERT = "/etc/cray/ca/certificate_authority.crt"
#: Words that switch TLS verification off in S3_SSL_VERIFY (the explicit, visible way to do it).
VERIFY_OFF = ("false", "no", "off", "0")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ims_url_from_env() -> str:
    """``IMS_URL`` or the platform default."""
    return os.environ.get("IMS_URL") or DEFAULT_IMS_API_URL


def ca_bundle(ca_cert: Optional[str]) -> Union[bool, str]:
    """requests' ``verify`` for a CA path: the path when it exists; True (system store) for the unset default.

    A CA bundle named explicitly that is not there is an error, not a silent fallback.
    """
    if ca_cert and os.path.isfile(ca_cert):
        return ca_cert
    if not ca_cert or (ca_cert == DEFAULT_CA_CERT and "CA_CERT" not in os.environ):
        return True
    raise ConfigError(f"CA bundle {ca_cert!r} (CA_CERT) is not a readable file; mount the platform CA or fix CA_CERT")


def download_verify(ca_cert: Optional[str]) -> Union[bool, str]:
    """TLS verification for downloads: ``S3_SSL_VERIFY`` (a path, or an off word) when set, else the CA bundle."""
    value = os.environ.get("S3_SSL_VERIFY", "").strip()
    if value.lower() in VERIFY_OFF:
        LOGGER.warning("TLS verification of downloads is switched off (S3_SSL_VERIFY=%s)", value)
        return False
    if value and value.lower() not in ("true", "yes", "on", "1"):
        return ca_bundle(value)
    return ca_bundle(ca_cert)


def ims_session(
    ca_cert: Optional[str], timeout: float = 60.0, deadline: Optional[Deadline] = None
) -> ClientCredentialsSession:
    """An OAuth2 session with the admin client's credentials (``OAUTH_*`` env or ``OAUTH_CONFIG_DIR`` files)."""
    client_id, client_secret, token_url = get_admin_client_auth()
    return create_oauth_session(client_id, client_secret, ca_bundle(ca_cert), token_url, timeout, deadline=deadline)


class JobStatus:
    """Sets one IMS job's status; the session is made on first use."""

    def __init__(self, job_id: str, ims_url: str, ca_cert: Optional[str], logger: Optional[logging.Logger] = None):
        if not job_id:
            raise ConfigError("IMS_JOB_ID is not set; the job pod must name its IMS job")
        self.job_id = job_id
        self.ims_url = ims_url
        self.ca_cert = ca_cert
        self.logger = logger or LOGGER
        self._client: Optional[ImsClient] = None

    @classmethod
    def from_env(cls, ims_url: Optional[str] = None, ca_cert: Optional[str] = None) -> JobStatus:
        """The job named by ``IMS_JOB_ID`` at ``IMS_URL``."""
        return cls(os.environ.get("IMS_JOB_ID", ""), ims_url or ims_url_from_env(), ca_cert)

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
            self._client = ImsClient(self.ims_url, ims_session(self.ca_cert))
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


def configure_logging(logger: Optional[logging.Logger] = None) -> None:
    """Log to stderr at ``LOG_LEVEL`` (default INFO) with secrets masked, unless logging is set up already."""
    root = logging.getLogger()
    if root.handlers:
        return
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    install_log_redaction(handler)
    root.addHandler(handler)
    numeric = logging.getLevelName(level)
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)


def run_step(
    step: Callable[[], object], job: Optional[Callable[[], Optional[JobStatus]]], logger: logging.Logger
) -> int:
    """Run ``step`` for a pod script: 0 on success; on failure one log line, job ``error``, ``SystemExit(1)``."""
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
    raise SystemExit(1)
