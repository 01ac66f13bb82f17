"""Helpers the test modules share: CLI results, sample artifacts, independent views of IMS and S3.

Fixtures live in the ``conftest.py`` files and are found by pytest; the
classes and functions they hand out live here, so test modules import them
from one ordinary module rather than from a conftest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest
import requests

from ims_python_helper.local.s3backend import S3Backend
from ims_python_helper.local.s3client import backend_s3_client
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.publish.claims import CLAIM_PREFIX

ROOT = Path(__file__).resolve().parent.parent
#: Buckets the local S3 engines create (and the snapshots look into).
BUCKETS = ("boot-images", "ims")


# -- which S3 engines to run on ---------------------------------------------------------------


def ceph_available() -> bool:
    """True when the Ceph launcher is present and its daemons are installed."""
    try:
        from ims_python_helper.local.ceph import ceph_available as programs_installed
    except ImportError:
        return False
    return bool(programs_installed())


def s3_engines() -> List[Any]:
    """moto always; Ceph RGW where its daemons are installed (else a visible skip). ``IMS_TEST_S3`` narrows it."""
    wanted = os.environ.get("IMS_TEST_S3", "moto,ceph").split(",")
    params: List[Any] = []
    if "moto" in wanted:
        params.append(pytest.param("moto", id="moto"))
    if "ceph" in wanted:
        params.append(
            pytest.param(
                "ceph",
                id="ceph",
                marks=pytest.mark.skipif(
                    not ceph_available(),
                    reason="Ceph RGW not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)",
                ),
            )
        )
    return params


def s3_client_for(backend: S3Backend) -> Any:
    """A boto3 client on a local S3 engine with nothing of the client's code in between."""
    return backend_s3_client(backend)


# -- the CLI -----------------------------------------------------------------------------------


@dataclass
class CliResult:
    """What one CLI run printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


CliRunner = Callable[..., CliResult]


def with_overrides(base: Dict[str, str], overrides: Optional[Dict[str, Optional[str]]]) -> Dict[str, str]:
    """``base`` with ``overrides`` applied; a None value removes the variable."""
    environ = dict(base)
    for key, value in (overrides or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


# -- sample artifacts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifacts:
    """Sample artifact files and their md5s."""

    paths: Dict[str, Path]

    def md5(self, name: str) -> str:
        """Hex md5 of one file."""
        return hashlib.md5(self.paths[name].read_bytes()).hexdigest()

    def flags(self, *names: str) -> List[str]:
        """The CLI flags that pass these files (all of them when no name is given)."""
        flag = {"rootfs": "-r", "kernel": "-k", "initrd": "-i", "debug": "-d", "boot_parameters": "-p"}
        result: List[str] = []
        for name in names or tuple(self.paths):
            result += [flag[name], str(self.paths[name])]
        return result


def make_artifacts(directory: Path, rootfs_size: int = 24 * 1024 * 1024, seed: int = 0) -> Artifacts:
    """Random artifact files (the default rootfs large enough to go up in several parts)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"rootfs": rootfs_size, "kernel": 1 << 20, "initrd": 3 << 20, "debug": 1 << 19}
    paths: Dict[str, Path] = {}
    for name, size in sizes.items():
        path = directory / name
        path.write_bytes(rng.randbytes(size))
        paths[name] = path
    params = directory / "boot_parameters"
    params.write_text(f"console=ttyS0,115200 seed={seed}\n")
    paths["boot_parameters"] = params
    return Artifacts(paths)


@dataclass(frozen=True)
class ImageFiles:
    """Small artifact files, each given as a one-element list like the CLI's ``action='append'``."""

    rootfs: List[str]
    kernel: List[str]
    initrd: List[str]
    debug: List[str]
    boot_parameters: List[str]

    def path(self, kind: str) -> str:
        """The one path given for ``kind``."""
        value: List[str] = getattr(self, kind)
        return value[0]


# -- independent views of what a run left --------------------------------------------------------


class ImsApi:
    """Plain HTTP calls to the local IMS, for checking records independently of the client."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.ims is not None
        self.base = stack.ims.url
        self.session = requests.Session()
        if stack.ca_path is not None:  # an HTTPS stack: trust its CA (REQUESTS_CA_BUNDLE would win over verify)
            self.session.verify = str(stack.ca_path)
            self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {stack.issue_token(3600)}"

    def get(self, path: str) -> Any:
        """GET a path and return the JSON reply (failing on any error status)."""
        response = self.session.get(self.base + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Dict[str, Any]) -> Any:
        """POST a JSON body and return the JSON reply (failing on any error status)."""
        response = self.session.post(self.base + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def images_named(self, name: str) -> List[Dict[str, Any]]:
        """Every image record called ``name``."""
        return [image for image in self.get("/images") if image.get("name") == name]

    def new_job(self) -> str:
        """Create a job record and return its id."""
        job = self.post(
            "/jobs",
            {
                "job_type": "create",
                "artifact_id": str(uuid.uuid4()),
                "public_key_id": str(uuid.uuid4()),
                "image_root_archive_name": "test",
            },
        )
        return str(job["id"])


@dataclass(frozen=True)
class Snapshot:
    """Everything a run could leave behind."""

    images: Set[str]
    recipes: Set[str]
    objects: Set[str]
    uploads: Set[str]


def take_snapshot(ims_api: ImsApi, s3: Any) -> Snapshot:
    """IMS records, S3 objects and unfinished multipart uploads as they are now."""
    objects: Set[str] = set()
    uploads: Set[str] = set()
    for bucket in BUCKETS:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects.update(f"{bucket}/{item['Key']}" for item in page.get("Contents", []))
        listing = s3.list_multipart_uploads(Bucket=bucket)
        uploads.update(f"{bucket}/{u['Key']}" for u in listing.get("Uploads", []))
    return Snapshot(
        images={i["id"] for i in ims_api.get("/images")},
        recipes={r["id"] for r in ims_api.get("/recipes")},
        objects=objects,
        uploads=uploads,
    )


# -- the local servers' own tests ---------------------------------------------------------------

#: The OAuth2 client the local token servers of tests/local know.
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret-value"


@dataclass(frozen=True)
class Client:
    """The OAuth2 client the test token servers know."""

    id: str = CLIENT_ID
    secret: str = CLIENT_SECRET

    @property
    def auth(self) -> Tuple[str, str]:
        """(id, secret) for HTTP Basic."""
        return (self.id, self.secret)


class ImsClient:
    """Just enough of a client to talk to the local IMS in tests: base URL plus a bearer token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        """Send ``body`` as JSON (when given) and return the response."""
        if body is not None:
            kwargs["json"] = body
        return self.session.request(method, self.base_url + path, timeout=10, **kwargs)

    def create(self, collection: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST a record and return it, failing the test on any status but 201."""
        response = self.request("POST", f"/{collection}", body)
        assert response.status_code == 201, response.text
        record: Dict[str, Any] = response.json()
        return record


#: ``store_manifest(image_id, ...)``: uploads artifacts and a manifest, returns the manifest link.
StoreManifest = Callable[..., Dict[str, str]]


def assert_problem(response: requests.Response, status: int, detail_fragment: str = "") -> Dict[str, Any]:
    """Check an RFC 7807 reply and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem: Dict[str, Any] = response.json()
    assert problem["type"] == "about:blank"
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert detail_fragment in problem["detail"]
    return problem


# -- job-pod toolkit inputs ------------------------------------------------------------------


def make_recipe_tgz(path: Path, files: Dict[str, str], extra: Optional[List[tarfile.TarInfo]] = None) -> Path:
    """A gzipped recipe tarball holding ``files`` (name -> text) and any extra raw members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def kiwi_config(*repo_paths: str) -> str:
    """A small kiwi config.xml naming ``repo_paths`` as repositories."""
    repos = "\n".join(f'  <repository type="rpm-md"><source path="{p}"/></repository>' for p in repo_paths)
    return f'<?xml version="1.0"?>\n<image schemaversion="7.4" name="{{{{ image_name }}}}">\n{repos}\n</image>\n'


def make_squashfs(tmp_path: Path, motd: str = "built by the test\n") -> Path:
    """A small squashfs image holding ``etc/motd``."""
    root = tmp_path / "rootfs-src"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text(motd)
    image = tmp_path / "rootfs.sqsh"
    subprocess.run(["mksquashfs", str(root), str(image), "-noappend", "-quiet"], check=True, capture_output=True)
    return image


def volume_with_stale_signal_files(directory: Path) -> Path:
    """A job pod's volume left with the signal files of an earlier attempt (a fetch must remove them)."""
    directory.mkdir(parents=True)
    for name in ("ready", "complete", "exiting"):
        (directory / name).write_text("")
    return directory


def make_recipe(path: Path, text: bytes = b"<image/>\n") -> str:
    """A small gzipped tar recipe holding ``config.xml`` with ``text``; returns its path."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("config.xml")
        info.size = len(text)
        archive.addfile(info, io.BytesIO(text))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return str(path)


def artifact_bytes_sent(proxy: Any) -> int:
    """Body bytes a client uploaded to S3 through ``proxy``, leaving out the run claims' small JSON objects."""
    return sum(e.body_bytes for e in proxy.writes() if CLAIM_PREFIX not in e.path)


#: The IMS generations end-to-end tests can run against: today's, and IMS before 3.16 (no image metadata).
IMS_MODES = ("current", "legacy")


def stack_in_mode(mode: str, base: LocalStack, legacy_stacks: Callable[[LocalStack], LocalStack]) -> LocalStack:
    """For a module's ``stack`` fixture over ``IMS_MODES``: the base stack, or its legacy twin (same S3)."""
    return legacy_stacks(base) if mode == "legacy" else base


def skip_module_unless_ceph_runs() -> None:
    """At a Ceph test module's top: skip it (visibly) when IMS_TEST_S3 leaves Ceph out or Ceph is missing.

    With IMS_REQUIRE_CEPH=1 a missing Ceph fails instead of skipping.
    """
    from ims_python_helper.local.ceph import INSTALL_COMMAND, ceph_available

    if "ceph" not in os.environ.get("IMS_TEST_S3", "moto,ceph").split(","):
        pytest.skip("IMS_TEST_S3 leaves out ceph", allow_module_level=True)
    if not ceph_available():
        if os.environ.get("IMS_REQUIRE_CEPH") == "1":
            pytest.fail(f"IMS_REQUIRE_CEPH=1 but the Ceph programs are missing; {INSTALL_COMMAND}", pytrace=False)
        pytest.skip(f"Ceph programs not installed ({INSTALL_COMMAND})", allow_module_level=True)


@dataclass(frozen=True)
class ChildRun:
    """One CLI run as a child process: its exit status, bytes it read, and its peak memory."""

    code: int
    rchar: int
    peak_rss: int
    output: str


def run_cli_measured(argv: List[str], env: Dict[str, str], log: Path) -> ChildRun:
    """Run ``python -m ims_python_helper ARGV`` and read its /proc counters before it is reaped.

    ``rchar`` counts every byte the process read through read(2) (files, not
    sockets); ``VmHWM`` is its peak resident memory since exec, sampled while it runs.
    """
    peak_kib = 0
    with open(log, "w+") as output:
        child = subprocess.Popen(
            [sys.executable, "-m", "ims_python_helper", *argv], env=env, cwd=ROOT, stdout=output, stderr=output
        )
        while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            # A process that has just exited has no VmHWM any more; its peak was seen before.
            high_water = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{child.pid}/status").read_text())
            if high_water:
                peak_kib = max(peak_kib, int(high_water.group(1)))
            time.sleep(0.01)
        io = Path(f"/proc/{child.pid}/io").read_text()
        rchar = int(re.search(r"rchar:\s+(\d+)", io).group(1))  # type: ignore[union-attr]
        code = child.wait()
        output.seek(0)
        return ChildRun(code, rchar, peak_kib * 1024, output.read())
