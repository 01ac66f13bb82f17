"""Issue 12's CLI points: usage errors are found before anything is contacted, and a job status
IMS does not know answers like every other failure (failure JSON on stdout, one line on stderr,
non-zero exit).

"Nothing contacted" is measured on the wire: the token endpoint, IMS and S3 are each reached
through a counting proxy, and the token server's own grant counter must not move.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from ims_python_helper.local.stack import LocalStack
from tests.faults.proxy import Fault, FaultProxy
from tests.support import Artifacts, CliResult, CliRunner, ImsApi, make_recipe


@dataclass
class Wire:
    """Counting proxies in front of the token endpoint, IMS and S3, and the environment that uses them."""

    stack: LocalStack
    tokens: FaultProxy
    ims: FaultProxy
    s3: FaultProxy

    @property
    def env(self) -> Dict[str, Optional[str]]:
        assert self.stack.tokens is not None and self.stack.ims is not None
        return {
            "OAUTH_CLIENT_ENDPOINT": self.tokens.url_for(self.stack.tokens.url),
            "IMS_URL": self.ims.url_for(self.stack.ims.url),
            "S3_ENDPOINT": self.s3.url,
        }

    def requests(self) -> int:
        return len(self.tokens.exchanges) + len(self.ims.exchanges) + len(self.s3.exchanges)

    def grants(self) -> int:
        assert self.stack.tokens is not None
        return self.stack.tokens.grants_issued


@pytest.fixture
def wire(stack: LocalStack) -> Iterator[Wire]:
    assert stack.tokens is not None and stack.ims is not None and stack.s3 is not None
    with FaultProxy(stack.tokens.url, name="tokens") as tokens, FaultProxy(stack.ims.url, name="ims") as ims:
        with FaultProxy(stack.s3.endpoint, name="s3") as s3:
            yield Wire(stack, tokens, ims, s3)


def failure_message(result: CliResult) -> str:
    """The one error line, checked to be the same reason the failure JSON on stdout gives."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ims_python_helper: error: "), result.stderr
    message = lines[0].split("error: ", 1)[1]
    assert result.json == {"result": "failure", "error": message}
    return message


Argv = Callable[[Artifacts, Path], List[str]]


def upload(*extra: str) -> Argv:
    return lambda a, tmp: ["image", "upload_artifacts", "usage", *extra]


def with_rootfs(*extra: str) -> Argv:
    return lambda a, tmp: ["image", "upload_artifacts", "usage", *a.flags("rootfs"), *extra]


def recipe(*extra: str) -> Argv:
    return lambda a, tmp: ["recipe", "upload", "usage-recipe", make_recipe(tmp / "r.tgz"), *extra]


JOB = str(uuid.UUID(int=12))

#: id, argv, exit status, text of the reason, extra environment.
BEFORE_CONTACT = [
    ("no-rootfs", lambda a, tmp: ["image", "upload_artifacts", "usage", *a.flags("kernel")], 2, "no rootfs given", {}),
    ("rootfs-twice", lambda a, tmp: upload(*a.flags("rootfs", "rootfs"))(a, tmp), 2, "given 2 times", {}),
    (
        "job-id-not-uuid",
        lambda a, tmp: ["image", "upload_artifacts", "u", "12", *a.flags("rootfs")],
        2,
        "not a UUID",
        {},
    ),
    ("ims-job-id-env-not-uuid", with_rootfs(), 2, "IMS_JOB_ID: '12' is not a UUID", {"IMS_JOB_ID": "12"}),
    ("unknown-option", with_rootfs("--frobnicate"), 2, "unrecognized arguments: --frobnicate", {}),
    ("bad-timeout", with_rootfs("--timeout", "soon"), 2, "expected a number of seconds", {}),
    ("status-job-not-uuid", lambda a, tmp: ["image", "set_job_status", "../x", "error"], 2, "is not a UUID", {}),
    ("recipe-no-distro", recipe(), 2, "the following arguments are required: --distro", {}),
    ("recipe-template-not-pair", recipe("--distro", "sles15", "--template-dictionary", "X"), 2, "not KEY=VALUE", {}),
    # Not usage errors (exit 1), but found without a server all the same.
    ("rootfs-file-missing", lambda a, tmp: upload("-r", str(tmp / "nope"))(a, tmp), 1, "does not exist", {}),
    ("kernel-is-a-directory", lambda a, tmp: with_rootfs("-k", str(tmp))(a, tmp), 1, "is a directory", {}),
    (
        "name-with-control-characters",
        lambda a, tmp: ["image", "upload_artifacts", "a\x1bb", *a.flags("rootfs")],
        1,
        "control characters",
        {},
    ),
    (
        "recipe-file-missing",
        lambda a, tmp: ["recipe", "upload", "r", str(tmp / "nope.tgz"), "--distro", "sles15"],
        1,
        "does not exist",
        {},
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "reason", "env"), [c[1:] for c in BEFORE_CONTACT], ids=[c[0] for c in BEFORE_CONTACT]
)
def test_bad_input_is_refused_before_anything_is_contacted(
    argv: Argv, code: int, reason: str, env: Dict[str, str], wire: Wire, run_cli: CliRunner, small_artifacts, tmp_path
):
    grants = wire.grants()

    result = run_cli(*argv(small_artifacts, tmp_path), env={**wire.env, **env})

    assert result.code == code, result.stderr
    assert reason in failure_message(result)
    assert wire.requests() == 0, f"contacted: {[e.kind for p in (wire.tokens, wire.ims, wire.s3) for e in p.exchanges]}"
    assert wire.grants() == grants


def test_the_wire_counts_a_run_that_does_contact(wire: Wire, run_cli: CliRunner, ims_api: ImsApi):
    """The measurement above can fail: a good command goes through all three proxies' counts."""
    grants = wire.grants()

    result = run_cli("image", "set_job_status", ims_api.new_job(), "building_image", env=wire.env)

    assert result.code == 0, result.stderr
    assert len(wire.tokens.exchanges) >= 1 and len(wire.ims.exchanges) >= 1
    assert wire.grants() == grants + 1


def test_a_status_nobody_knows_is_asked_of_ims_and_its_refusal_exits_1(run_cli: CliRunner, ims_api: ImsApi):
    """IMS judges its own vocabulary: the status goes to IMS, whose refusal is reported like any other (exit 1)."""
    job_id = ims_api.new_job()

    result = run_cli("image", "set_job_status", job_id, "finished")

    assert result.code == 1
    message = failure_message(result)
    assert message.startswith(f"IMS PATCH /jobs/{job_id} failed with HTTP 422: ") and "'status'" in message
    assert ims_api.get(f"/jobs/{job_id}")["status"] == "creating"


def test_a_status_this_ims_does_not_know_is_a_failure_like_any_other(wire: Wire, run_cli: CliRunner, ims_api: ImsApi):
    """An older IMS refuses a status its schema lacks (400): reported like every other IMS refusal."""
    job_id = ims_api.new_job()
    wire.ims.add(Fault(status=400, method="PATCH", path="/jobs/", detail="'waiting_on_user' is not one of [...]"))

    result = run_cli("image", "set_job_status", job_id, "waiting_on_user", env=wire.env)

    assert result.code == 1
    message = failure_message(result)
    assert message == f"IMS PATCH /jobs/{job_id} failed with HTTP 400: 'waiting_on_user' is not one of [...]"
    assert ims_api.get(f"/jobs/{job_id}")["status"] == "creating"
