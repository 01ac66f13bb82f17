"""S3 that is restarting or gone: botocore's standard retry handler with IMS's backoff and the run's deadline.

botocore's standard mode retries the right failures (connection errors, cut
connections, timeouts, 5xx, throttling) but waits only ``rand * 0.05 * 2^i`` s
after a non-throttling failure, and a shared quota stops all retries of a client
after 35 or so: an RGW that restarts for ten seconds fails every part upload in
flight within about a second. Here the same handler is kept and given two other
parts: the backoff IMS gets (``oauth.build_retry``: 0, 1, 2, 4, 8 s plus up to
0.5 s jitter, no wait past the deadline) and a quota large enough that every
request in flight can use all its attempts. Every S3 call goes through it,
s3transfer's part uploads included.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Set, Tuple

import urllib3.exceptions
from botocore.exceptions import ConnectionClosedError, ConnectionError, HTTPClientError
from botocore.retries import quota, standard

from .retrylog import failure_reason, say_retry
from .transport import caused_by

if TYPE_CHECKING:
    from .deadline import Deadline

LOGGER = logging.getLogger(__name__)

#: Waits after a failure that is not throttling: the n-th retry waits ``BACKOFF_FACTOR * 2^(n-1)`` s (none first).
BACKOFF_FACTOR = 0.5
#: Longest wait between two attempts, as for IMS.
BACKOFF_MAX = 8.0
#: Random extra wait, so parts that failed together do not all come back at once.
BACKOFF_JITTER = 0.5
#: Longest wait after throttling (``SlowDown``), as botocore's own.
THROTTLED_BACKOFF_MAX = 20.0
#: How long S3 may refuse, reset or cut connections before they are no longer retried: about the waits above.
OUTAGE_SECONDS = 16.0
#: What botocore's quota charges for one retry when given no throttling detector (its ``_RETRY_COST``: 14),
#: with room to spare.
MAX_RETRY_COST = 20


#: What the network beneath botocore raises: a request that failed with one of these is worth sending again.
_NETWORK_ERRORS = (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException)

_THROTTLED_CODES = standard.ThrottledRetryableChecker()
_MODELED_ERRORS = standard.ModeledRetryErrorDetector()


def is_throttled(context: Any) -> bool:
    """True when the failed attempt was throttled (``SlowDown`` and friends, or a modeled throttling error).

    Built from the two checkers every botocore since 1.36 has (the platform pins 1.36.26); newer
    releases' ``ThrottlingErrorDetector.is_throttling_error_from_context`` does the same and more.
    """
    if _THROTTLED_CODES.is_retryable(context):
        return True
    return bool(_MODELED_ERRORS.detect_error_type(context) == _MODELED_ERRORS.THROTTLING_ERROR)


class DeadlineBackoff(standard.BaseRetryBackoff):  # type: ignore[misc]
    """The wait before an S3 retry: IMS's backoff (botocore's own when throttled), never past the deadline."""

    def __init__(
        self, deadline: Optional[Deadline], throttled: Callable[[Any], bool], jitter: Any = random.random
    ) -> None:
        self.deadline = deadline
        self._throttled = throttled
        self._random = jitter

    def delay_amount(self, context: Any) -> float:
        """Seconds to wait before attempt ``context.attempt_number + 1``."""
        retry = int(context.attempt_number)  # 1 after the first attempt failed
        if self._throttled(context):
            wait = self._random() * min(2.0 ** (retry - 1), THROTTLED_BACKOFF_MAX)
        else:
            wait = 0.0 if retry <= 1 else min(BACKOFF_FACTOR * 2.0 ** (retry - 1), BACKOFF_MAX)
            wait += self._random() * BACKOFF_JITTER
        left = None if self.deadline is None else self.deadline.remaining()
        return wait if left is None else max(0.0, min(wait, left))


class OutageClock:
    """Since when S3 cannot be reached: a refused, reset or cut connection is retried only within ``OUTAGE_SECONDS``.

    The budget is per outage, not per request: once S3 has been unreachable that
    long, a request failing to connect is not retried (s3transfer's abort of a
    failed upload, say, does not wait through a budget of its own). Any answer
    from S3, an error status included, ends the outage.
    """

    def __init__(self, seconds: float = OUTAGE_SECONDS) -> None:
        self.seconds = seconds
        self._since: Optional[float] = None
        self._lock = threading.Lock()

    def heard(self, **_kwargs: Any) -> None:
        """botocore ``after-call`` hook: S3 answered."""
        with self._lock:
            self._since = None

    def still_trying(self) -> bool:
        """A request could not reach S3: True while the outage is younger than ``seconds``."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
            return now - self._since < self.seconds


class OutageConditions(standard.BaseRetryableChecker):  # type: ignore[misc]
    """botocore's standard retry conditions, with connection failures retried only while ``OutageClock`` allows."""

    def __init__(self, max_attempts: int, clock: OutageClock) -> None:
        self._standard = standard.StandardRetryConditions(max_attempts=max_attempts)
        self._clock = clock

    def is_retryable(self, context: Any) -> bool:
        """True when the attempt that failed is to be made again."""
        if not self._standard.is_retryable(context):
            return False
        caught = context.caught_exception
        # A certificate that does not verify now will not verify on the next attempt either.
        if caught is not None and (caused_by(caught, ssl.SSLCertVerificationError) or _raised_by_the_body(caught)):
            return False
        # Refused, reset or cut: S3 is not there. A read timeout is a slow S3, left to the attempts and the deadline.
        unreachable = isinstance(caught, (ConnectionError, ConnectionClosedError))
        return not unreachable or self._clock.still_trying()


def _raised_by_the_body(err: BaseException) -> bool:
    """True when the request failed in reading its body, not on the network.

    botocore wraps whatever the HTTP layer raises in ``HTTPClientError``; a part
    body raises when the publish has given the part up (another part failed),
    or the file was cut short or cannot be read. Sending it again raises the
    same, after waits.
    """
    # Only the bare class: its subclasses (cut connection, read timeout) are the network's own.
    if type(err) is not HTTPClientError:
        return False
    underneath = wrapped_error(err)
    return underneath is not None and not isinstance(underneath, _NETWORK_ERRORS)


def wrapped_error(err: BaseException) -> Optional[BaseException]:
    """The error underneath a botocore ``HTTPClientError`` (what the HTTP layer or a request body raised), if any."""
    return getattr(err, "kwargs", {}).get("error")


def retry_quota_for(max_attempts: int, pool_connections: int) -> Any:
    """botocore's retry quota with room for every pooled connection to spend all its retries, twice.

    The attempts and the deadline bound the retries of one run, not a quota
    shared by its parallel parts. It is built with the quota alone, as every
    botocore since 1.36 takes it (newer ones also take a throttling detector,
    only to charge less for a throttled retry): each retry then costs 14,
    within ``MAX_RETRY_COST``.
    """
    capacity = MAX_RETRY_COST * max_attempts * pool_connections * 2
    return standard.RetryQuotaChecker(quota.RetryQuota(capacity))


def install_s3_retries(client: Any, max_attempts: int, pool_connections: int, deadline: Optional[Deadline]) -> None:
    """Give ``client`` botocore's standard retry handler with ``DeadlineBackoff`` and a quota for every connection.

    It replaces the handler botocore registered for the client (same event, same
    id), so exactly one decides about each failed attempt.
    """
    adapter = standard.RetryEventAdapter()
    retry_quota = retry_quota_for(max_attempts, pool_connections)
    clock = OutageClock()
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=OutageConditions(max_attempts, clock),
            retry_backoff=DeadlineBackoff(deadline, is_throttled),
        ),
        retry_event_adapter=adapter,
        retry_quota=retry_quota,
    )
    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    announcer = RetryAnnouncer(handler.needs_retry, f"S3 at {client.meta.endpoint_url}", max_attempts - 1)
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    events.register(f"needs-retry.{service}", announcer.needs_retry, unique_id=f"retry-config-{service}")
    events.register(f"after-call.{service}", retry_quota.release_retry_quota)
    events.register(f"after-call.{service}", clock.heard)
    events.register(f"after-call.{service}", announcer.heard)


class RetryAnnouncer:
    """botocore's ``needs-retry`` handler that says each retry it decides on in one line (botocore is silent).

    Parts that fail together (an S3 gone, every upload in flight refused) wait
    alike: the same operation's n-th retry for the same reason is said once
    until S3 answers again (``heard``), not once per part.
    """

    def __init__(self, needs_retry: Callable[..., Any], where: str, allowed: int) -> None:
        self._needs_retry = needs_retry
        self._where = where
        self._allowed = allowed
        self._said: Set[Tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def needs_retry(self, **kwargs: Any) -> Any:
        """Decide as botocore's handler does; say a retry that was decided on."""
        delay = self._needs_retry(**kwargs)
        if delay is not None and delay is not False:  # a delay of 0 is a retry too
            operation = getattr(kwargs.get("operation"), "name", "")
            reason = failure_reason(kwargs.get("caught_exception"), _status(kwargs.get("response")))
            number = int(kwargs.get("attempts") or 0)
            with self._lock:
                first = (operation, reason, number) not in self._said
                self._said.add((operation, reason, number))
            if first:
                say_retry(f"{self._where} ({operation})", reason, number, self._allowed, float(delay))
        return delay

    def heard(self, **_kwargs: Any) -> None:
        """botocore ``after-call`` hook: S3 answered; the next failure is news again."""
        with self._lock:
            self._said.clear()


def _status(response: Any) -> Optional[int]:
    """The HTTP status of botocore's ``(http_response, parsed)`` pair, if there is one."""
    http_response = response[0] if isinstance(response, tuple) and response else None
    return getattr(http_response, "status_code", None)
