"""Two ``local up`` stacks side by side, a source and a destination: the README's admin example end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.support import ROOT, make_artifacts


def _up(data_dir: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "ims_python_helper", "local", "up", "--s3", "moto", "--data-dir", str(data_dir)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _exports(process: subprocess.Popen[str]) -> Dict[str, str]:
    """The ``export NAME=value`` lines ``local up`` prints before ``ready``."""
    assert process.stdout is not None
    env: Dict[str, str] = {}
    for line in process.stdout:
        if line.strip() == "ready":
            return env
        name, _, value = line.removeprefix("export ").strip().partition("=")
        env[name] = value
    raise AssertionError(f"local up ended before it was ready: {process.stderr.read() if process.stderr else ''}")


@pytest.fixture
def two_stacks(tmp_path: Path) -> Iterator[List[Dict[str, str]]]:
    processes = [_up(tmp_path / "source"), _up(tmp_path / "destination")]
    try:
        yield [_exports(process) for process in processes]
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            process.communicate(timeout=60)


def _cli(env: Dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    return subprocess.run(
        [sys.executable, "-m", "ims_python_helper", *argv],
        env={**base, **env, "IMS_JOB_ID": ""},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_image_moves_from_one_local_stack_to_another(two_stacks: List[Dict[str, str]], tmp_path: Path):
    import json

    source, destination = two_stacks
    assert source["IMS_URL"] != destination["IMS_URL"] and source["S3_ENDPOINT"] != destination["S3_ENDPOINT"]
    files = make_artifacts(tmp_path / "files", rootfs_size=2 * 1024 * 1024)
    published = _cli(source, "image", "upload_artifacts", "moved", *files.flags())
    assert published.returncode == 0, published.stderr
    image_id = json.loads(published.stdout)["ims_image_record"]["id"]

    assert _cli(source, "image", "export", image_id, str(tmp_path / "bundle")).returncode == 0
    imported = _cli(destination, "image", "import", str(tmp_path / "bundle"))
    assert imported.returncode == 0, imported.stderr
    copy = json.loads(imported.stdout)["ims_image_record"]["id"]

    for env, image in ((source, image_id), (destination, copy)):
        verified = _cli(env, "image", "verify", image)
        assert verified.returncode == 0, verified.stderr
        assert {a["md5"] for a in json.loads(verified.stdout)["artifacts"]} == {files.md5(kind) for kind in files.paths}
