"""The S3 retry schedule: IMS's backoff, one budget per outage, nothing past the deadline (``clients/s3retry.py``).

The waits are read from botocore's own retry objects, as its retry handler asks
for them; the scenarios (an RGW restart, a silent S3) are in
``tests/test_restarts_and_signals.py``.
"""

from __future__ import annotations

from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.retries import standard

from ims_python_helper.clients.deadline import Deadline
from ims_python_helper.clients.s3retry import (
    DeadlineBackoff,
    OutageClock,
    OutageConditions,
    is_throttled,
    retry_quota_for,
)
from ims_python_helper.clients.storage import S3Settings


def refused(attempt: int) -> standard.RetryContext:
    """What botocore's handler knows after attempt ``attempt`` could not connect."""
    return standard.RetryContext(
        attempt_number=attempt,
        caught_exception=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        request_context={},
    )


def backoff(deadline: Deadline, jitter: float) -> DeadlineBackoff:
    return DeadlineBackoff(deadline, is_throttled, jitter=lambda: jitter)


def test_a_refused_connection_is_retried_five_times_waiting_as_long_as_ims_does():
    waits = [backoff(Deadline(None), 0.0).delay_amount(refused(n)) for n in range(1, S3Settings.max_attempts)]
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0]
    jittered = [backoff(Deadline(None), 1.0).delay_amount(refused(n)) for n in range(1, S3Settings.max_attempts)]
    assert jittered == [0.5, 1.5, 2.5, 4.5, 8.5]


def test_throttling_is_told_apart_from_a_refused_connection_on_every_botocore():
    slow_down = standard.RetryContext(
        attempt_number=1, parsed_response={"Error": {"Code": "SlowDown"}}, http_response=None, request_context={}
    )
    assert is_throttled(slow_down)
    assert not is_throttled(refused(1))


def test_the_quota_lets_every_connection_spend_all_its_retries_on_every_botocore():
    checker = retry_quota_for(S3Settings.max_attempts, S3Settings.max_pool_connections)
    retries = (S3Settings.max_attempts - 1) * S3Settings.max_pool_connections
    slow_down = {"Error": {"Code": "SlowDown"}}
    contexts = [refused(1) for _ in range(retries)]
    contexts += [
        standard.RetryContext(attempt_number=1, parsed_response=slow_down, http_response=None, request_context={})
        for _ in range(retries)
    ]
    assert all(checker.acquire_retry_quota(context) for context in contexts)


def test_no_wait_runs_past_the_deadline():
    assert 0.0 < backoff(Deadline(2.0), 1.0).delay_amount(refused(5)) <= 2.0
    assert backoff(Deadline(-1.0), 1.0).delay_amount(refused(5)) == 0.0


def test_connection_failures_are_retried_only_within_one_budget_per_outage():
    clock = OutageClock(seconds=0.2)
    conditions = OutageConditions(max_attempts=6, clock=clock)
    assert conditions.is_retryable(refused(1))  # the outage begins
    clock._since -= 0.3
    assert not conditions.is_retryable(refused(1)), "a new request got a budget of its own"
    clock.heard()  # S3 answered something: the next outage has its own budget
    assert conditions.is_retryable(refused(1))
    assert not conditions.is_retryable(refused(6)), "more attempts than max_attempts"


def test_a_slow_s3_is_not_an_outage_its_read_timeouts_get_every_attempt():
    clock = OutageClock(seconds=0.0)
    conditions = OutageConditions(max_attempts=6, clock=clock)
    slow = standard.RetryContext(
        attempt_number=5, caught_exception=ReadTimeoutError(endpoint_url="http://s3"), request_context={}
    )
    assert conditions.is_retryable(slow)
    assert not conditions.is_retryable(refused(1)), "no budget left for a refused connection"
