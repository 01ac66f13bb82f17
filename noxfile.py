"""The test matrix (nox): the whole suite on the default interpreter, the client suite on every Python.

``nox`` runs every cell (``make test`` does that, and so does CI); ``nox -l``
lists them; ``nox -s "clients(3.12-platform)"`` runs one. Each cell is a fresh
virtualenv installed with ``-c`` from its constraints file, so what a cell
tests is exactly what that file pins:

- ``full``: linters and the whole suite (moto, and Ceph RGW where installed),
  on the interpreter that runs nox, pinned by ``constraints.txt``.
- ``clients(3.12-platform)``, ``clients(3.11-platform)``: the client suite on
  moto under the libraries the platform's images pin (``constraints/platform.txt``).
- ``clients(3.9)``, ``clients(3.10)``, ``clients(3.13)``: the client suite on
  moto with the newest versions each interpreter can install.

The interpreters are pyenv's (``$PYENV_ROOT/versions/3.X.Y``, as on the
project's machines); elsewhere ``python3.X`` is looked up on PATH. CI
(``.ci/run`` sets ``IMS_REQUIRE_ALL_PYTHONS=1``; ``CI`` in the environment
does the same) fails when one is missing; elsewhere, on a laptop with one
Python, the cells without an interpreter are skipped and named at the end
with the command that gets them.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from typing import List, Mapping, Optional

import nox


def require_all_pythons(environ: Mapping[str, str]) -> bool:
    """Whether a cell whose interpreter is missing fails the run: on CI (``CI``, or ``IMS_REQUIRE_ALL_PYTHONS=1``)."""
    explicit = environ.get("IMS_REQUIRE_ALL_PYTHONS", "").strip().lower()
    if explicit:
        return explicit not in ("0", "false", "no", "off")
    return "CI" in environ


#: CI fails on a missing interpreter; a developer's machine skips that cell and names it (``full`` does, last).
nox.options.error_on_missing_interpreters = require_all_pythons(os.environ)
#: The interpreters are the machine's: never fetched behind the developer's back (nox would download them with uv).
nox.options.download_python = "never"
#: uv makes and fills a cell's virtualenv in seconds; virtualenv and pip where uv is missing.
nox.options.default_venv_backend = "uv|virtualenv"
#: Client cells first, the whole suite last: its pytest summary is the run's last one.
nox.options.sessions = ["clients", "full"]

#: What the client suite leaves out, and why: the local stack's own server tests
#: (tests/local: server code, not the client), the hypothesis property runs and
#: the command-line usage table (tests/test_properties.py, tests/test_bad_input.py:
#: argument parsing, the same on every library version), the README checks
#: (tests/test_docs.py), the pip install under the platform's constraint
#: (tests/test_packaging.py: packaging, not the libraries; it needs pip, which the
#: cells' uv virtualenvs lack), the matrix's own choices (tests/test_matrix.py: it
#: runs nox, a developer tool), and the long multi-process scenarios whose time goes into
#: waiting out held answers, outages, kills and overlapping runs (crash re-runs,
#: slow and restarting servers, overlapping runs, the seeded catalogue, the whole
#: local job, the Ceph soak). Tests marked ``wallclock`` (outcome bound to elapsed
#: time) are left out too. The ``full`` cell runs all of them. What stays is every
#: path through boto3, s3transfer, botocore, urllib3, requests and requests-oauthlib:
#: publish, transfer and integrity checks, fault answers and retries (the S3 retry
#: schedule in tests/test_s3_retries.py included), TLS, recipes, idempotency, the
#: job-pod toolkit, log redaction and the callers' compatibility tests.
CLIENT_SUITE_IGNORES = (
    "tests/local",
    "tests/test_properties.py",
    "tests/test_bad_input.py",
    "tests/test_docs.py",
    "tests/test_packaging.py",
    "tests/test_matrix.py",
    "tests/test_crash_rerun.py",
    "tests/test_slow_servers.py",
    "tests/test_restarts_and_signals.py",
    "tests/test_overlapping_runs.py",
    "tests/test_catalogue.py",
    "tests/test_ceph_soak.py",
    "tests/toolkit/test_local_job.py",
)

#: pytest-xdist processes per cell. Most tests wait on servers (IMS, moto, Ceph, fault proxies
#: holding answers), not on the CPU, so three processes keep two cores busy; a cell ends in a
#: quarter of its single-process time. ``-n 0`` after ``--`` runs a cell in one process.
WORKERS = ["-n", "3", "--dist", "worksteal"]

#: (Python, constraints file, id) of each client cell.
CLIENT_CELLS = (
    ("3.12", "constraints/platform.txt", "3.12-platform"),
    ("3.11", "constraints/platform.txt", "3.11-platform"),
    ("3.9", "constraints/py39.txt", "3.9"),
    ("3.10", "constraints/py310.txt", "3.10"),
    ("3.13", "constraints.txt", "3.13"),
)


def _pyenv_root() -> str:
    return os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


def pyenv_interpreter(version: str) -> str:
    """The newest pyenv ``python3.X`` for ``version`` ("3.12"), else the bare version for nox to find on PATH.

    A path rather than PATH: pyenv's shims answer for every version but run
    only the selected ones, so a shim found first on PATH would fail.
    """
    root = _pyenv_root()
    found: List[str] = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
    found = [path for path in found if os.access(path, os.X_OK)]
    if not found:
        return version

    def patch_level(path: str) -> int:
        number = path.split(os.sep)[-3].split(".")[-1]
        return int(number) if number.isdigit() else -1

    return max(found, key=patch_level)


def interpreter_found(version: str) -> Optional[str]:
    """Where the interpreter of ``version`` is: pyenv's, else ``python3.X`` on PATH (not a pyenv shim); else None."""
    chosen = pyenv_interpreter(version)
    if chosen != version:
        return chosen
    on_path = shutil.which(f"python{version}")
    if on_path is None or os.path.dirname(on_path) == os.path.join(_pyenv_root(), "shims"):
        return None  # a shim without an installed version behind it fails when run
    return on_path


def missing_cells() -> List[str]:
    """What to tell a developer about the client cells this machine has no interpreter for, one line each."""
    return [
        f"clients({cell}): no Python {version}; `pyenv install {version}` (or put python{version} on PATH), "
        f'then `nox -s "clients({cell})"`'
        for version, _, cell in CLIENT_CELLS
        if interpreter_found(version) is None
    ]


def constraints_for_this_python() -> str:
    """``constraints/py3X.txt`` where there is one (3.9, 3.10), else ``constraints.txt``: the Makefile's rule."""
    path = os.path.join("constraints", f"py{sys.version_info[0]}{sys.version_info[1]}.txt")
    return path if os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), path)) else "constraints.txt"


def _install(session: nox.Session, constraints: str, requirements: str) -> None:
    session.install("-c", constraints, "-r", requirements)
    session.install("-c", constraints, "-e", ".[local,progress,template]")


@nox.session
@nox.parametrize(
    "python,constraints,expect",
    [(pyenv_interpreter(version), constraints, cell) for version, constraints, cell in CLIENT_CELLS],
    ids=[cell for _, _, cell in CLIENT_CELLS],
)
def clients(session: nox.Session, constraints: str, expect: str) -> None:
    """The client suite on moto under one interpreter and one set of pinned libraries."""
    _install(session, constraints, "requirements-test.txt")
    python, _, pins = expect.partition("-")
    env = {
        "IMS_TEST_S3": "moto",
        # tests/compat/test_versions.py checks that the cell runs what it claims to.
        "IMS_TEST_CONSTRAINTS": constraints,
        "IMS_TEST_EXPECT_PYTHON": python,
        "IMS_TEST_EXPECT_PINS": pins,
    }
    ignores = [f"--ignore={path}" for path in CLIENT_SUITE_IGNORES]
    session.run("python", "-m", "pytest", "-q", *WORKERS, "-m", "not wallclock", *ignores, *session.posargs, env=env)


@nox.session(python=None)
def full(session: nox.Session) -> None:
    """Linters and the whole suite on the default interpreter (moto, and Ceph RGW where installed).

    The tests whose outcome depends on elapsed time (``wallclock``: deadlines,
    held answers, signals within a bound) run afterwards in one process, with
    the machine to themselves; everything else runs in ``WORKERS`` processes.
    """
    try:
        _install(session, constraints_for_this_python(), "requirements-dev.txt")
        session.run("ruff", "check", ".")
        session.run("ruff", "format", "--check", ".")
        session.run("mypy")
        session.run("python", "-m", "pytest", *WORKERS, "-m", "not wallclock", *session.posargs)
        # Exit status 5 (nothing selected): arguments after -- chose no test that is marked wallclock.
        session.run("python", "-m", "pytest", "-m", "wallclock", *session.posargs, success_codes=[0, 5])
    finally:
        # The run's last lines: what this machine could not test (CI fails on a missing interpreter instead).
        for line in missing_cells():
            session.warn(f"not run: {line}")
