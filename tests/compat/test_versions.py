"""The test matrix runs what it claims: the platform's pinned libraries, and each Python from 3.9 to 3.13.

noxfile.py tells each client cell's tests what they should find
(``IMS_TEST_CONSTRAINTS``, ``IMS_TEST_EXPECT_PYTHON``, ``IMS_TEST_EXPECT_PINS``);
outside a client cell that check is skipped and only the file checks run.
"""

from __future__ import annotations

import os
import random
import sys
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Dict, List

import pytest

from ims_python_helper.session import BoundedRetry, build_retry

ROOT = Path(__file__).resolve().parent.parent.parent

#: What the image that runs the job pods (Python 3.12) and the artifact loader (Python 3.11) pin (issue 12).
PLATFORM_PINS = {
    "boto3": "1.36.2",
    "botocore": "1.36.26",
    "s3transfer": "0.11.3",
    "urllib3": "2.4.0",
    "requests": "2.32.4",
    "oauthlib": "3.2.2",
    "requests-oauthlib": "2.0.0",
    "Jinja2": "3.1.6",
    "PyYAML": "6.0.2",
}


def pins_in(path: Path) -> Dict[str, str]:
    """``name==version`` lines of a constraints file, by lower-case name."""
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def test_the_platform_constraints_pin_the_platforms_versions() -> None:
    pinned = pins_in(ROOT / "constraints" / "platform.txt")

    assert {name: pinned.get(name.lower()) for name in PLATFORM_PINS} == PLATFORM_PINS


@pytest.mark.skipif(not os.environ.get("IMS_TEST_CONSTRAINTS"), reason="not a cell of the nox matrix")
def test_a_cell_runs_the_python_and_the_libraries_it_is_named_for() -> None:
    pinned = pins_in(ROOT / os.environ["IMS_TEST_CONSTRAINTS"])
    names = ["boto3", "botocore", "s3transfer", "urllib3", "requests", "oauthlib", "requests-oauthlib", "moto"]

    assert f"{sys.version_info[0]}.{sys.version_info[1]}" == os.environ["IMS_TEST_EXPECT_PYTHON"]
    assert {name: installed_version(name) for name in names} == {name: pinned[name] for name in names}
    if os.environ.get("IMS_TEST_EXPECT_PINS") == "platform":
        assert {name: installed_version(name) for name in PLATFORM_PINS} == PLATFORM_PINS


def test_every_constraints_file_pins_the_runtime_dependencies() -> None:
    files: List[Path] = [ROOT / "constraints.txt", *sorted((ROOT / "constraints").glob("*.txt"))]
    for path in files:
        pinned = pins_in(path)
        missing = [name for name in ("boto3", "botocore", "s3transfer", "urllib3", "requests") if name not in pinned]
        assert not missing, f"{path.name} leaves {missing} unpinned"


def test_retry_backoff_is_exponential_jittered_and_capped_on_the_installed_urllib3() -> None:
    # urllib3 1.26 (botocore's choice on Python 3.9) has no backoff_max/backoff_jitter arguments:
    # BoundedRetry applies both itself, so the waits are the same on 1.26 and 2.x.
    retry = build_retry(total=10)
    assert isinstance(retry, BoundedRetry)
    random.seed(12)
    waits = []
    for _ in range(8):
        retry = retry.increment(method="GET", url="/images")
        waits.append(retry.get_backoff_time())

    assert waits[0] == 0.0
    assert 1.0 <= waits[1] <= 1.5 and 2.0 <= waits[2] <= 2.5
    assert all(wait <= BoundedRetry.BACKOFF_CAP for wait in waits) and waits[-1] == BoundedRetry.BACKOFF_CAP
    assert len({round(wait - int(wait), 6) for wait in waits[1:5]}) > 1, "the backoff has no jitter"
