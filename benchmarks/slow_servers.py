"""The 1 GiB figures of RELIABILITY.md's issue-14 table, measured once (the test suite runs smaller forms).

    python benchmarks/slow_servers.py [--s3 moto|ceph] [--size-mib 1024] [CASE...]

Cases (all by default), each against a fresh local stack behind the tests'
fault proxies (``tests/faults``), checked as the tests check (one linked image,
manifest md5s, stored bytes, no open multipart upload):

- ``outage``: S3 stopped for 10 s (``outage(10)``) once a quarter of the rootfs is sent;
- ``held``: answers of S3, IMS and the token endpoint held 5 to 30 s on random
  requests, tokens living 1 s (with the default ``-t``: moto copies a 1 GiB
  object in place byte by byte, more than 10 s on a loaded machine, so the
  metadata copy cannot meet a shorter timeout there; RGW copies by reference);
- ``sigterm``: S3 stops answering (``never_answer()``) once a quarter of the
  rootfs is sent, then SIGTERM: how long until the process is gone.

Prints one JSON line per case. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ims_python_helper.cli import Environment, main
from ims_python_helper.local.stack import LocalStack
from tests.faults.front import ProxiedStack, assert_published, publish_argv, start_cli, wait_for
from tests.faults.proxy import Fault
from tests.support import ImsApi, make_artifacts, s3_client_for

MIB = 1024 * 1024


def client_env(stack: LocalStack, front: ProxiedStack) -> Dict[str, str]:
    """The environment of a client run through the proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    env.update(stack.env(), **front.env(), IMS_PROGRESS="log")
    return env


def run_in_process(argv: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    """The CLI in this process; exit code, stderr and seconds taken."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = main(argv, Environment(out, err, env))
    return {"code": code, "took": round(time.monotonic() - started, 1), "stderr": err.getvalue()}


def case_outage(stack: LocalStack, front: ProxiedStack, argv: List[str], size: int) -> Dict[str, Any]:
    moment: Dict[str, float] = {}

    def restart() -> None:
        wait_for(lambda: front.s3.body_bytes(r"/rootfs\?") > size // 4, 600, "a quarter of the rootfs")
        moment["at"] = time.monotonic()
        front.s3.outage(10)

    threading.Thread(target=restart, daemon=True).start()
    run = run_in_process(argv, client_env(stack, front))
    run["publish_after_outage_began"] = round(time.monotonic() - moment["at"], 1)
    return run


def case_held(stack: LocalStack, front: ProxiedStack, argv: List[str], size: int) -> Dict[str, Any]:
    holds = [
        front.s3.add(Fault(action="hold", delay=5, delay_max=30, chance=0.3, times=6, seed=14)),
        front.ims.add(Fault(action="hold", delay=5, delay_max=30, chance=0.3, times=3, seed=14)),
        front.tokens.add(Fault(action="hold", delay=5, delay_max=30, chance=0.3, times=2, seed=14)),
    ]
    run = run_in_process(argv, client_env(stack, front))
    run["held_s"] = {p: [round(w, 1) for w in h.waits] for p, h in zip(("s3", "ims", "token"), holds)}
    run["tokens_fetched"] = front.tokens.count(method="POST")
    return run


def case_sigterm(stack: LocalStack, front: ProxiedStack, argv: List[str], size: int) -> Dict[str, Any]:
    process = start_cli(argv, client_env(stack, front), subprocess.PIPE, subprocess.PIPE)
    wait_for(lambda: front.s3.body_bytes(r"/rootfs\?") > size // 4, 600, "a quarter of the rootfs")
    hung = front.s3.never_answer()
    wait_for(lambda: hung.fired >= 1, 120, "a request to hang")
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    return {
        "code": process.returncode,
        "exit_after_sigterm": round(time.monotonic() - signalled, 1),
        "final_line_is_last": err.rstrip("\n").split("\n")[-1].startswith("ims_python_helper: error: interrupted"),
        "undo_runs": err.count("removing what this run created"),
        "error": json.loads(out)["error"],
        "stderr": err,
    }


CASES: Dict[str, Callable[..., Dict[str, Any]]] = {"outage": case_outage, "held": case_held, "sigterm": case_sigterm}


def measure(engine: str, name: str, size: int, directory: Path) -> Dict[str, Any]:
    """One case on a fresh stack (tokens living 1 s for ``held``); checks the published image on success."""
    lifetime = 1 if name == "held" else 300
    with LocalStack(
        data_dir=directory / f"stack-{name}", s3=engine, token_lifetime=lifetime, ceph_store="memstore"
    ) as stack:
        artifacts = make_artifacts(directory / f"artifacts-{name}", rootfs_size=MIB, seed=len(name))
        with open(artifacts.paths["rootfs"], "wb") as rootfs:  # random.randbytes cannot make 1 GiB at once
            for _ in range(size // (64 * MIB)):
                rootfs.write(os.urandom(64 * MIB))
        ims_api = ImsApi(stack)
        job = ims_api.new_job()
        argv = publish_argv(f"bench-{name}", job, artifacts, "--deadline", "1800")
        argv[argv.index("--part-size") + 1] = "8"
        front = ProxiedStack.start(stack)
        try:
            result = CASES[name](stack, front, argv, size)
        finally:
            front.stop()
        result.update(case=name, engine=engine, rootfs_mib=size // MIB)
        if result["code"] == 0:
            assert_published(ims_api, s3_client_for(stack.s3), f"bench-{name}", job, artifacts)
            result["verified"] = True
        stderr = result.pop("stderr")
        if result["code"] != 0 and name != "sigterm":
            result["stderr_tail"] = stderr[-2000:]
        return result


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--s3", default="moto", choices=("moto", "ceph"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; choose among {', '.join(CASES)}")
    with tempfile.TemporaryDirectory(prefix="slow-servers-") as tmp:
        for name in args.cases or list(CASES):
            print(json.dumps(measure(args.s3, name, args.size_mib * MIB, Path(tmp))), flush=True)


if __name__ == "__main__":
    main_()
