"""A publish killed at any moment, or cut off from S3, is finished by running the same command again.

The client runs as a real child process behind fault proxies (``tests/faults``)
in front of IMS, the token endpoint and S3. The SIGKILL test kills it at seeded
moments spread over a whole publish: when a request arrives at a proxy (the
server never sees it), when the server has answered (the client never learns
the answer), or a few milliseconds later while traffic flows. After each kill
the same command runs again and must finish with exactly one linked image of
that name for that job, the files' md5s in its manifest and no unfinished
multipart upload. ``IMS_FAULT_SEED`` and ``IMS_FAULT_KILLS`` change the seed
and the number of kills. Run alone with ``pytest tests/test_crash_rerun.py -s``
to see the kill plan.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from ims_python_helper.clients.ims import JOB_METADATA_KEY, RUN_METADATA_KEY
from ims_python_helper.helper import run_key_for
from ims_python_helper.local.stack import LocalStack
from tests.faults import ledger
from tests.faults.crash import KillSwitch, plan_kill_points
from tests.faults.front import (
    ProxiedStack,
    assert_published,
    expected_keys,
    images_of_job,
    keys_under,
    proxied_stack,
    publish_argv,
    start_cli,
    tiny_artifacts,
    wait_for,
)
from tests.support import IMS_MODES, CliResult, ImsApi, make_artifacts, stack_in_mode

#: Default seed of the kill plan (printed; set IMS_FAULT_SEED to try others).
DEFAULT_SEED = 20251125
#: Random kill points per S3 engine (set IMS_FAULT_KILLS for more); the four fixed ones come on top.
#: moto gets the full plan; Ceph a shorter one for time: the client's states are the same on both, and
#: Ceph's share is its own multipart abort and overwrite behaviour after a kill.
DEFAULT_KILLS = {"moto": 20, "ceph": 8}
#: Against IMS before 3.16 (no image metadata) fewer random kills: only record finding differs there.
LEGACY_KILLS = {"moto": 8, "ceph": 4}

pytestmark = pytest.mark.usefixtures("fault_ledger_report")


@pytest.fixture
def ims_mode(request: pytest.FixtureRequest) -> str:
    """The IMS generation to run against (parametrised with ``IMS_MODES``; today's by default)."""
    return str(getattr(request, "param", "current"))


@pytest.fixture
def mode_stack(stack: LocalStack, ims_mode: str, legacy_stacks) -> LocalStack:
    """The session's stack, or its twin whose IMS behaves like IMS before 3.16 (same S3)."""
    return stack_in_mode(ims_mode, stack, legacy_stacks)


@pytest.fixture
def stack_env(stack_env: Dict[str, str], mode_stack: LocalStack) -> Dict[str, str]:
    """The shared environment, pointed at ``mode_stack``'s IMS and token endpoint."""
    return {**stack_env, **mode_stack.env()}


@pytest.fixture
def ims_api(mode_stack: LocalStack) -> ImsApi:
    """Independent access to ``mode_stack``'s IMS."""
    return ImsApi(mode_stack)


@pytest.fixture
def switch() -> KillSwitch:
    """Counts the moments of a run and kills the client at one."""
    return KillSwitch()


@pytest.fixture
def switched_proxies(mode_stack: LocalStack, switch: KillSwitch) -> Iterator[ProxiedStack]:
    """The stack's servers behind fault proxies that report every moment to ``switch``."""
    with proxied_stack(mode_stack, observer=switch) as front:
        yield front


def _run_to_end(argv: List[str], env: Dict[str, str], log: Path, timeout: float = 120) -> CliResult:
    """Run the CLI as a child process and wait for it."""
    with open(log, "w") as err:
        process = start_cli(argv, env, subprocess.PIPE, err)
        out, _ = process.communicate(timeout=timeout)
    return CliResult(process.returncode, out, log.read_text())


@pytest.mark.parametrize("ims_mode", IMS_MODES, indirect=True)
def test_sigkill_at_random_moments_then_a_rerun_finishes_exactly_one_linked_image(
    mode_stack: LocalStack,
    switched_proxies: ProxiedStack,
    switch: KillSwitch,
    stack_env,
    run_cli,
    ims_api,
    s3,
    snapshot,
    tmp_path,
):
    seed = int(os.environ.get("IMS_FAULT_SEED", DEFAULT_SEED))
    engine = mode_stack.s3.name if mode_stack.s3 is not None else "?"
    legacy = mode_stack.ims_schema == "legacy"
    kills = int(os.environ.get("IMS_FAULT_KILLS", (LEGACY_KILLS if legacy else DEFAULT_KILLS).get(engine, 20)))
    artifacts = tiny_artifacts(tmp_path / "artifacts", seed)
    name = f"crash-rerun-{engine}-{mode_stack.ims_schema}"
    env = {**stack_env, **switched_proxies.env()}
    # Enough bandwidth for a quick publish, little enough that a kill a few ms late lands mid-upload.
    switched_proxies.s3.throttle.rate = 40e6

    # Records of the same name a run must never take: another job's unfinished one, and a bare one.
    other_job = ims_api.new_job()
    # IMS before 3.16 keeps no metadata: there the other job's record is as bare as the second decoy.
    keys = {JOB_METADATA_KEY: other_job, RUN_METADATA_KEY: run_key_for(other_job, name)}
    other = {} if legacy else {"metadata": keys}
    decoys = [ims_api.post("/images", {"name": name, **other}), ims_api.post("/images", {"name": name})]
    before = snapshot()

    # A run without a kill counts the moments of a whole publish.
    jobs = [ims_api.new_job()]
    switch.arm(None, None)
    calibration = _run_to_end(publish_argv(name, jobs[0], artifacts), env, tmp_path / "calibration.log")
    ledger.note(runs=1)
    assert calibration.code == 0, calibration.stderr
    trace = list(switch.trace)
    points = plan_kill_points(seed, len(trace), kills)
    print(
        f"\nSIGKILL on {engine}: seed {seed} (IMS_FAULT_SEED), {kills} random kills (IMS_FAULT_KILLS) "
        f"over the {len(trace)} moments of a publish, and {len(points) - kills} fixed ones"
    )
    assert_published(ims_api, s3, name, jobs[0], artifacts)

    landed = 0
    for number, point in enumerate(points, 1):
        job = ims_api.new_job()
        jobs.append(job)
        argv = publish_argv(name, job, artifacts)
        assert switched_proxies.idle(), "the previous run still has requests in flight"
        with open(tmp_path / f"killed-{number}.log", "w") as err:
            process = start_cli(argv, env, subprocess.DEVNULL, err)
            switch.arm(process, point)
            process.wait(timeout=120)
        switch.disarm()
        killed = process.returncode == -9
        landed += killed
        print(f"  kill {number:2} at moment {point.describe(trace)} -> {'killed' if killed else 'finished first'}")
        assert process.returncode in (0, -9), (tmp_path / f"killed-{number}.log").read_text()
        assert switched_proxies.idle()

        rerun = run_cli(*argv, env=switched_proxies.env())
        ledger.note(runs=2, kills=int(killed), kills_too_late=int(not killed), reruns=1)
        assert rerun.code == 0, f"re-run after kill {number} ({point.describe(trace)}), seed {seed}: {rerun.stderr}"
        assert_published(ims_api, s3, name, job, artifacts)

    # Nothing lost, nothing doubled, nothing orphaned, the decoys untouched.
    after = snapshot()
    images = ims_api.get("/images")
    ours = {i["id"]: i for job in jobs for i in images_of_job(images, name, job, s3)}
    ledger.note(records_checked=len(jobs), lost=len(jobs) - len(ours))
    assert len(ours) == len(jobs), "a job ended without its image, or with two"
    ledger.note(duplicated=len([i for i in images if i["name"] == name]) - len(jobs) - len(decoys))
    assert after.images - before.images == set(ours)
    assert after.objects - before.objects == {f"boot-images/{k}" for i in ours for k in expected_keys(i, artifacts)}
    assert after.uploads <= before.uploads, f"unfinished multipart uploads left: {after.uploads - before.uploads}"
    for decoy in decoys:
        assert ims_api.get(f"/images/{decoy['id']}") == decoy, "a run took another job's or a bare record"
        assert keys_under(s3, f"{decoy['id']}/") == []
    assert landed >= len(points) * 2 // 3, f"only {landed} of {len(points)} kills landed before the run ended"


def _outage_run(
    outage: str, switched_proxies: ProxiedStack, stack_env: Dict[str, str], ims_api: Any, tmp_path: Path
) -> Dict[str, Any]:
    """Publish with S3 lost in the middle of the rootfs upload; return what the run did and how long it took."""
    artifacts = make_artifacts(tmp_path / "artifacts", rootfs_size=12 * 1024 * 1024, seed=11)
    job = ims_api.new_job()
    name = f"s3-{outage}"
    # Stopped: refused connections fail fast, well inside the deadline. Hung: only the deadline ends the wait.
    deadline, timeout = (30.0, 5.0) if outage == "stopped" else (4.0, 0.75)
    argv = publish_argv(name, job, artifacts, "--deadline", str(deadline), "-t", str(timeout))
    switched_proxies.s3.throttle.rate = 4e6
    with open(tmp_path / "outage.log", "w") as err:
        started = time.monotonic()
        process = start_cli(argv, {**stack_env, **switched_proxies.env()}, subprocess.PIPE, err)
        wait_for(
            lambda: switched_proxies.s3.body_bytes(r"/rootfs\?") > 2 * 1024 * 1024,
            30,
            "the rootfs parts to be on the way",
        )
        if outage == "stopped":
            switched_proxies.s3.down()
        else:
            switched_proxies.s3.freeze()
        out, _ = process.communicate(timeout=deadline + 120)
        took = time.monotonic() - started
    ledger.note(runs=1, outages=1)
    print(f"\nS3 {outage} mid-rootfs: the run ended {took:.1f} s after it started (deadline {deadline:g} s)")
    return {
        "name": name,
        "job": job,
        "argv": argv,
        "artifacts": artifacts,
        "code": process.returncode,
        "result": json.loads(out),
        "stderr": (tmp_path / "outage.log").read_text(),
        "took": took,
        "deadline": deadline,
        "timeout": timeout,
    }


def _kept_record(ims_api: Any, name: str, job: str) -> Optional[Dict[str, Any]]:
    records = images_of_job(ims_api.get("/images"), name, job)
    assert len(records) <= 1
    return records[0] if records else None


@pytest.mark.wallclock
def test_s3_stopped_mid_rootfs_upload_fails_cleanly_and_a_rerun_after_restart_finishes(
    switched_proxies, stack_env, run_cli, ims_api, s3, tmp_path
):
    run = _outage_run("stopped", switched_proxies, stack_env, ims_api, tmp_path)

    assert run["code"] == 1, run["stderr"]
    assert run["took"] < run["deadline"], f"the run took {run['took']:.1f} s, past its deadline"
    error = run["result"]["error"]
    original = error.split(" (cleanup incomplete")[0]
    # The S3 failure, said once: "cannot write s3://BUCKET/KEY: connection refused".
    assert "s3://boot-images/" in original and "connection refused" in original, (
        f"the original error is not reported: {error}"
    )
    kept = _kept_record(ims_api, run["name"], run["job"])
    assert kept is not None and not kept.get("link"), "the record a re-run needs was deleted"
    # S3 was gone, so the cleanup could not finish: the error names exactly what may be left.
    assert f"still present: multipart uploads under s3://boot-images/{kept['id']}/" in error
    assert f"s3://boot-images/{kept['id']}/rootfs" in error and f"IMS image record {kept['id']} (kept" in error

    switched_proxies.s3.up()
    switched_proxies.s3.throttle.rate = None
    _rerun_finishes_into(kept, run, switched_proxies, run_cli, ims_api, s3)


def _rerun_finishes_into(kept, run, switched_proxies, run_cli, ims_api, s3) -> None:
    """The same command again succeeds, into the record the failed run kept."""
    rerun = run_cli(*run["argv"], env=switched_proxies.env())
    ledger.note(runs=1, reruns=1)

    assert rerun.code == 0, rerun.stderr
    record = assert_published(ims_api, s3, run["name"], run["job"], run["artifacts"])
    assert record["id"] == kept["id"], "the re-run did not finish the record the failed run created"


@pytest.mark.wallclock
@pytest.mark.parametrize("stack", ["moto"], indirect=True)
def test_s3_that_stops_answering_mid_rootfs_upload_fails_at_the_deadline_and_a_rerun_finishes(
    switched_proxies, stack_env, run_cli, ims_api, s3, tmp_path
):
    run = _outage_run("hung", switched_proxies, stack_env, ims_api, tmp_path)

    assert run["code"] == 1, run["stderr"]
    # The deadline, the attempt in flight (one timeout), then cleanup retrying a silent S3 (five timeouts).
    bound = run["deadline"] + 6 * run["timeout"] + 4
    assert run["took"] < bound, f"the run took {run['took']:.1f} s; expected under {bound:.0f} s"
    original = run["result"]["error"].split(" (cleanup incomplete")[0]
    assert "deadline" in original or "timed out" in original, original
    kept = _kept_record(ims_api, run["name"], run["job"])
    assert kept is not None and f"IMS image record {kept['id']} (kept" in run["result"]["error"]

    switched_proxies.s3.thaw()
    switched_proxies.s3.throttle.rate = None
    _rerun_finishes_into(kept, run, switched_proxies, run_cli, ims_api, s3)
