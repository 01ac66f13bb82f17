"""Bad input: a one-line error, the documented exit status, and nothing created in IMS or S3.

Two tables: ``CASES`` drives the real CLI (every option's wrong shapes, odd
file kinds, hostile names, and an IMS that answers garbage, served by
``tests.fake_ims``); ``LIBRARY_CASES`` calls ``ImsHelper`` directly. Each case
asserts the exit status (``exit_code`` of the library's exception), a single
error line, and that the local IMS and S3 hold nothing new afterwards.
"""

from __future__ import annotations

import functools
import gzip
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import pytest

from ims_python_helper import ImsHelper
from ims_python_helper.clients.oauth import create_oauth_session
from ims_python_helper.errors import ImsHelperError
from ims_python_helper.local.stack import LocalStack
from tests.fake_ims import MIB, Answer, FakeIms
from tests.support import Artifacts, s3_engines


@dataclass(frozen=True)
class Case:
    """One bad invocation of the CLI and what it must produce."""

    id: str
    argv: Callable[[Artifacts, Path], List[str]]
    code: int
    #: Text the error line must contain (every one of them, for a tuple).
    message: Union[str, Tuple[str, ...]]
    env: Dict[str, Optional[str]] = field(default_factory=dict)
    #: Routes of a fake IMS to point IMS_URL at (the token endpoint and S3 stay the stack's).
    ims: Optional[Dict[str, Answer]] = None
    #: The run talks to S3 before it fails (set here, or implied by a fake IMS that answers GET /images).
    reaches_s3: bool = False
    #: A ``--deadline`` ends the run (a server that is not there is retried until then): the outcome depends on
    #: elapsed real time, so the case runs with the ``wallclock`` tests, alone, not among the parallel workers.
    #: Under eight workers a 2 s deadline once passed while S3 was still being asked, before IMS was.
    wallclock: bool = False

    @property
    def on_every_engine(self) -> bool:
        """Cases that reach S3 run once per engine; the rest fail before S3 is asked anything."""
        return self.reaches_s3 or bool(self.ims and "GET /images" in self.ims)


def upload(*extra: str) -> Callable[[Artifacts, Path], List[str]]:
    return lambda a, tmp: ["image", "upload_artifacts", "bad-input", *extra]


def publish(*options: str, name: str = "bad") -> Callable[[Artifacts, Path], List[str]]:
    """``[options] image upload_artifacts NAME -r ROOTFS``."""
    return lambda a, tmp: [*options, "image", "upload_artifacts", name, *a.flags("rootfs")]


def publish_listing(name: str = "bad") -> Callable[[Artifacts, Path], List[str]]:
    """``image upload_artifacts NAME -r ROOTFS --skip-existing``: the publish that reads the image list."""
    return lambda a, tmp: ["image", "upload_artifacts", name, *a.flags("rootfs"), "--skip-existing"]


def publish_with(rootfs: Callable[[Path], str], name: str = "bad") -> Callable[[Artifacts, Path], List[str]]:
    """``image upload_artifacts NAME -r <odd file>``."""
    return lambda a, tmp: ["image", "upload_artifacts", name, "-r", rootfs(tmp)]


def set_status(*options: str, job: str = "", status: str = "error") -> Callable[[Artifacts, Path], List[str]]:
    return lambda a, tmp: [*options, "image", "set_job_status", job or str(uuid.uuid4()), status]


def recipe(file: Callable[[Path], str], *extra: str) -> Callable[[Artifacts, Path], List[str]]:
    return lambda a, tmp: ["recipe", "upload", "bad-recipe", file(tmp), "--distro", "sles15", *extra]


UNKNOWN_JOB = str(uuid.UUID(int=7))

CASES = [
    Case(
        "missing-rootfs-file",
        lambda a, tmp: ["image", "upload_artifacts", "bad", "-r", str(tmp / "nope")],
        1,
        "does not exist",
    ),
    Case(
        "directory-as-rootfs", lambda a, tmp: ["image", "upload_artifacts", "bad", "-r", str(tmp)], 1, "is a directory"
    ),
    Case(
        "fifo-as-kernel",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs"), "-k", _fifo(tmp)],
        1,
        "not a regular file",
    ),
    Case("no-rootfs", lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("kernel")], 2, "no rootfs"),
    Case(
        "rootfs-twice",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs", "rootfs")],
        2,
        "given 2 times",
    ),
    Case(
        "ims-url-twice",
        lambda a, tmp: [
            "--ims-url",
            "http://127.0.0.1:1",
            "--ims-url",
            "http://127.0.0.1:2",
            "image",
            "upload_artifacts",
            "bad",
            *a.flags("rootfs"),
        ],
        2,
        "more than once",
    ),
    Case(
        "job-id-not-uuid",
        lambda a, tmp: ["image", "upload_artifacts", "bad", "not-a-uuid", *a.flags("rootfs")],
        2,
        "not a UUID",
    ),
    Case(
        "ims-job-id-env-not-uuid",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs")],
        2,
        "not a UUID",
        env={"IMS_JOB_ID": "12345"},
    ),
    Case(
        "job-unknown-to-ims",
        lambda a, tmp: ["image", "upload_artifacts", "bad", UNKNOWN_JOB, *a.flags("rootfs")],
        1,
        (f"IMS GET /jobs/{UNKNOWN_JOB} failed with HTTP 404", f"IMS has no job {UNKNOWN_JOB}"),
    ),
    Case(
        "wrong-oauth-secret",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "refused the client credentials (invalid_client)",
        env={"OAUTH_CLIENT_SECRET": "wrong-secret-value"},
    ),
    Case(
        "no-oauth-secret",
        lambda a, tmp: ["--oauth-config-dir", str(tmp), "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "OAuth configuration incomplete: no client secret",
        env={"OAUTH_CLIENT_SECRET": None},
    ),
    Case(
        "unreachable-ims",
        lambda a, tmp: ["--deadline", "2", "image", "upload_artifacts", "bad", *a.flags("rootfs"), "--skip-existing"],
        1,
        # Retries until the deadline, so either "cannot reach IMS" or "deadline ... passed", with the reason.
        ("IMS GET /images at http://127.0.0.1:1", "(connection refused)"),
        env={"IMS_URL": "http://127.0.0.1:1", "IMS_JOB_ID": None},
        reaches_s3=True,
        wallclock=True,
    ),
    Case(
        "unreachable-token-url",
        lambda a, tmp: ["--deadline", "2", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "cannot reach the token endpoint",
        env={"OAUTH_CLIENT_ENDPOINT": "http://127.0.0.1:1/token"},
        wallclock=True,
    ),
    Case(
        "missing-bucket",
        lambda a, tmp: ["--s3-bucket", "no-such-bucket", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "bucket 'no-such-bucket' does not exist",
        reaches_s3=True,
    ),
    Case(
        "plain-http-to-remote-ims",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs")],
        1,
        "uses plain http",
        env={"IMS_URL": "http://ims.example.invalid/apis/ims"},
    ),
    Case(
        "bad-timeout",
        lambda a, tmp: ["-t", "soon", "image", "upload_artifacts", "bad", *a.flags("rootfs")],
        2,
        "expected a number of seconds",
    ),
    Case(
        "bad-arch",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs"), "--arch", "sparc"],
        1,
        ("IMS POST /images failed with HTTP 422", "'arch'", "sparc"),
        reaches_s3=True,
    ),
    Case("empty-name", lambda a, tmp: ["image", "upload_artifacts", "", *a.flags("rootfs")], 1, "image name is empty"),
    Case(
        "control-characters-in-name",
        lambda a, tmp: ["image", "upload_artifacts", "bad\x1b[2J", *a.flags("rootfs")],
        1,
        "control characters",
    ),
    # -- every option's wrong shapes ------------------------------------------------------
    Case("unknown-option", publish("--frobnicate"), 2, "unrecognized arguments: --frobnicate"),
    Case("bad-log-level", publish("-l", "LOUD"), 2, "--log-level: expected one of DEBUG"),
    Case("log-level-env", publish(), 2, "LOG_LEVEL: expected one of", env={"LOG_LEVEL": "chatty"}),
    Case("zero-deadline", publish("--deadline", "0"), 2, "--deadline: expected a positive number"),
    Case("infinite-timeout", publish("-t", "inf"), 2, "--timeout: expected a finite number of seconds"),
    Case(
        "nan-timeout-env", publish(), 2, "IMS_REQUEST_TIMEOUT: expected a positive", env={"IMS_REQUEST_TIMEOUT": "nan"}
    ),
    Case("part-size-too-small", publish("--part-size", "4"), 2, "S3 parts must be 5 to 5120 MiB"),
    Case("part-size-not-a-number", publish("--part-size", "16M"), 2, "expected a whole number"),
    Case("concurrency-zero", publish("--concurrency", "0"), 2, "expected a whole number of at least 1"),
    Case("concurrency-huge", publish("--concurrency", "100000"), 2, "expected at most 64 parallel requests"),
    Case("bad-checksum-mode", publish("--s3-checksum", "crc32"), 2, "--s3-checksum: expected one of"),
    Case("bad-addressing-style", publish("--s3-addressing-style", "dns"), 2, "--s3-addressing-style: expected one"),
    Case("bad-progress-mode", publish("--progress", "loud"), 2, "--progress: expected one of"),
    Case("sha256-env-not-boolean", publish(), 2, "IMS_SHA256: expected true or false", env={"IMS_SHA256": "maybe"}),
    Case("progress-given-twice", publish("--progress", "log", "--progress", "none"), 2, "more than once"),
    Case(
        "kernel-twice",
        lambda a, tmp: ["image", "upload_artifacts", "bad", *a.flags("rootfs", "kernel", "kernel")],
        2,
        "given 2 times",
    ),
    Case(
        "missing-cert-bundle",
        publish("--cert", "/nonexistent/ca.pem"),
        1,
        "CA bundle '/nonexistent/ca.pem' (from --cert) is not a readable file",
    ),
    Case(
        "missing-s3-ca-bundle",
        publish(),
        1,
        "S3 CA bundle '/nonexistent/s3-ca.pem' (from S3_SSL_VERIFY) is not a readable file",
        env={"S3_SSL_VERIFY": "/nonexistent/s3-ca.pem"},
    ),
    # The pods' secret sets S3_SSL_VALIDATE: a bad value there must name S3_SSL_VALIDATE, not S3_SSL_VERIFY.
    Case(
        "missing-s3-ca-bundle-from-s3-ssl-validate",
        publish(),
        1,
        "S3 CA bundle '/nonexistent/s3-ca.pem' (from S3_SSL_VALIDATE) is not a readable file",
        env={"S3_SSL_VERIFY": None, "S3_SSL_VALIDATE": "/nonexistent/s3-ca.pem"},
    ),
    Case(
        "missing-s3-ca-bundle-from-the-flag",
        publish("--s3-ssl-verify", "/nonexistent/s3-ca.pem"),
        1,
        "S3 CA bundle '/nonexistent/s3-ca.pem' (from --s3-ssl-verify) is not a readable file",
    ),
    Case(
        "missing-secret-file",
        publish("--oauth-client-secret-file", "/nonexistent/secret"),
        1,
        "cannot read --oauth-client-secret-file from '/nonexistent/secret': No such file",
    ),
    Case(
        "secret-file-is-a-directory",
        lambda a, tmp: ["--s3-secret-key-file", str(tmp), *publish()(a, tmp)],
        1,
        "Is a directory",
    ),
    Case("endless-secret-file", publish("--s3-access-key-file", "/dev/zero"), 1, "holds more than 65536 bytes"),
    Case(
        "secret-file-path-with-nul",
        publish("--oauth-client-secret-file", "secret\x00file"),
        1,
        "contains a NUL character",
    ),
    Case(
        "secret-file-env-missing",
        publish(),
        1,
        "cannot read S3_SECRET_KEY_FILE",
        env={"S3_SECRET_KEY": None, "S3_SECRET_KEY_FILE": "/nonexistent/key"},
    ),
    Case(
        "ims-url-not-http",
        publish(),
        1,
        "URL 'ftp://ims.example/apis/ims' is not an http(s) URL",
        env={"IMS_URL": "ftp://ims.example/apis/ims"},
    ),
    Case(
        "ims-url-unparsable",
        publish(),
        1,
        "URL 'http://[::1/apis/ims' is not a valid URL",
        env={"IMS_URL": "http://[::1/apis/ims"},
    ),
    Case(
        "token-url-without-host",
        publish(),
        1,
        "token URL 'https://' has no host",
        env={"OAUTH_CLIENT_ENDPOINT": "https://"},
    ),
    Case(
        "plain-http-to-remote-token-url",
        publish(),
        1,
        "uses plain http",
        env={"OAUTH_CLIENT_ENDPOINT": "http://keycloak.example.invalid/token"},
    ),
    Case(
        "s3-endpoint-not-a-url", publish("--s3-endpoint", "rgw vip"), 1, "S3 endpoint 'rgw vip' is not an http(s) URL"
    ),
    Case("s3-endpoint-bad-port", publish("--s3-endpoint", "http://127.0.0.1:99999"), 1, "is not a valid URL"),
    # -- odd file kinds -------------------------------------------------------------------
    Case("dev-null-as-rootfs", publish_with(lambda tmp: "/dev/null"), 1, "is not a regular file"),
    Case("socket-as-rootfs", publish_with(lambda tmp: _socket(tmp)), 1, "is not a regular file"),
    Case("dangling-symlink", publish_with(lambda tmp: _link(tmp, "dangling", tmp / "gone")), 1, "does not exist"),
    Case("symlink-loop", publish_with(lambda tmp: _loop(tmp)), 1, "Too many levels of symbolic links"),
    Case("symlink-to-directory", publish_with(lambda tmp: _link(tmp, "dir-link", tmp)), 1, "is a directory"),
    Case("empty-rootfs-path", publish_with(lambda tmp: ""), 1, "path is empty"),
    Case("nul-in-rootfs-path", publish_with(lambda tmp: str(tmp / "root\x00fs")), 1, "contains a NUL character"),
    Case(
        "recipe-not-gzip", recipe(lambda tmp: _write(tmp / "recipe.tar.gz", b"not gzip")), 1, "is not gzip-compressed"
    ),
    Case(
        "recipe-truncated",
        recipe(lambda tmp: _write(tmp / "cut.tar.gz", _tarball()[:-40])),
        1,
        "not a readable gzipped tar archive",
    ),
    Case(
        "recipe-template-without-equals",
        recipe(lambda tmp: _write(tmp / "r.tar.gz", _tarball()), "--template-dictionary", "novalue"),
        2,
        "is not KEY=VALUE",
    ),
    Case(
        "recipe-bad-distro",
        lambda a, tmp: ["recipe", "upload", "r", _write(tmp / "r.tar.gz", _tarball()), "--distro", "windows"],
        1,
        ("IMS POST /recipes failed with HTTP 422", "'linux_distribution'", "windows"),
        reaches_s3=True,
    ),
    Case(
        "job-status-unknown-job",
        set_status(job=UNKNOWN_JOB, status="finished"),
        1,
        (f"IMS PATCH /jobs/{UNKNOWN_JOB} failed with HTTP 404", f"IMS has no job {UNKNOWN_JOB}"),
    ),
    Case("job-status-id-not-uuid", set_status(job="../../jobs"), 2, "'../../jobs' is not a UUID"),
    # -- hostile names --------------------------------------------------------------------
    Case("name-too-long", publish(name="x" * 257), 1, "is 257 characters long; use at most 256"),
    Case("name-only-spaces", publish(name="   "), 1, "image name is empty"),
    Case("name-with-newline", publish(name="good\nINFO forged log line"), 1, "control characters"),
    Case("name-with-bidi-override", publish(name="image\u202egpj.exe"), 1, "control characters"),
    Case("name-with-nul", publish(name="image\x00"), 1, "control characters"),
    # -- IMS answering garbage ------------------------------------------------------------
    Case(
        "ims-html-login-page",
        publish_listing(),
        1,
        "IMS GET /images answered HTTP 200 with a body that is not JSON (text/html: <!DOCTYPE html>",
        ims={"GET /images": Answer.html(200, "Please log in")},
    ),
    Case(
        "ims-html-500-page",
        publish_listing(),
        1,
        "IMS GET /images failed with HTTP 500: <!DOCTYPE html>",
        ims={"GET /images": Answer.html(500, "Internal Server Error")},
    ),
    Case(
        "ims-truncated-json",
        publish_listing(),
        1,
        'with a body that is not JSON (application/json: [{"id": "0e6d',
        ims={"GET /images": Answer(200, b'[{"id": "0e6d')},
    ),
    Case(
        "ims-body-cut-off",
        publish_listing(),
        1,
        "the answer was cut off before its end",
        ims={"GET /images": Answer(200, b"[{}", declared_length=4096)},
    ),
    Case(
        "ims-not-utf8",
        publish_listing(),
        1,
        "with a body that is not JSON",
        ims={"GET /images": Answer(200, b"\xff\xfe\x00\x81garbage")},
    ),
    Case(
        "ims-object-for-list",
        publish_listing(),
        1,
        "IMS GET /images answered with a JSON object, expected an array",
        ims={"GET /images": Answer.json({"images": []})},
    ),
    Case(
        "ims-list-of-strings",
        publish_listing(),
        1,
        "IMS GET /images answered with a list holding a JSON string, expected objects",
        ims={"GET /images": Answer.json(["a", "b"])},
    ),
    Case(
        "ims-100mb-body",
        publish_listing(),
        1,
        "IMS GET /images answered with 104857600 bytes, more than the 67108864 allowed",
        ims={"GET /images": Answer(filler_bytes=100 * MIB)},
    ),
    Case(
        "ims-100mb-chunked-body",
        publish_listing(),
        1,
        "IMS GET /images answered with more than the 67108864 bytes allowed",
        ims={"GET /images": Answer(filler_bytes=100 * MIB, chunked=True)},
    ),
    Case(
        "ims-gzip-bomb",
        publish_listing(),
        1,
        "IMS GET /images answered with more than the 67108864 bytes allowed",
        ims={"GET /images": Answer(body=lambda _auth: _gzip_bomb(), headers=(("Content-Encoding", "gzip"),))},
    ),
    Case(
        "ims-job-patch-answers-null",
        set_status(),
        1,
        "answered with a JSON null, expected an object",
        ims={"PATCH /jobs/*": Answer.json(None)},
    ),
    Case(
        "ims-create-answers-no-id",
        publish(),
        1,
        "IMS created an image record without an id",
        ims={"GET /images": Answer.json([]), "POST /images": Answer.json({"name": "bad"}, 201)},
    ),
    Case(
        "ims-create-answers-path-as-id",
        publish(),
        1,
        "image id returned by IMS '../../escape' is not a UUID",
        ims={"GET /images": Answer.json([]), "POST /images": Answer.json({"id": "../../escape", "name": "bad"}, 201)},
    ),
    Case(
        "ims-job-is-an-array",
        lambda a, tmp: ["image", "upload_artifacts", "bad", str(uuid.UUID(int=9)), *a.flags("rootfs")],
        1,
        "answered with a JSON array, expected an object",
        ims={"GET /jobs/*": Answer.json([1, 2])},
    ),
    Case(
        "ims-job-patch-html",
        set_status(),
        1,
        "answered HTTP 200 with a body that is not JSON (text/html",
        ims={"PATCH /jobs/*": Answer.html(200, "gateway")},
    ),
]


def _fifo(tmp: Path) -> str:
    path = tmp / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return str(path)


def _socket(tmp: Path) -> str:
    path = tmp / "socket"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return str(path)


def _link(tmp: Path, name: str, target: Path) -> str:
    (tmp / name).symlink_to(target)
    return str(tmp / name)


def _loop(tmp: Path) -> str:
    (tmp / "loop-a").symlink_to(tmp / "loop-b")
    (tmp / "loop-b").symlink_to(tmp / "loop-a")
    return str(tmp / "loop-a")


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@functools.cache
def _tarball() -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = os.urandom(4096)
        info = tarfile.TarInfo("config.xml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@functools.cache
def _gzip_bomb() -> bytes:
    """About 100 KB that unpack to 80 MiB of JSON-looking bytes."""
    return gzip.compress(b"[" + b"0," * (40 * MIB) + b"0]", compresslevel=6)


def _one_error_line(stderr: str) -> str:
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, stderr
    return error_lines[0].split("error: ", 1)[1]


def _run_case(case: Case, run_cli: Any, artifacts: Artifacts, snapshot: Any, tmp_path: Path) -> None:
    before = snapshot()
    env = dict(case.env)

    with FakeIms(case.ims or {}) as fake:
        if case.ims is not None:
            env.setdefault("IMS_URL", fake.url)
            env.setdefault("IMS_JOB_ID", None)
        result = run_cli(*case.argv(artifacts, tmp_path), env=env)

    assert result.code == case.code, result.stderr
    message = _one_error_line(result.stderr)
    for expected in case.message if isinstance(case.message, tuple) else (case.message,):
        assert expected in message
    assert "Traceback" not in result.stderr and "unexpected" not in message
    assert result.json == {"result": "failure", "error": message}  # usage errors (exit 2) too
    assert snapshot() == before


def as_params(cases: List[Case]) -> List[Any]:
    """The cases as pytest parameters, those bound to elapsed time marked ``wallclock``."""
    return [pytest.param(c, id=c.id, marks=[pytest.mark.wallclock] if c.wallclock else []) for c in cases]


ENGINE_CASES = [c for c in CASES if c.on_every_engine]
LOCAL_CASES = [c for c in CASES if not c.on_every_engine]


def test_every_case_that_a_deadline_ends_runs_with_the_wallclock_tests(small_artifacts, tmp_path):
    # Exit status 2: the deadline is refused as a flag, before anything runs.
    ended_by_a_deadline = [c for c in CASES if c.code != 2 and "--deadline" in c.argv(small_artifacts, tmp_path)]
    assert ended_by_a_deadline, "the table has cases that wait for a deadline"
    assert [c.id for c in ended_by_a_deadline if not c.wallclock] == []


@pytest.mark.parametrize("case", as_params(ENGINE_CASES))
def test_bad_input_fails_cleanly_and_creates_nothing_on_every_engine(
    case: Case, run_cli, small_artifacts, snapshot, tmp_path
):
    _run_case(case, run_cli, small_artifacts, snapshot, tmp_path)


# Failing before S3 is asked anything, these do not depend on the engine: the first engine's stack is enough.
@pytest.mark.parametrize("stack", s3_engines()[:1], indirect=True)
@pytest.mark.parametrize("case", as_params(LOCAL_CASES))
def test_bad_input_fails_cleanly_and_creates_nothing(case: Case, run_cli, small_artifacts, snapshot, tmp_path):
    _run_case(case, run_cli, small_artifacts, snapshot, tmp_path)


def test_the_table_is_at_least_thirty_cases_long():
    assert len(CASES) + len(LIBRARY_CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# -- the library ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LibraryCase:
    """One bad call into ``ImsHelper`` (made by ``make`` with keyword overrides) and the error it must raise."""

    id: str
    call: Callable[[Callable[..., ImsHelper], Artifacts, Path], Any]
    code: int
    message: str


JOB = str(uuid.UUID(int=11))

LIBRARY_CASES = [
    LibraryCase(
        "name-not-a-string",
        lambda make, a, tmp: make().image_upload_artifacts(None, rootfs=[str(a.paths["rootfs"])]),
        1,
        "image name is empty",
    ),
    LibraryCase(
        "name-an-integer",
        lambda make, a, tmp: make().image_upload_artifacts(42, rootfs=[str(a.paths["rootfs"])]),
        1,
        "image name is empty",
    ),
    LibraryCase(
        "rootfs-two-paths",
        lambda make, a, tmp: make().image_upload_artifacts("bad", rootfs=[str(a.paths["rootfs"])] * 2),
        1,
        "was given 2 times; give exactly one file",
    ),
    LibraryCase(
        "rootfs-an-integer",
        lambda make, a, tmp: make().image_upload_artifacts("bad", rootfs=[7]),
        1,
        "must be a file path, not a int",
    ),
    LibraryCase(
        "job-id-with-slashes",
        lambda make, a, tmp: make().image_upload_artifacts("bad", "../jobs/x", rootfs=[str(a.paths["rootfs"])]),
        1,
        "is not a UUID",
    ),
    LibraryCase(
        "bad-arch",
        lambda make, a, tmp: make().image_upload_artifacts("bad", rootfs=[str(a.paths["rootfs"])], arch="sparc"),
        1,
        "IMS POST /images failed with HTTP 422: field 'arch' must be one of",
    ),
    LibraryCase(
        "job-status-unknown",
        lambda make, a, tmp: make().image_set_job_status(JOB, "finished"),
        1,
        f"IMS PATCH /jobs/{JOB} failed with HTTP 404: IMS has no job {JOB}",
    ),
    LibraryCase(
        "recipe-bad-distro",
        lambda make, a, tmp: make().recipe_upload("r", str(a.paths["rootfs"]), "windows"),
        1,
        "IMS POST /recipes failed with HTTP 422: field 'linux_distribution' must be one of",
    ),
    LibraryCase(
        "recipe-template-empty-key",
        lambda make, a, tmp: make().recipe_upload("r", _write(tmp / "t.tar.gz", _tarball()), "sles15", {"": "v"}),
        1,
        "template dictionary keys and values must be non-empty strings",
    ),
    LibraryCase(
        "s3-ca-bundle-missing",
        lambda make, a, tmp: make(s3_ssl_verify="/nonexistent/ca.pem"),
        1,
        "S3 CA bundle '/nonexistent/ca.pem' (from s3_ssl_verify) is not a readable file",
    ),
    LibraryCase(
        "s3-endpoint-unparsable", lambda make, a, tmp: make(s3_endpoint="http://[::1"), 1, "is not a valid URL"
    ),
    LibraryCase(
        "empty-record-name-too-long",
        lambda make, a, tmp: make().get_empty_image_record_for_name("n" * 300, False),
        1,
        "use at most 256",
    ),
]


@pytest.fixture
def make_helper(stack: LocalStack) -> Iterator[Callable[..., ImsHelper]]:
    """Build an ``ImsHelper`` on the stack the way services do, with keyword overrides."""
    env = stack.env()
    session = create_oauth_session(
        env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"], None, env["OAUTH_CLIENT_ENDPOINT"], timeout=10
    )

    def make(**overrides: Any) -> ImsHelper:
        arguments: Dict[str, Any] = {
            "ims_url": env["IMS_URL"],
            "session": session,
            "s3_endpoint": env["S3_ENDPOINT"],
            "s3_access_key": env["S3_ACCESS_KEY"],
            "s3_secret_key": env["S3_SECRET_KEY"],
            "s3_bucket": env["S3_BUCKET"],
            "s3_ssl_verify": "false",
        }
        arguments.update(overrides)
        return ImsHelper(**arguments)

    yield make
    session.close()


@pytest.mark.parametrize("stack", s3_engines()[:1], indirect=True)
@pytest.mark.parametrize("case", LIBRARY_CASES, ids=[c.id for c in LIBRARY_CASES])
def test_bad_library_call_raises_one_line_error_and_creates_nothing(
    case: LibraryCase, make_helper, small_artifacts, snapshot, tmp_path
):
    before = snapshot()

    with pytest.raises(ImsHelperError) as caught:
        case.call(make_helper, small_artifacts, tmp_path)

    assert caught.value.exit_code == case.code
    assert "\n" not in str(caught.value)
    assert case.message in str(caught.value)
    assert snapshot() == before
