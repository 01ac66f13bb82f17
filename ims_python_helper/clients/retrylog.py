"""One line of ours for each retry wait (IMS, the token endpoint, S3), in place of urllib3's and botocore's own.

urllib3 logs every retry as a WARNING of its own (``Retrying (BoundedRetry(total=4,
...)) after connection broken by 'NewConnectionError(...)'``) and botocore retries
in silence. Our retries say once, in one line, who failed, why, which retry this
is and how long the wait is: ``IMS at URL: connection refused; retry 2 of 5 in 1.0 s``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import urllib3.exceptions

from .redact import redact
from .transport import caused_by, connection_failure

LOGGER = logging.getLogger("ims_python_helper.retries")
#: The urllib3 logger that announces each retry of a connection pool.
URLLIB3_POOL_LOGGER = "urllib3.connectionpool"


def say_retry(where: str, reason: str, number: int, allowed: int, wait: float) -> None:
    """The one line of a retry wait: ``WHERE: REASON; retry N of M in S s``."""
    LOGGER.warning("%s: %s; retry %d of %d in %.1f s", redact(where), reason, number, allowed, max(wait, 0.0))


def failure_reason(error: Optional[BaseException], status: Optional[int]) -> str:
    """Why an attempt failed, in a few words: the HTTP status it got, or what its connection met."""
    if error is None:
        return f"HTTP {status}" if status is not None else "no answer"
    # urllib3's NewConnectionError (refused, unresolvable) is a ConnectTimeoutError too: only a real timeout says so.
    if caused_by(error, urllib3.exceptions.ConnectTimeoutError) and not caused_by(
        error, urllib3.exceptions.NewConnectionError
    ):
        return "connection timed out"
    return connection_failure(error)


def announce_wait(
    retry: Any, url: Optional[str], response: Any, error: Optional[BaseException], pool: Any = None
) -> None:
    """The line of a urllib3 retry just counted: ``retry.service`` (else the URL), the reason, the planned wait."""
    origin = f"{getattr(pool, 'scheme', 'http')}://{getattr(pool, 'host', '')}:{getattr(pool, 'port', '')}"
    where = retry.service or f"{origin}{(url or '').split('?')[0]}"
    reason = failure_reason(error, getattr(response, "status", None))
    say_retry(where, reason, len(retry.history), retry.allowed, retry.planned_wait or 0.0)


class AnnouncedRetries(logging.Filter):
    """Drops urllib3's own "Retrying (...)" line for a retry that announces its waits itself (``say_retry``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        first: Any = args[0] if isinstance(args, tuple) and args else None
        return not getattr(first, "announces_waits", False)


def quiet_urllib3_retry_lines() -> None:
    """Install ``AnnouncedRetries`` on urllib3's pool logger (once): each retry is said once, by us."""
    logger = logging.getLogger(URLLIB3_POOL_LOGGER)
    if not any(isinstance(existing, AnnouncedRetries) for existing in logger.filters):
        logger.addFilter(AnnouncedRetries())
