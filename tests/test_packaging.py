"""The package installs where the platform pins it, and says one version everywhere (issue 18).

The image that runs the job pods installs this package with pip under a
constraints file saying ``ims-python-helper>=3.3,<3.4`` (the line is kept in
``constraints/platform.txt``). These tests build and install a copy of the
source tree with the real pip under that line, then ask the installed copy
for its version three ways: its packaging metadata, ``__version__`` and
``--version``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

from ims_python_helper import __version__

ROOT = Path(__file__).resolve().parent.parent
#: What setup.py needs to build the package (README.md is the long description).
SOURCE_FILES = ("setup.py", "pyproject.toml", "README.md", "requirements.txt")


def platform_constraint() -> str:
    """The line of constraints/platform.txt that pins this package."""
    for line in (ROOT / "constraints" / "platform.txt").read_text().splitlines():
        if line.strip().lower().startswith("ims-python-helper"):
            return line.strip()
    raise AssertionError("constraints/platform.txt has no ims-python-helper line")


def copy_of_the_source(destination: Path) -> Path:
    """The files a build reads, copied, so the build leaves nothing in the checkout."""
    destination.mkdir()
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, destination / name)
    shutil.copytree(
        ROOT / "ims_python_helper", destination / "ims_python_helper", ignore=shutil.ignore_patterns("__pycache__")
    )
    return destination


def test_the_platform_constraint_is_the_pods_pin():
    assert platform_constraint() == "ims-python-helper>=3.3,<3.4"


def test_pip_installs_the_package_under_the_platforms_constraint_with_one_version(tmp_path):
    source = copy_of_the_source(tmp_path / "source")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(platform_constraint() + "\n")
    target = tmp_path / "installed"

    # --no-deps: the dependencies are the platform's business; what is checked is whether pip accepts this package.
    install = ["install", "--quiet", "--no-deps", "--target", str(target), "-c", str(constraints), str(source)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *install],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    installed = [d.version for d in distributions(path=[str(target)]) if d.metadata["Name"] == "ims-python-helper"]
    assert installed == [__version__]

    env = {**os.environ, "PYTHONPATH": str(target)}
    asked = subprocess.run(
        [sys.executable, "-c", "import ims_python_helper as p; print(p.__file__, p.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    assert asked.stdout.split() == [str(target / "ims_python_helper" / "__init__.py"), __version__]
    flag = subprocess.run(
        [sys.executable, "-m", "ims_python_helper", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert (flag.returncode, flag.stdout.strip()) == (0, f"ims_python_helper {__version__}")
