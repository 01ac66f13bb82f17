"""A hung S3 cannot keep a signalled run alive, a restarting S3 does not fail a publish, slow answers cost only time.

Issue 14. The client runs against the local stack with each server behind a
fault proxy (``tests/faults/proxy.py``): S3 that accepts connections and never
answers (``never_answer()``), S3 that is stopped for 10 s and comes back
(``outage(10)``), answers held 5 to 30 s on random requests (``hold``). Both S3
engines run each case. Run alone with ``pytest tests/test_restarts_and_signals.py -s``
to see the figures.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from ims_python_helper.local.stack import LocalStack
from tests.faults import front, ledger
from tests.faults.front import ProxiedStack, assert_published, proxied_stack, publish_argv
from tests.faults.proxy import Fault
from tests.support import ImsApi, make_artifacts

MiB = 1024 * 1024
#: A pod gets SIGKILL 30 s after SIGTERM; the client must be gone well before.
EXIT_BOUND = 25.0
FINAL_LINE = "ims_python_helper: error: "

pytestmark = [pytest.mark.wallclock, pytest.mark.usefixtures("fault_ledger_report")]


def sigterm(process: subprocess.Popen) -> Tuple[str, float]:
    """Send SIGTERM and wait for the process to end; its stdout and the seconds it took (killed after 60)."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    return out, time.monotonic() - signalled


def assert_ended_in_time_with_one_final_line(process: subprocess.Popen, out: str, stderr: str, took: float) -> str:
    """Exit 1 within ``EXIT_BOUND`` of the signal; the error line written last; the undo run once. Returns the error."""
    assert process.returncode == 1, stderr
    assert took < EXIT_BOUND, f"the process ended {took:.1f} s after SIGTERM"
    error: str = json.loads(out)["error"]
    lines = stderr.rstrip("\n").split("\n")
    assert lines[-1] == FINAL_LINE + error, f"something was written after the final line: {lines[-3:]}"
    assert stderr.count("removing what this run created") == 1, "the undo ran more than once"
    return error


@pytest.fixture
def proxied(stack: LocalStack) -> Iterator[ProxiedStack]:
    """The stack's IMS, token endpoint and S3, each behind a fault proxy."""
    with proxied_stack(stack) as proxies:
        yield proxies


def test_sigterm_while_s3_never_answers_ends_the_process_within_25_s_naming_what_is_left(
    proxied, stack_env, run_cli, ims_api, s3, tmp_path
):
    """S3 accepts connections and never answers; SIGTERM; the process is gone within 25 s.

    Its final line says what it could not remove, nothing is written after it,
    and the undo runs once. S3 back, the same command finishes into the record
    the run kept.
    """
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=16 * MiB, seed=21)
    job = ims_api.new_job()
    name = "sigterm-hung-s3"
    argv = publish_argv(name, job, artifacts)  # the default -t (60 s) and --deadline (4 h)
    proxied.s3.throttle.rate = 4e6
    with open(tmp_path / "stderr.log", "w") as err:
        process = front.start_cli(argv, {**stack_env, **proxied.env()}, subprocess.PIPE, err)
        front.wait_for(lambda: proxied.s3.body_bytes(r"/rootfs\?") > 2 * MiB, 60, "the rootfs parts to be on the way")
        hung = proxied.s3.never_answer()
        front.wait_for(lambda: hung.fired >= 1, 60, "a request to wait on the silent S3")
        out, took = sigterm(process)
    stderr = (tmp_path / "stderr.log").read_text()
    ledger.note(runs=1, signals=1, outages=1)
    print(f"\nSIGTERM with S3 never answering: the process ended {took:.1f} s after the signal")

    error = assert_ended_in_time_with_one_final_line(process, out, stderr, took)
    assert error.startswith("interrupted by SIGTERM (cleanup incomplete; still present: "), error
    [record] = front.images_of_job(ims_api.get("/images"), name, job)
    assert f"multipart uploads under s3://boot-images/{record['id']}/" in error
    assert f"IMS image record {record['id']} (kept: a re-run of this job finishes it)" in error

    proxied.s3.clear()
    proxied.s3.throttle.rate = None
    rerun = run_cli(*argv, env=proxied.env())
    ledger.note(runs=1, reruns=1)
    assert rerun.code == 0, rerun.stderr
    assert assert_published(ims_api, s3, name, job, artifacts)["id"] == record["id"]


@pytest.mark.parametrize("stack", ["moto"], indirect=True)
def test_sigterm_while_a_failed_run_waits_for_its_uploads_on_a_silent_s3_still_ends_within_25_s(
    proxied, stack_env, run_cli, ims_api, s3, tmp_path
):
    """The deadline passes while S3 answers nothing; the run waits for the requests in flight (up to ``-t``, 60 s).

    SIGTERM during that wait: the wait ends, cleanup runs once in the time a
    signal leaves, and the final line names what is left.
    """
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=16 * MiB, seed=23)
    job = ims_api.new_job()
    proxied.s3.throttle.rate = 4e6
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        argv = publish_argv("sigterm-while-stopping", job, artifacts, "--deadline", "8")
        process = front.start_cli(argv, {**stack_env, **proxied.env()}, subprocess.PIPE, err)
        front.wait_for(lambda: proxied.s3.body_bytes(r"/rootfs\?") > 2 * MiB, 60, "the rootfs parts to be on the way")
        proxied.s3.never_answer()
        front.wait_for(lambda: "stopping the uploads in flight" in log.read_text(), 60, "the deadline to pass")
        out, took = sigterm(process)
    stderr = log.read_text()
    ledger.note(runs=1, signals=1, outages=1)

    error = assert_ended_in_time_with_one_final_line(process, out, stderr, took)
    assert error.startswith("interrupted by SIGTERM (cleanup incomplete; still present: multipart uploads under"), error

    # S3 back, the same command finishes what the run left (and leaves no open upload to later tests).
    proxied.s3.clear()
    proxied.s3.throttle.rate = None
    rerun = run_cli(*argv, env=proxied.env())
    ledger.note(runs=1, reruns=1)
    assert rerun.code == 0, rerun.stderr
    assert_published(ims_api, s3, "sigterm-while-stopping", job, artifacts)


def test_s3_stopped_for_10_s_in_the_middle_of_a_publish_is_waited_for_and_the_publish_finishes(
    proxied, run_cli, ims_api, s3, tmp_path, snapshot
):
    """S3 refuses and cuts every connection for 10 s while the rootfs goes up (an RGW restart); the publish succeeds."""
    size = 128 * MiB
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=size, seed=22)
    job = ims_api.new_job()
    before = snapshot()
    outage: Dict[str, float] = {}

    def restart_s3_mid_rootfs() -> None:
        front.wait_for(lambda: proxied.s3.body_bytes(r"/rootfs\?") > size // 4, 120, "a quarter of the rootfs sent")
        outage["sent"] = proxied.s3.body_bytes(r"/rootfs\?")
        outage["at"] = time.monotonic()
        proxied.s3.outage(10)

    restarter = threading.Thread(target=restart_s3_mid_rootfs, daemon=True)
    restarter.start()
    argv = publish_argv("restarted-s3", job, artifacts, "--deadline", "300")
    argv[argv.index("--part-size") + 1] = "8"
    result = run_cli(*argv, env=proxied.env())
    ended = time.monotonic()
    restarter.join(timeout=5)
    ledger.note(runs=1, outages=1)

    assert result.code == 0, result.stderr
    assert "at" in outage and outage["sent"] < size, "S3 was not stopped in the middle of the rootfs"
    assert ended - outage["at"] > 10, "the publish ended before S3 came back"
    cut = [e for e in proxied.s3.exchanges if e.started < outage["at"] + 1 and e.ended >= outage["at"] and not e.status]
    assert cut, "no request was cut by the outage"
    record = assert_published(ims_api, s3, "restarted-s3", job, artifacts)
    after = snapshot()
    assert after.images - before.images == {record["id"]} and after.uploads <= before.uploads
    print(
        f"\nS3 stopped 10 s after {outage['sent'] / MiB:.0f} of {size / MiB:.0f} MiB: {len(cut)} requests cut,"
        f" the publish ended {ended - outage['at']:.1f} s after the outage began"
    )


#: Seed of the random holds (with it, S3 and IMS answers are held early in the publish).
HOLD_SEED = 1414


@pytest.fixture
def one_second_tokens(stack: LocalStack, tmp_path: Path) -> Iterator[LocalStack]:
    """Another IMS and token endpoint, whose tokens live 1 s, on the session stack's S3 engine."""
    with LocalStack(data_dir=tmp_path / "tokens", s3_backend=stack.s3, token_lifetime=1) as local:
        yield local


def test_answers_held_for_seconds_during_a_publish_with_one_second_tokens_cost_only_time(
    one_second_tokens, stack_env, run_cli, s3, tmp_path
):
    """Answers of IMS, the token endpoint and S3 held 5 to 30 s on random requests; tokens live 1 s.

    Every held IMS answer outlives the token its request carried, so the next
    request needs a new one. The publish succeeds: one record, every byte
    right, no open upload.
    """
    local = one_second_tokens
    ims_api = ImsApi(local)
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=32 * MiB, seed=HOLD_SEED)
    job = ims_api.new_job()
    with proxied_stack(local) as proxies:
        holds: List[Any] = [
            proxies.s3.add(Fault(action="hold", delay=5, delay_max=30, chance=0.3, times=3, seed=HOLD_SEED)),
            # The create's answer past the 10 s timeout: the client must find its record, not make a second.
            proxies.ims.add(Fault(action="hold", delay=12, method="POST", path="^/images$", times=1)),
            proxies.ims.add(Fault(action="hold", delay=5, delay_max=30, chance=0.3, times=1, seed=HOLD_SEED)),
            proxies.tokens.add(Fault(action="hold", delay=5, delay_max=8, chance=0.3, times=1, seed=HOLD_SEED)),
        ]
        argv = publish_argv("held-short-tokens", job, artifacts, "-t", "10", "--deadline", "600")
        argv[argv.index("--part-size") + 1] = "8"
        started = time.monotonic()
        result = run_cli(*argv, env={**local.env(), **proxies.env(), "IMS_PROGRESS": "log"})
        took = time.monotonic() - started
        grants = proxies.tokens.count(method="POST")
        ledger.note(runs=1)

    assert result.code == 0, result.stderr
    fired = [hold.fired for hold in holds]
    assert fired[0] >= 2 and fired[1] == 1 and fired[2] == 1, f"held S3, IMS create, IMS, token answers: {fired}"
    assert grants > 2, f"only {grants} tokens were fetched for a publish of {took:.0f} s with 1-second tokens"
    images = {i["id"] for i in ims_api.get("/images")}
    record = assert_published(ims_api, s3, "held-short-tokens", job, artifacts)
    assert images == {record["id"]}, "a second record was made"
    waits = {p: [round(w, 1) for w in h.waits] for p, h in zip(("S3", "IMS create", "IMS", "token"), holds)}
    print(f"\nheld answers {waits} s; {grants} tokens; the publish took {took:.1f} s")
