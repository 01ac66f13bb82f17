"""Run the real CLI in this process and report how many bytes it read from files.

    python tests/read_probe.py REPORT_PATH image upload_artifacts NAME -r FILE ...

Linux counts every byte a process passes through read(2) and friends in
``rchar`` of ``/proc/self/io``; socket receives are not counted there. The
probe imports the client first, takes ``rchar``, runs ``main(argv)``, takes
``rchar`` again and writes ``{"code": ..., "rchar": ...}`` as JSON to
REPORT_PATH. Reads that are not the artifacts (lazily loaded data files of
botocore, for instance) are the same in every run, so a test compares two runs
that differ only in the artifact files to learn how often each file was read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Importable from a checkout that is not installed (the tests run from one).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rchar() -> int:
    """Bytes this process has read so far (Linux ``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "rchar":
            return int(value)
    raise RuntimeError("/proc/self/io has no rchar line")


def probe(report: str, argv: list) -> int:
    """Run the CLI on ``argv`` and write its exit status and bytes read to ``report``."""
    import boto3  # noqa: F401 - imported before the measurement starts, like everything the CLI imports
    import requests_oauthlib  # noqa: F401

    from ims_python_helper.cli import main

    before = rchar()
    code = main(argv)
    read = rchar() - before
    Path(report).write_text(json.dumps({"code": code, "rchar": read}))
    return code


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1], sys.argv[2:]))
