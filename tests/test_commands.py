"""Every command, the ``local`` ones (up, demo, job) included, writes only to the streams ``main`` is given."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ims_python_helper.cli import Environment, main
from ims_python_helper.errors import ExitStatus


@pytest.mark.parametrize("command", ["up", "demo", "job"])
def test_local_commands_report_on_the_environment_streams(tmp_path: Path, command: str):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    argv = ["local", command, "--s3", "moto", "--data-dir", str(blocker / "data")]

    status = main(argv, Environment(stdout=out, stderr=err, environ={}))

    assert status == ExitStatus.FAILURE
    assert f"local {command}: cannot start the stack" in err.getvalue()
    assert out.getvalue() == ""


def test_usage_errors_exit_with_the_usage_status():
    out, err = io.StringIO(), io.StringIO()
    status = main(["image", "set_job_status", "not-a-uuid", "error"], Environment(stdout=out, stderr=err, environ={}))
    assert status == ExitStatus.USAGE == 2
    assert "is not a UUID" in err.getvalue()
