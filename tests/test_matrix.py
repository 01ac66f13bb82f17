"""The test matrix on a machine without every Python: CI fails, a developer's machine skips and names (issue 18).

``noxfile.py`` finds each client cell's interpreter in pyenv or on PATH. On
CI (``CI`` set, or ``IMS_REQUIRE_ALL_PYTHONS=1`` as ``.ci/run`` exports) a
missing one fails the run before any test; elsewhere that cell is skipped and
the ``full`` cell names it last, with the command that gets it. These tests
build small pyenv trees and PATHs of their own and run the real nox.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nox", reason="nox is a developer tool (requirements-dev.txt)")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def noxfile():
    """noxfile.py as a module, loaded once (nox registers its sessions on import)."""
    spec = importlib.util.spec_from_file_location("ims_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_ci_requires_every_interpreter_and_a_developers_machine_does_not(noxfile):
    assert noxfile.require_all_pythons({}) is False
    assert noxfile.require_all_pythons({"CI": "true"}) is True
    assert noxfile.require_all_pythons({"IMS_REQUIRE_ALL_PYTHONS": "1"}) is True
    assert noxfile.require_all_pythons({"CI": "true", "IMS_REQUIRE_ALL_PYTHONS": "0"}) is False


def test_ci_run_requires_every_interpreter():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()

    assert "export IMS_REQUIRE_ALL_PYTHONS=1" in lines
    assert lines.index("export IMS_REQUIRE_ALL_PYTHONS=1") < lines.index("make test")


def test_missing_cells_are_named_with_the_command_that_gets_them(noxfile, tmp_path, monkeypatch):
    pyenv = tmp_path / "pyenv"
    executable(pyenv / "versions" / "3.12.1" / "bin" / "python3.12")
    # A pyenv shim answers for every version but runs only installed ones: it does not count.
    executable(pyenv / "shims" / "python3.9")
    executable(tmp_path / "bin" / "python3.11")
    monkeypatch.setenv("PYENV_ROOT", str(pyenv))
    monkeypatch.setenv("PATH", os.pathsep.join([str(pyenv / "shims"), str(tmp_path / "bin")]))

    missing = noxfile.missing_cells()

    assert [line.split(":")[0] for line in missing] == ["clients(3.9)", "clients(3.10)", "clients(3.13)"]
    assert "`pyenv install 3.9` (or put python3.9 on PATH)" in missing[0]
    assert noxfile.interpreter_found("3.12") == str(pyenv / "versions" / "3.12.1" / "bin" / "python3.12")
    assert noxfile.interpreter_found("3.11") == str(tmp_path / "bin" / "python3.11")


def run_nox_without_python_3_9(tmp_path: Path, **environ: str) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "IMS_REQUIRE_ALL_PYTHONS")}
    env.update(PYENV_ROOT=str(empty), PATH=str(empty), **environ)
    command = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--envdir", str(tmp_path / "nox")]
    return subprocess.run([*command, "-s", "clients(3.9)"], capture_output=True, text=True, env=env, check=False)


def test_a_developers_machine_skips_a_cell_without_its_interpreter(tmp_path):
    done = run_nox_without_python_3_9(tmp_path)

    assert done.returncode == 0, done.stderr
    assert "Session clients(3.9) skipped: Python interpreter 3.9 not found" in done.stderr


@pytest.mark.parametrize("ci", [{"CI": "true"}, {"IMS_REQUIRE_ALL_PYTHONS": "1"}], ids=["CI", "IMS_REQUIRE"])
def test_ci_fails_on_a_cell_without_its_interpreter(tmp_path, ci):
    done = run_nox_without_python_3_9(tmp_path, **ci)

    assert done.returncode == 1
    assert "clients(3.9) failed: Python interpreter 3.9 not found" in done.stderr
