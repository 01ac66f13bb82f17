"""Shared fixtures: the local stack (IMS, token endpoint, real S3 process) and ways to drive the real CLI.

The S3 engine is a parameter: every end-to-end test runs on moto and, where
its daemons are installed, on Ceph RGW (reported as skipped elsewhere). The
types these fixtures hand out live in ``tests/support.py``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import pytest
import trustme

from ims_python_helper.cli import Environment, main
from ims_python_helper.local.ceph_base import STORE_ENV
from ims_python_helper.local.stack import LocalStack
from tests.faults import ledger
from tests.faults.front import ProxiedStack, proxied_stack, tiny_artifacts
from tests.faults.proxy import FaultProxy
from tests.support import (
    ROOT,
    Artifacts,
    CliResult,
    CliRunner,
    ImsApi,
    Snapshot,
    make_artifacts,
    s3_client_for,
    s3_engines,
    take_snapshot,
    with_overrides,
)

#: The tests' Ceph keeps its data in RAM (ready in 2 s, not 9, and no disk to fill); tests about the
#: on-disk default (BlueStore) ask for it. Set before any stack starts, so ``local up`` children inherit it.
os.environ.setdefault(STORE_ENV, "memstore")


@pytest.fixture(scope="session", params=s3_engines())
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A running local stack for the whole session, one per S3 engine."""
    with LocalStack(data_dir=tmp_path_factory.mktemp(f"stack-{request.param}"), s3=request.param) as local:
        yield local


@pytest.fixture(scope="session")
def legacy_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[LocalStack], LocalStack]]:
    """Turns a stack into one whose IMS behaves like IMS before 3.16, sharing its S3 (made once per engine)."""
    made: Dict[int, LocalStack] = {}

    def legacy_for(base: LocalStack) -> LocalStack:
        if id(base) not in made:
            directory = tmp_path_factory.mktemp("stack-legacy")
            local = LocalStack(data_dir=directory, s3_backend=base.s3, ims_schema="legacy")
            local.start()
            made[id(base)] = local
        return made[id(base)]

    yield legacy_for
    for local in made.values():
        local.stop()


@pytest.fixture(autouse=True)
def _s3_engine_can_serve(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test of a stack whose S3 engine can no longer serve (a full Ceph cluster), naming the reason."""
    local = request.getfixturevalue("stack") if "stack" in request.fixturenames else None

    def check() -> None:
        problem = getattr(local.s3, "problem", None) if local is not None else None
        if problem:
            pytest.fail(problem, pytrace=False)

    check()
    yield
    check()  # after the test too: an error of its teardown, naming the cause of whatever hung or failed


@pytest.fixture
def stack_env(stack: LocalStack) -> Dict[str, str]:
    """Environment variables pointing the client at the stack (no flags needed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    env.update(stack.env())
    env["IMS_PROGRESS"] = "log"
    return env


@pytest.fixture
def run_cli(stack_env: Dict[str, str]) -> CliRunner:
    """Run the real CLI in-process with the stack's environment (plus overrides)."""

    def run(*argv: str, env: Optional[Dict[str, Optional[str]]] = None) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), Environment(stdout=out, stderr=err, environ=with_overrides(stack_env, env)))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def run_cli_process(stack_env: Dict[str, str]) -> CliRunner:
    """Run the real CLI as a child process (``python -m ims_python_helper``)."""

    def run(*argv: str, env: Optional[Dict[str, Optional[str]]] = None, timeout: float = 120) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "ims_python_helper", *argv],
            env=with_overrides(stack_env, env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def s3_proxy(stack: LocalStack) -> Iterator[FaultProxy]:
    """A proxy in front of the stack's S3 that counts every request and can inject faults.

    Point S3_ENDPOINT at ``.url``; ``bytes_sent`` and ``writes()`` tell what a run uploaded.
    """
    assert stack.s3 is not None
    with FaultProxy(stack.s3.endpoint, name="s3") as proxy:
        yield proxy


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    """A plain boto3 client on the stack's S3, for checking what the client stored (independent of it)."""
    assert stack.s3 is not None
    return s3_client_for(stack.s3)


@pytest.fixture
def ims_api(stack: LocalStack) -> ImsApi:
    """Independent access to the local IMS."""
    return ImsApi(stack)


@pytest.fixture
def snapshot(ims_api: ImsApi, s3: Any) -> Callable[[], Snapshot]:
    """Take a picture of IMS records, S3 objects and unfinished multipart uploads."""
    return lambda: take_snapshot(ims_api, s3)


@pytest.fixture
def artifacts(tmp_path: Path) -> Artifacts:
    """Fresh sample artifacts for one test (a 24 MiB rootfs: it goes up in several parts)."""
    return make_artifacts(tmp_path / "artifacts", seed=zlib.crc32(tmp_path.name.encode()))


@pytest.fixture
def small_artifacts(tmp_path: Path) -> Artifacts:
    """Sample artifacts with a 256 KiB rootfs, for tests about what is checked or printed rather than sent."""
    return make_artifacts(tmp_path / "small", rootfs_size=256 * 1024, seed=zlib.crc32(tmp_path.name.encode()))


@pytest.fixture(scope="module")
def fault_ledger_report() -> Iterator[None]:
    """Write the fault ledger's totals (``IMS_FAULT_REPORT``) when the module using it finishes."""
    yield
    ledger.write_report()


# -- HTTPS (tests/test_tls.py, tests/compat/test_compat_tls.py) ----------------------------------------


@pytest.fixture(scope="module")
def tls_stack(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """IMS and the token endpoint on HTTPS, and the session's S3 engine behind a TLS relay."""
    with LocalStack(data_dir=tmp_path_factory.mktemp("tls-stack"), s3_backend=stack.s3, tls=True) as local:
        yield local


@pytest.fixture
def tls_env(tls_stack: LocalStack) -> Dict[str, Optional[str]]:
    """Overrides for ``run_cli`` that point the client at the HTTPS stack and trust its CA."""
    env: Dict[str, Optional[str]] = dict(tls_stack.env())
    assert all(env[name].startswith("https://") for name in ("IMS_URL", "OAUTH_CLIENT_ENDPOINT", "S3_ENDPOINT"))
    return env


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA bundle that did not sign the stack's certificates."""
    path = tmp_path_factory.mktemp("wrong-ca") / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


# -- the stack behind fault proxies (tests/faults) ------------------------------------------


@pytest.fixture
def proxied(stack: LocalStack) -> Iterator[ProxiedStack]:
    """The stack's IMS, token endpoint and S3, each behind a fault proxy."""
    with proxied_stack(stack) as front:
        yield front


@pytest.fixture
def two_part_artifacts(tmp_path: Path) -> Artifacts:
    """All five artifacts, the rootfs just big enough for two 5 MiB parts."""
    return tiny_artifacts(tmp_path / "artifacts", seed=zlib.crc32(tmp_path.name.encode()))


@pytest.fixture
def publish(run_cli: Callable[..., CliResult], proxied: ProxiedStack) -> Callable[..., CliResult]:
    """Run the real CLI in-process against the proxies: ``publish(argv..., env={...})``."""

    def run(*argv: str, env: Dict[str, Optional[str]] = {}) -> CliResult:  # noqa: B006 - read only
        ledger.note(runs=1)
        return run_cli(*argv, env={**proxied.env(), **env})

    return run
