"""Faults over real sockets: transient failures are retried within bounds, client errors are not, every wait ends.

Each server of the local stack (IMS, the token endpoint, S3) is reached through
a fault-injecting proxy (``tests/faults/proxy.py``) that answers, drops, holds or
slows requests on purpose and counts what the client sent; nothing inside the
client is patched. Tests about IMS and the token endpoint run on one S3 engine
(moto): the engine is not what they exercise. Run alone with
``pytest tests/test_faults.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
import requests

from ims_python_helper.cli import Environment, main
from tests.faults import ledger
from tests.faults.front import (
    ROOT,
    ProxiedStack,
    assert_published,
    images_of_job,
    publish_argv,
    start_cli,
    wait_for,
)
from tests.faults.proxy import Fault, FaultProxy
from tests.support import Artifacts, CliResult, make_artifacts

only_moto = pytest.mark.parametrize("stack", ["moto"], indirect=True)
pytestmark = pytest.mark.usefixtures("fault_ledger_report")


def slow_down_once_per_kind() -> Fault:
    """What an S3 server says when it wants the client to slow down (botocore retries it): once per kind of request."""
    return Fault(
        status=503,
        times=1,
        per_kind=True,
        headers={"Content-Type": "application/xml"},
        body=b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Slow down</Message></Error>",
    )


def statuses(proxy: FaultProxy, kind: str) -> List[int]:
    """Statuses the client got for each request of ``kind``, in order."""
    return [e.status for e in proxy.exchanges if e.kind == kind]


# -- transient failures are retried ----------------------------------------------------------


@only_moto
def test_503_for_the_first_two_requests_of_every_kind_is_retried_and_the_publish_succeeds(
    publish, proxied, two_part_artifacts, ims_api, s3
):
    job = ims_api.new_job()
    proxied.ims.add(Fault(status=503, times=2, per_kind=True))
    proxied.tokens.add(Fault(status=503, times=2))

    result = publish(*publish_argv("retry-503", job, two_part_artifacts))

    assert result.code == 0, result.stderr
    kinds = ["GET /jobs/{id}", "GET /images", "POST /images", "PATCH /images/{id}", "PATCH /jobs/{id}"]
    for kind in kinds:
        assert statuses(proxied.ims, kind)[:3] == [503, 503, 200 if kind != "POST /images" else 201], kind
    assert statuses(proxied.tokens, "POST /keycloak/realms/shasta/protocol/openid-connect/token") == [503, 503, 200]
    assert_published(ims_api, s3, "retry-503", job, two_part_artifacts)


@only_moto
@pytest.mark.parametrize("job", [True, False], ids=["with-job", "without-job"])
def test_a_create_that_landed_but_lost_its_answer_makes_exactly_one_record(
    publish, proxied, two_part_artifacts, ims_api, s3, job
):
    """A gateway 502 after IMS created the record: the retry must find it, not make a second one."""
    name = f"lost-create-{job}"
    job_id = ims_api.new_job() if job else None
    proxied.ims.add(Fault(action="status_after_forward", status=502, method="POST", path="^/images$", times=1))

    result = publish(*publish_argv(name, job_id, two_part_artifacts), env={} if job else {"IMS_JOB_ID": None})

    assert result.code == 0, result.stderr
    assert statuses(proxied.ims, "POST /images") == [502], "the create was posted a second time"
    records = ims_api.images_named(name)
    assert len(records) == 1, f"{len(records)} records named {name}"
    assert records[0]["link"]
    if job_id:
        assert_published(ims_api, s3, name, job_id, two_part_artifacts)


def _lost_answer_publish(
    proxy: FaultProxy,
    method: str,
    path: str,
    publish: Callable[..., CliResult],
    two_part_artifacts: Artifacts,
    ims_api,
    s3,
) -> None:
    """Publish while ``proxy`` forwards the first matching request but answers it 503, then check the image."""
    job = ims_api.new_job()
    name = f"lost-answer-{proxy.name}-{method}-{path}"
    fault = Fault(action="status_after_forward", status=503, method=method, path=path, times=1)
    if proxy.name == "s3":
        fault.headers["Content-Type"] = "application/xml"
        fault.body = b"<Error><Code>ServiceUnavailable</Code><Message>gateway lost the answer</Message></Error>"
    proxy.add(fault)

    result = publish(*publish_argv(name, job, two_part_artifacts))

    assert result.code == 0, result.stderr
    assert fault.fired == 1
    # One record, linked, the files' md5s, and no unfinished upload (a repeated multipart create must not leave one).
    assert_published(ims_api, s3, name, job, two_part_artifacts)


@only_moto
@pytest.mark.parametrize("kind", ["PATCH /images/{id}", "PATCH /jobs/{id}"], ids=["link", "job-patch"])
def test_an_ims_patch_that_landed_but_lost_its_answer_is_repeated_harmlessly(
    kind, publish, proxied, two_part_artifacts, ims_api, s3
):
    method, path = kind.split(" ")
    _lost_answer_publish(proxied.ims, method, "^" + path.replace("{id}", ""), publish, two_part_artifacts, ims_api, s3)
    assert statuses(proxied.ims, kind) == [503, 200]


#: S3 requests whose answer gets lost; the engines differ in how they take the repeat (moto and Ceph both run).
LOST_S3_ANSWERS = [
    pytest.param("POST", r"/rootfs\?uploads$", id="multipart-create"),
    pytest.param("PUT", r"/rootfs\?.*\bpartNumber=1\b", id="part"),
    pytest.param("POST", r"/rootfs\?uploadId=", id="multipart-complete"),
    pytest.param("PUT", r"/rootfs$", id="metadata-copy"),
    pytest.param("PUT", r"/manifest\.json$", id="manifest"),
]


@pytest.mark.parametrize("method, path", LOST_S3_ANSWERS)
def test_an_s3_request_that_landed_but_lost_its_answer_is_retried_into_one_clean_image(
    method, path, publish, proxied, two_part_artifacts, ims_api, s3
):
    _lost_answer_publish(proxied.s3, method, path, publish, two_part_artifacts, ims_api, s3)


@pytest.mark.wallclock
@only_moto
def test_retry_after_is_honoured_between_attempts(publish, proxied, two_part_artifacts, ims_api):
    job = ims_api.new_job()
    proxied.ims.add(Fault(status=503, method="PATCH", path="^/jobs/", times=1, headers={"Retry-After": "2"}))

    result = publish(*publish_argv("retry-after", job, two_part_artifacts))

    assert result.code == 0, result.stderr
    first, second = [e for e in proxied.ims.exchanges if e.kind == "PATCH /jobs/{id}"]
    assert second.started - first.ended >= 1.9


@pytest.mark.wallclock
@only_moto
def test_a_retry_after_longer_than_the_deadline_is_cut_to_the_deadline(publish, proxied, two_part_artifacts, ims_api):
    job = ims_api.new_job()
    proxied.ims.add(Fault(status=503, method="GET", path="^/jobs/", headers={"Retry-After": "3600"}))

    started = time.monotonic()
    result = publish(*publish_argv("retry-after-cut", job, two_part_artifacts), "--deadline", "2")

    assert result.code == 1
    assert time.monotonic() - started < 2 + 2
    assert "HTTP 503" in result.json["error"] or "deadline" in result.json["error"]


@only_moto
def test_s3_slow_down_for_the_first_request_of_every_kind_is_retried_and_the_publish_succeeds(
    publish, proxied, two_part_artifacts, ims_api, s3
):
    job = ims_api.new_job()
    proxied.s3.add(slow_down_once_per_kind())

    result = publish(*publish_argv("s3-slow-down", job, two_part_artifacts))

    assert result.code == 0, result.stderr
    for kind, count in proxied.s3.kinds().items():
        assert count >= 2 and statuses(proxied.s3, kind)[0] == 503, kind
    assert_published(ims_api, s3, "s3-slow-down", job, two_part_artifacts)


# -- client errors are not retried -----------------------------------------------------------

CLIENT_ERRORS = [
    pytest.param(status, "PATCH", "^/images/", id=f"link-{status}") for status in (400, 401, 403, 404, 409, 422)
]
CLIENT_ERRORS += [pytest.param(status, "POST", "^/images$", id=f"create-{status}") for status in (400, 409, 422)]
CLIENT_ERRORS += [
    pytest.param(403, "GET", "^/jobs/", id="job-read-403"),
    pytest.param(404, "PATCH", "^/jobs/", id="job-patch-404"),
]


@only_moto
@pytest.mark.parametrize("status, method, path", CLIENT_ERRORS)
def test_client_errors_are_not_retried_and_report_the_servers_problem_detail(
    status, method, path, publish, proxied, two_part_artifacts, ims_api, snapshot
):
    job = ims_api.new_job()
    detail = f"the test proxy refuses this {method} with {status}"
    proxied.ims.add(Fault(status=status, method=method, path=path, detail=detail))
    before = snapshot()

    result = publish(*publish_argv(f"client-error-{status}", job, two_part_artifacts))

    assert result.code == 1
    assert detail in result.json["error"]
    # A 401 is replayed once with a new token (the old one may have expired); nothing else is repeated.
    assert proxied.ims.count(method=method, path=path) == (2 if status == 401 else 1)
    assert proxied.tokens.count() == (2 if status == 401 else 1)
    assert snapshot() == before, "the failed run left something behind"
    ledger.note(cleanups_verified=1)


@only_moto
def test_one_401_is_answered_with_a_new_token_and_a_single_replay(publish, proxied, two_part_artifacts, ims_api, s3):
    job = ims_api.new_job()
    proxied.ims.add(Fault(status=401, method="PATCH", path="^/images/", times=1))

    result = publish(*publish_argv("replayed-401", job, two_part_artifacts))

    assert result.code == 0, result.stderr
    assert statuses(proxied.ims, "PATCH /images/{id}") == [401, 200]
    assert proxied.tokens.count() == 2
    assert_published(ims_api, s3, "replayed-401", job, two_part_artifacts)


# -- a failed publish removes what it created ------------------------------------------------


def test_link_answered_500_fails_removes_the_record_and_every_object_and_marks_the_job_error(
    publish, proxied, two_part_artifacts, ims_api, snapshot
):
    job = ims_api.new_job()
    proxied.ims.add(Fault(status=500, method="PATCH", path="^/images/"))
    before = snapshot()

    result = publish(*publish_argv("link-500", job, two_part_artifacts), "--set-job-error")

    assert result.code == 1
    assert "HTTP 500" in result.json["error"]
    assert proxied.ims.count(method="PATCH", path="^/images/") == 1, "a 500 is not a transient failure"
    assert proxied.s3.count(method="PUT") >= 5, "the artifacts were uploaded before the link"
    assert statuses(proxied.ims, "DELETE /images/{id}") == [204]
    assert snapshot() == before
    ledger.note(cleanups_verified=1)
    assert ims_api.get(f"/jobs/{job}")["status"] == "error"


@only_moto
def test_a_job_patch_that_fails_after_the_link_removes_the_linked_image(
    publish, proxied, two_part_artifacts, ims_api, snapshot
):
    job = ims_api.new_job()
    proxied.ims.add(Fault(status=500, method="PATCH", path="^/jobs/", detail="job store unavailable"))
    before = snapshot()

    result = publish(*publish_argv("job-patch-500", job, two_part_artifacts))

    assert result.code == 1
    assert "job store unavailable" in result.json["error"]
    assert statuses(proxied.ims, "PATCH /images/{id}") == [200]
    assert snapshot() == before
    ledger.note(cleanups_verified=1)
    assert ims_api.get(f"/jobs/{job}").get("resultant_image_id") is None


# -- every wait ends -------------------------------------------------------------------------


@pytest.mark.wallclock
@only_moto
def test_a_wrong_oauth_secret_fails_at_once_with_a_clear_message(publish, proxied, two_part_artifacts, ims_api, stack):
    job = ims_api.new_job()
    started = time.monotonic()

    result = publish(
        *publish_argv("wrong-secret", job, two_part_artifacts), env={"OAUTH_CLIENT_SECRET": "not-the-secret"}
    )

    assert result.code == 1
    assert time.monotonic() - started < 5
    error = result.json["error"]
    assert "refused the client credentials (invalid_client)" in error and "check the client id and secret" in error
    assert proxied.tokens.count() == 1, "a refused secret is not retried"
    assert proxied.ims.count() == 0 and proxied.s3.count() == 0
    assert "not-the-secret" not in result.stdout + result.stderr
    assert stack.client_secret not in result.stdout + result.stderr


@pytest.mark.wallclock
@only_moto
@pytest.mark.parametrize("outage", ["refused", "silent"])
def test_an_unreachable_token_endpoint_fails_within_the_deadline(outage, publish, proxied, two_part_artifacts, ims_api):
    job = ims_api.new_job()
    if outage == "refused":
        proxied.tokens.down()
    else:
        proxied.tokens.add(Fault(action="hang"))
    deadline = 2.0
    started = time.monotonic()

    result = publish(*publish_argv("no-token", job, two_part_artifacts), "--deadline", str(deadline), "-t", "1")

    assert result.code == 1
    assert time.monotonic() - started < deadline + 2
    error = result.json["error"]
    assert "token endpoint" in error and ("deadline" in error or "cannot reach" in error), error
    assert proxied.ims.count() == 0


@pytest.mark.wallclock
@only_moto
def test_an_ims_that_stops_answering_mid_publish_fails_within_the_deadline_and_cleans_up(
    publish, proxied, two_part_artifacts, ims_api, snapshot
):
    job = ims_api.new_job()
    proxied.ims.add(Fault(action="hang", method="PATCH", path="^/images/"))
    before = snapshot()
    deadline = 4.0
    started = time.monotonic()

    result = publish(*publish_argv("ims-silent", job, two_part_artifacts), "--deadline", str(deadline), "-t", "1")

    assert result.code == 1
    assert time.monotonic() - started < deadline + 3
    assert "deadline" in result.json["error"] or "timed out" in result.json["error"]
    assert snapshot() == before
    ledger.note(cleanups_verified=1)


# -- a publish that outlives its tokens ------------------------------------------------------


class LocalUp:
    """``python -m ims_python_helper local up ...`` as a child process, with the settings it exported."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ims_python_helper", "local", "up", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.env: Dict[str, str] = {}
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if line == "ready":
                return
            match = re.fullmatch(r"export (\w+)=(.*)", line)
            if match:
                self.env[match.group(1)] = match.group(2).strip("'")
        raise AssertionError(f"local up exited with {self.process.wait()} before it was ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def short_lived_tokens(tmp_path: Path) -> Iterator[LocalUp]:
    """A stack (moto S3) whose token endpoint issues tokens that live one second."""
    local = LocalUp("--token-lifetime", "1", "--s3", "moto", "--data-dir", str(tmp_path / "stack"))
    try:
        yield local
    finally:
        local.stop()


@pytest.mark.wallclock
def test_a_publish_that_outlives_many_token_lifetimes_succeeds(short_lived_tokens: LocalUp, tmp_path: Path) -> None:
    """Tokens live 1 s; S3 is throttled so the publish takes over 10 s; the link and job patch come last."""
    local = short_lived_tokens
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=6 * 1024 * 1024, seed=7)
    total = sum(path.stat().st_size for path in artifacts.paths.values())
    with (
        FaultProxy(local.env["S3_ENDPOINT"], "s3", bandwidth=total / 11.0) as slow_s3,
        FaultProxy(local.env["IMS_URL"], "ims") as ims,
    ):
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
        environ.update(local.env, S3_ENDPOINT=slow_s3.url, IMS_URL=ims.url, IMS_PROGRESS="log")
        out, err = io.StringIO(), io.StringIO()
        started = time.monotonic()
        code = main(publish_argv("long-publish", local.env["IMS_JOB_ID"], artifacts), Environment(out, err, environ))
        took = time.monotonic() - started
        ledger.note(runs=1)

    assert code == 0, err.getvalue()
    assert took >= 10, f"the publish took only {took:.1f} s"
    token_base = local.env["OAUTH_CLIENT_ENDPOINT"].split("/keycloak/")[0]
    grants = requests.get(f"{token_base}/_local/stats", timeout=5).json()["grants"]
    assert grants > 1, "the client never fetched a second token"
    assert ims.kinds()["PATCH /jobs/{id}"] >= 1 and ims.exchanges[-1].status == 200
    ledger.note(token_grants=grants)


# -- signals clean up like failures ----------------------------------------------------------


@pytest.mark.wallclock
def test_sigterm_removes_what_the_run_created(proxied, stack_env, ims_api, snapshot, tmp_path):
    _interrupt_mid_upload(signal.SIGTERM, proxied, stack_env, ims_api, snapshot, tmp_path)


@pytest.mark.wallclock
@only_moto
def test_sigint_removes_what_the_run_created(proxied, stack_env, ims_api, snapshot, tmp_path):
    _interrupt_mid_upload(signal.SIGINT, proxied, stack_env, ims_api, snapshot, tmp_path)


def _interrupt_mid_upload(signum: int, proxied: ProxiedStack, stack_env, ims_api, snapshot, tmp_path: Path) -> None:
    """Send ``signum`` to a CLI child process while its rootfs parts are on the way; nothing may be left."""
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=12 * 1024 * 1024, seed=3)
    job = ims_api.new_job()
    name = f"signalled-{signal.Signals(signum).name}"
    proxied.s3.throttle.rate = 8e6
    before = snapshot()

    process = start_cli(
        publish_argv(name, job, artifacts), {**stack_env, **proxied.env()}, subprocess.PIPE, subprocess.PIPE
    )
    wait_for(lambda: proxied.s3.body_bytes(r"/rootfs\?") > 1024 * 1024, 30, "the rootfs parts to be on the way")
    made = images_of_job(ims_api.get("/images"), name, job)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    ledger.note(runs=1, signals=1)

    assert process.returncode == 1, err
    assert f"interrupted by {signal.Signals(signum).name}" in json.loads(out)["error"]
    # The run had made its image record when the signal came, so there was something to clean up ...
    assert len(made) == 1, made
    # ... and it is gone, with everything else the run stored.
    assert images_of_job(ims_api.get("/images"), name, job) == []
    assert snapshot() == before, "the interrupted run left something behind"
    ledger.note(cleanups_verified=1)
