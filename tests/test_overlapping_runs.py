"""Two runs of one job at once (Kubernetes may start a Job's pod again while the first still runs).

Each pair is two real CLI processes publishing the same image for the same
job; the second starts at a seeded random moment of the first's conversation
with the servers (counted at fault proxies in front of IMS, the token endpoint
and S3, so no sleeps), from before the first has taken the run claim to after
it has linked the image. Every pair must end with exactly one linked image for
the job holding the files, the job pointing at it, no open multipart upload,
nothing else stored, and each run either succeeding (the later one finishing
into the same image after waiting) or failing with the one-line claim message.
``IMS_OVERLAP_SEED`` and ``IMS_OVERLAP_PAIRS`` change the seed and the count.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from ims_python_helper.local.stack import LocalStack
from ims_python_helper.publish.claims import CLAIM_PREFIX
from tests.faults import ledger
from tests.faults.front import (
    ProxiedStack,
    assert_published,
    expected_keys,
    images_of_job,
    proxied_stack,
    publish_argv,
    start_cli,
    tiny_artifacts,
)
from tests.faults.proxy import ProxyEvent
from tests.support import CliResult

DEFAULT_SEED = 20261202
#: Pairs per S3 engine (IMS_OVERLAP_PAIRS for more); Ceph gets fewer for time: the claim logic is the same.
DEFAULT_PAIRS = {"moto": 20, "ceph": 6}
#: What a run that waited for the other says on stderr.
WAITED = "another run of this job is publishing"
#: What a run that gave up waiting says (its one error line).
REFUSED = "another run of job"

pytestmark = pytest.mark.usefixtures("fault_ledger_report")


class MomentTrigger:
    """A proxy observer that counts moments (each request and each answer) and fires an event at one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.moments = 0
        self.at: Optional[int] = None
        self.reached = threading.Event()

    def arm(self, at: Optional[int]) -> None:
        """Count from zero and fire at moment ``at`` (None: only count)."""
        with self._lock:
            self.moments, self.at = 0, at
            self.reached.clear()

    def __call__(self, event: ProxyEvent) -> Optional[str]:
        with self._lock:
            self.moments += 1
            if self.at is not None and self.moments >= self.at:
                self.reached.set()
        return None


@pytest.fixture
def trigger() -> MomentTrigger:
    """Counts the moments of a run and says when one is reached."""
    return MomentTrigger()


@pytest.fixture
def front(stack: LocalStack, trigger: MomentTrigger) -> Iterator[ProxiedStack]:
    """The stack's servers behind proxies that report every moment to ``trigger``."""
    with proxied_stack(stack, observer=trigger) as proxied:
        yield proxied


def _finish(process: subprocess.Popen, log: Path) -> CliResult:
    out, _ = process.communicate(timeout=400)
    return CliResult(process.returncode, out, log.read_text())


def _run_pair(argv: List[str], env: Dict[str, str], trigger: MomentTrigger, at: int, logs: Path) -> List[CliResult]:
    """Start the first run, the second when the first reaches moment ``at``; wait for both."""
    trigger.arm(at)
    with open(logs / "first.log", "w") as first_err, open(logs / "second.log", "w") as second_err:
        first = start_cli(argv, env, subprocess.PIPE, first_err)
        # A first run that ends before the moment still leaves the second a finished job to re-run.
        while not trigger.reached.wait(0.05) and first.poll() is None:
            pass
        second = start_cli(argv, env, subprocess.PIPE, second_err)
        results = [_finish(first, logs / "first.log"), _finish(second, logs / "second.log")]
    trigger.arm(None)
    return results


def _check_outcome(results: List[CliResult]) -> None:
    """Each run succeeded or failed with the one-line claim message; at least one succeeded."""
    assert any(r.code == 0 for r in results), [r.stderr for r in results]
    for result in results:
        if result.code != 0:
            assert result.code == 1 and REFUSED in result.json["error"], result.stderr


def test_overlapping_runs_of_one_job_end_with_one_linked_image_and_never_undo_each_other(
    stack: LocalStack, front: ProxiedStack, trigger: MomentTrigger, stack_env, ims_api, s3, snapshot, tmp_path
):
    seed = int(os.environ.get("IMS_OVERLAP_SEED", DEFAULT_SEED))
    engine = stack.s3.name if stack.s3 is not None else "?"
    pairs = int(os.environ.get("IMS_OVERLAP_PAIRS", DEFAULT_PAIRS.get(engine, 20)))
    rng = random.Random(seed)
    artifacts = tiny_artifacts(tmp_path / "artifacts", seed)
    name = f"overlap-{engine}"
    env = {**stack_env, **front.env()}
    # Slow enough that a second process (about a second to start) meets the first still uploading.
    front.s3.throttle.rate = 3e6

    # One run alone counts the moments of a whole publish.
    calibration_job = ims_api.new_job()
    trigger.arm(None)
    with open(tmp_path / "calibration.log", "w") as err:
        alone = start_cli(publish_argv(name, calibration_job, artifacts), env, subprocess.PIPE, err)
        assert _finish(alone, tmp_path / "calibration.log").code == 0
    moments = trigger.moments
    jobs = [calibration_job]
    before = snapshot()
    waited = 0
    print(f"\n{pairs} overlapping pairs on {engine}: seed {seed} (IMS_OVERLAP_SEED), {moments} moments per publish")

    for number in range(1, pairs + 1):
        job = ims_api.new_job()
        jobs.append(job)
        at = rng.randint(1, moments)
        logs = tmp_path / f"pair-{number}"
        logs.mkdir()
        results = _run_pair(publish_argv(name, job, artifacts), env, trigger, at, logs)
        ledger.note(runs=2)
        waits = sum(WAITED in r.stderr for r in results)
        waited += waits
        print(f"  pair {number:2}: second started at moment {at} -> exits {[r.code for r in results]}, waits {waits}")
        _check_outcome(results)
        record = assert_published(ims_api, s3, name, job, artifacts)
        ids = {r.json["ims_image_record"]["id"] for r in results if r.code == 0}
        assert ids == {record["id"]}, f"pair {number}: the runs reported {ids}, the job has {record['id']}"

    after = snapshot()
    images = ims_api.get("/images")
    ours = {i["id"] for job in jobs[1:] for i in images_of_job(images, name, job, s3)}
    assert len(ours) == pairs, "a job ended without its image, or with two"
    assert after.images - before.images == ours, "a record was left behind or removed"
    assert after.objects - before.objects == {f"boot-images/{k}" for i in ours for k in expected_keys(i, artifacts)}
    assert not [o for o in after.objects if CLAIM_PREFIX in o], "a run claim was left behind"
    assert after.uploads <= before.uploads, f"unfinished multipart uploads left: {after.uploads - before.uploads}"
    assert waited >= 3, f"only {waited} second runs found the first one's claim: the pairs hardly overlapped"
