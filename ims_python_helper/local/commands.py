"""The ``local`` CLI command: ``local up`` runs the stack, ``local demo`` publishes a sample image into it.

Both are CLI handlers ``(args, env) -> exit status`` that write only to
``env.stdout``/``env.stderr``, like every other command. Importing this module
is cheap: the stack (boto3, oauthlib, ...) is imported only when one of the
commands runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, TextIO

from ims_python_helper.local.client_token import fetch_token

if TYPE_CHECKING:
    from ims_python_helper.local.stack import LocalStack


class CommandEnvironment(Protocol):
    """What a command reads and writes: the CLI passes its own ``cli.Environment`` (local/ never imports the CLI)."""

    stdout: TextIO
    stderr: TextIO
    environ: Mapping[str, str]


#: Sizes of the random sample artifacts ``local demo`` publishes.
DEMO_ROOTFS_BYTES = 8 * 1024 * 1024
DEMO_KERNEL_BYTES = 2 * 1024 * 1024
DEMO_INITRD_BYTES = 4 * 1024 * 1024
DEMO_IMAGE_NAME = "local-demo-image"


#: Help line and description of each ``local`` command.
LOCAL_COMMAND_TEXTS = {
    "up": (
        "start the stack, print its settings as shell exports, run until interrupted",
        "Start the stack and print 'export NAME=value' lines, then 'ready'. Runs until SIGINT or SIGTERM.",
    ),
    "demo": (
        "start a throw-away stack and publish a sample image into it with the client",
        "Start a stack, publish a generated sample image with 'image upload_artifacts', "
        "read the image record back, and stop.",
    ),
    "job": (
        "run an image-build job and a customization job the way the job pods do, print a JSON summary",
        "Start a throw-away stack (or, with --attach, use the one the environment names), then run "
        "an image-build job (recipe upload, recipe fetch, recipe wait_for_repos, mksquashfs, image "
        "upload_artifacts, success) and a customization job on its image (image fetch, change a file, "
        "mksquashfs, image upload_artifacts, success), each step with the client's command line. Prints the "
        "jobs, the statuses their records showed in order, and the images made.",
    ),
}


def register(subparsers: Any) -> None:
    """Add the ``local`` command (with ``up``, ``demo`` and ``job``) to the CLI's sub-parsers."""
    local = subparsers.add_parser(
        "local",
        help="run a local IMS, token endpoint and S3 server for testing",
        description="Run a local IMS, OAuth2 token endpoint and S3 server on 127.0.0.1.",
    )
    commands = local.add_subparsers(dest="local_command", metavar="{up,demo,job}")
    commands.required = True

    for name, (help_text, description) in LOCAL_COMMAND_TEXTS.items():
        command = commands.add_parser(name, help=help_text, description=description)
        _add_stack_options(command)
        command.set_defaults(handler={"up": run_up, "demo": run_demo, "job": run_job}[name])
    job = commands.choices["job"]
    job.add_argument(
        "--attach",
        action="store_true",
        help="run against the stack the environment names (the exports of `local up`) instead of starting one",
    )


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep records, logs and credentials here (default: a temporary directory removed on exit)",
    )
    parser.add_argument(
        "--s3",
        choices=("moto", "ceph", "auto"),
        default="auto",
        help="S3 engine: moto, Ceph RGW, or auto (Ceph when installed, else moto; default: %(default)s)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=300,
        metavar="SECONDS",
        help="lifetime of issued access tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--memstore-mb",
        type=int,
        default=None,
        metavar="MB",
        help="Ceph only: keep object data in RAM, this many MiB (implies --ceph-store memstore; default: 2048, "
        "or IMS_LOCAL_CEPH_MEMSTORE_MB)",
    )
    parser.add_argument(
        "--ceph-store",
        choices=("bluestore", "memstore"),
        default=None,
        help="Ceph only: object store; bluestore keeps data on disk in a sparse file sized to half the free disk "
        "(IMS_LOCAL_CEPH_BLUESTORE_MB to choose), memstore in RAM (default: bluestore, or IMS_LOCAL_CEPH_STORE)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve IMS, the token endpoint and S3 over HTTPS with a test CA kept in the data directory "
        "(also exports CA_CERT and S3_SSL_VERIFY pointing at it)",
    )


def _make_stack(args: argparse.Namespace) -> LocalStack:
    from ims_python_helper.local.stack import LocalStack

    memstore_bytes = args.memstore_mb * 1024 * 1024 if args.memstore_mb else None
    return LocalStack(
        data_dir=args.data_dir,
        s3=args.s3,
        token_lifetime=args.token_lifetime,
        memstore_bytes=memstore_bytes,
        tls=bool(getattr(args, "tls", False)),
        ceph_store=getattr(args, "ceph_store", None),
    )


def _started_stack(args: argparse.Namespace, env: CommandEnvironment, command: str) -> Optional[LocalStack]:
    """A started stack, or None after saying on stderr why it could not start."""
    stack = _make_stack(args)
    try:
        stack.start()
    except Exception as error:
        _say(env.stderr, f"local {command}: cannot start the stack: {error}")
        return None
    return stack


def _say(stream: Any, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def run_up(args: argparse.Namespace, env: CommandEnvironment) -> int:
    """Start the stack, print its env as shell exports and ``ready``, and run until SIGINT/SIGTERM."""
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: Optional[FrameType]) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack = _started_stack(args, env, "up")
        if stack is None:
            return 1
        try:
            for name, value in stack.env().items():
                env.stdout.write(f"export {name}={shlex.quote(value)}\n")
            _say(env.stdout, "ready")
            engine = stack.s3.name if stack.s3 is not None else "?"
            _say(env.stderr, f"local up: running ({engine} S3, data in {stack.data_dir}); Ctrl-C stops")
            describe_store = getattr(stack.s3, "describe_store", None)
            if describe_store is not None:
                _say(env.stderr, f"local up: {describe_store()}")
            # wait() with a timeout so the signal handler gets to run promptly on every Python.
            while not stop_requested.wait(0.5):
                # An S3 engine that can no longer serve (a full Ceph cluster) says why; say it and stop.
                problem = getattr(stack.s3, "problem", None)
                if problem:
                    print(f"local up: {problem}", file=sys.stderr, flush=True)
                    return 1
        finally:
            stack.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(args: argparse.Namespace, env: CommandEnvironment) -> int:
    """Publish a generated image into a throw-away stack with the real client CLI; return its exit status."""
    import requests

    stack = _started_stack(args, env, "demo")
    if stack is None:
        return 1
    work_dir = Path(tempfile.mkdtemp(prefix="ims-local-demo-"))
    try:
        artifacts = _make_sample_artifacts(work_dir)
        child_env = dict(env.environ)
        child_env.update(stack.env())
        command = [
            sys.executable,
            "-m",
            "ims_python_helper",
            "image",
            "upload_artifacts",
            DEMO_IMAGE_NAME,
            stack.job_id,
            "-r",
            str(artifacts["rootfs"]),
            "-k",
            str(artifacts["kernel"]),
            "-i",
            str(artifacts["initrd"]),
        ]
        completed = subprocess.run(command, env=child_env, capture_output=True, text=True, check=False)
        for stream, output in ((env.stderr, completed.stderr), (env.stdout, completed.stdout)):
            if output:
                _say(stream, output.rstrip("\n"))
        image_id = _image_id_from_result(completed.stdout)
        if image_id is None:
            _say(env.stderr, f"local demo: the client exited with status {completed.returncode}")
            return completed.returncode or 1
        token = fetch_token(stack.env())
        response = requests.get(
            f"{stack.env()['IMS_URL']}/images/{image_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=stack.verify,
        )
        link = response.json().get("link") if response.status_code == 200 else None
        if link:
            _say(env.stderr, f"local demo: IMS image {image_id} is linked to {link.get('path')}")
        else:
            _say(env.stderr, f"local demo: IMS image {image_id} has no link (HTTP {response.status_code})")
        return completed.returncode
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        stack.stop()


def _make_sample_artifacts(work_dir: Path) -> Dict[str, Path]:
    """A rootfs (a real squashfs when ``mksquashfs`` exists), kernel and initrd of random bytes."""
    rootfs = work_dir / "rootfs.squashfs"
    if not _make_squashfs(work_dir, rootfs):
        _write_random(rootfs, DEMO_ROOTFS_BYTES)
    kernel, initrd = work_dir / "vmlinuz", work_dir / "initrd"
    _write_random(kernel, DEMO_KERNEL_BYTES)
    _write_random(initrd, DEMO_INITRD_BYTES)
    return {"rootfs": rootfs, "kernel": kernel, "initrd": initrd}


def _make_squashfs(work_dir: Path, target: Path) -> bool:
    mksquashfs = shutil.which("mksquashfs")
    if mksquashfs is None:
        return False
    tree = work_dir / "rootfs-tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text('NAME="ims-python-helper local demo"\n', encoding="utf-8")
    # Random data so the image is not trivially small after compression.
    _write_random(tree / "payload.bin", DEMO_ROOTFS_BYTES)
    result = subprocess.run(
        [mksquashfs, str(tree), str(target), "-noappend", "-no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    shutil.rmtree(tree, ignore_errors=True)
    return result.returncode == 0 and target.exists()


def _write_random(path: Path, size: int) -> None:
    chunk = 1024 * 1024
    with open(path, "wb") as handle:
        for offset in range(0, size, chunk):
            handle.write(os.urandom(min(chunk, size - offset)))


def _image_id_from_result(stdout: str) -> Optional[str]:
    try:
        result = json.loads(stdout)
    except ValueError:
        return None
    record = result.get("ims_image_record") if isinstance(result, dict) else None
    image_id = record.get("id") if isinstance(record, dict) else None
    return image_id if isinstance(image_id, str) else None


def run_job(args: argparse.Namespace, env: CommandEnvironment) -> int:
    """Run the two jobs on a throw-away stack (or the attached one); print the summary; 0 when both succeeded."""
    from ims_python_helper.local.job import REPO_PATH, JobFailed, LocalJob, check_attachable
    from ims_python_helper.local.repo_server import RepoServer

    if args.attach:
        problem = check_attachable(env.environ)
        if problem:
            _say(env.stderr, f"local job --attach: {problem}")
            return 2
        stack, environ = None, dict(env.environ)
    else:
        stack = _started_stack(args, env, "job")
        if stack is None:
            return 1
        environ = dict(env.environ, **stack.env())
    work_dir = Path(tempfile.mkdtemp(prefix="ims-local-job-"))
    job = LocalJob(environ, work_dir, env.stderr)
    try:
        with RepoServer() as repos:
            summary = job.run(repos.add(REPO_PATH, available_after=1))
    except JobFailed as failure:
        summary = dict(job.summary("failure"), error=str(failure))
        _say(env.stderr, f"local job: {failure}")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if stack is not None:
            stack.stop()
    env.stdout.write(json.dumps(summary, indent=4) + "\n")
    env.stdout.flush()
    return 0 if summary["result"] == "success" else 1


__all__: List[str] = ["register", "run_up", "run_demo", "run_job", "fetch_token"]
