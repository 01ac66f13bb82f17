"""Arbitrary input to the argument parser, the settings, the manifest reader and the input checks.

Whatever comes in, the answer is a result or one of the documented errors
(``ImsHelperError`` and its subclasses): never a traceback, never a second
error line, never a run that reaches the network.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import string
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ims_python_helper.cli import Environment, build_parser, main
from ims_python_helper.clients.redact import MASK, SecretRegistry
from ims_python_helper.config import OPTIONS, resolve_settings
from ims_python_helper.errors import ConfigError, InputError, UsageError
from ims_python_helper.helper import MAX_NAME_LENGTH, check_name, check_uuid
from ims_python_helper.publish.manifest import ArtifactLink, Manifest, ManifestEntry, ManifestError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the command line -------------------------------------------------------------------

#: Every flag but the client id: without one the OAuth settings are never complete, so no run
#: the parser lets through can reach the network (it stops at "OAuth configuration incomplete").
FLAGS = sorted(
    {flag for option in OPTIONS for flag in option.flags if option.dest != "oauth_client_id"}
    | {option.file_flag for option in OPTIONS if option.file_flag}
    | {"-r", "-k", "-i", "-d", "-p", "--rootfs", "--arch", "--skip-existing", "--set-job-error", "--distro"}
    | {"--template-dictionary", "--require-dkms", "--help", "--version", "-h", "--"}
)
WORDS = ["image", "upload_artifacts", "set_job_status", "recipe", "upload", "error", "success", "sles15", "x86_64"]
VALUES = [
    "",
    "-",
    "0",
    "-1",
    "nan",
    "inf",
    "1e309",
    "DEBUG",
    "true",
    "off",
    "/dev/null",
    "/dev/zero",
    "/nonexistent/file",
    "/",
    "http://127.0.0.1:1",
    "https://[::1",
    "ftp://x",
    "a\x00b",
    "k=v",
    "=v",
    "0e6d4c2a-1111-2222-3333-444455556666",
    "{0e6d4c2a-1111-2222-3333-444455556666}",
    "x" * 300,
]
VALUE = st.one_of(st.sampled_from(VALUES), st.text(max_size=20))
JOB = "0e6d4c2a-1111-2222-3333-444455556666"
ARGUMENT = st.one_of(st.sampled_from(FLAGS), st.sampled_from(WORDS), VALUE)
#: Mostly flag-value pairs (so every option meets odd values often), with loose words in between.
OPTIONS_ARGV = st.lists(
    st.one_of(st.tuples(st.sampled_from(FLAGS), VALUE).map(list), ARGUMENT.map(lambda a: [a])), max_size=5
).map(lambda groups: [arg for group in groups for arg in group])
#: Often a well-formed command, so the fuzz gets past the parser into settings and input checks.
COMMAND = st.one_of(
    st.tuples(VALUE, VALUE).map(lambda v: ["image", "upload_artifacts", v[0], "-r", v[1]]),
    VALUE.map(lambda v: ["image", "set_job_status", v, "error"]),
    st.tuples(VALUE, VALUE).map(lambda v: ["recipe", "upload", v[0], v[1], "--distro", "sles15"]),
    st.lists(ARGUMENT, max_size=4),
)
ARGV = st.tuples(OPTIONS_ARGV, COMMAND, OPTIONS_ARGV).map(lambda parts: parts[0] + parts[1] + parts[2])
#: Setting names resolve_settings() takes: every option and every secret-file flag.
SETTING_NAMES = [o.dest for o in OPTIONS if o.dest != "oauth_client_id"] + [
    o.file_flag.lstrip("-").replace("-", "_") for o in OPTIONS if o.file_flag
]
#: Environment values the settings may also come from.
ENVIRON = st.dictionaries(
    st.sampled_from(
        [
            "LOG_LEVEL",
            "IMS_REQUEST_TIMEOUT",
            "IMS_DEADLINE",
            "IMS_URL",
            "CA_CERT",
            "S3_SSL_VERIFY",
            "IMS_PART_SIZE_MB",
            "IMS_UPLOAD_CONCURRENCY",
            "IMS_SHA256",
            "IMS_PROGRESS",
            "S3_CHECKSUM_MODE",
            "OAUTH_CLIENT_SECRET_FILE",
            "S3_SECRET_KEY_FILE",
            "IMS_JOB_ID",
        ]
    ),
    st.one_of(st.sampled_from(VALUES), st.text(alphabet=string.printable, max_size=12)),
    max_size=4,
)


def _run(argv: List[str], environ: Dict[str, str]) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    # --help and --version print through argparse to sys.stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv), Environment(stdout=out, stderr=err, environ=environ))
    return code, out.getvalue(), err.getvalue()


@settings(FAST, max_examples=400)
@given(argv=ARGV, environ=ENVIRON)
@example(argv=["--oauth-client-secret-file", "a\x00b", "image", "set_job_status", JOB, "error"], environ={})
@example(argv=["--s3-secret-key-file", "/dev/zero", "image", "set_job_status", JOB, "error"], environ={})
@example(argv=["image", "set_job_status", JOB, "error"], environ={"OAUTH_CLIENT_SECRET_FILE": "x\ny"})
@example(argv=["-t", "inf", "--deadline", "1e309", "image", "set_job_status", JOB, "error"], environ={})
@example(argv=["--concurrency", "99999999999", "image", "upload_artifacts", "n", "-r", "/dev/null"], environ={})
def test_any_command_line_ends_in_a_result_or_one_documented_error_line(argv: List[str], environ: Dict[str, str]):
    # "local" starts the embedded stack and runs until interrupted: not a parser question.
    assume("local" not in argv)

    code, stdout, stderr = _run(argv, {"OAUTH_CONFIG_DIR": "/nonexistent", **environ})

    assert code in (0, 1, 2)
    assert "Traceback" not in stderr
    assert "unexpected" not in stderr, stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("ims_python_helper: error: ")]
    if code == 0:
        assert not error_lines
    else:
        assert len(error_lines) == 1, stderr
        assert json.loads(stdout) == {"result": "failure", "error": error_lines[0].split("error: ", 1)[1]}


@FAST
@given(argv=ARGV)
def test_the_parser_returns_a_namespace_or_raises_usage_error(argv: List[str]):
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except UsageError as err:
        assert "\n" not in str(err)
    except SystemExit as stop:  # only --help and --version leave this way, and with success
        assert stop.code in (0, None)


@FAST
@given(
    flags=st.dictionaries(st.sampled_from(SETTING_NAMES), VALUE, max_size=5),
    environ=ENVIRON,
)
def test_settings_from_any_flags_and_environment_resolve_or_raise_a_usage_or_config_error(
    flags: Dict[str, str], environ: Dict[str, str]
):
    try:
        resolved = resolve_settings(flags, environ)
    except (UsageError, ConfigError) as err:
        assert "\n" not in str(err)
        return
    assert resolved.timeout > 0 and resolved.deadline > 0
    assert 1 <= resolved.concurrency <= 64 and 5 <= resolved.part_size_mb <= 5120


# -- the manifest reader ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
PATH = st.one_of(
    st.sampled_from(["s3://[x/y", "s3://b]/k", "s3://boot-images/id/rootfs", "s3://", "/k", "", "s3://b/../../k"]),
    st.text(max_size=30),
)
#: Mostly well-formed, so the fuzz reaches past the first check; sometimes anything at all.
LINK = st.one_of(
    st.fixed_dictionaries({"path": PATH, "type": st.just("s3")}, optional={"etag": JSON}),
    st.fixed_dictionaries({}, optional={"path": st.one_of(PATH, JSON), "type": JSON, "etag": JSON}),
)
ENTRY = st.one_of(
    st.fixed_dictionaries(
        {"link": LINK},
        optional={"type": st.one_of(st.just("application/vnd.cray.image.rootfs.squashfs"), JSON), "md5": JSON},
    ),
    JSON,
)
NEAR_MANIFEST = st.fixed_dictionaries(
    {"version": st.one_of(st.just("1.0"), JSON), "artifacts": st.one_of(st.lists(ENTRY, max_size=5), JSON)},
    optional={"created": JSON},
)


def _read(data: bytes) -> None:
    try:
        manifest = Manifest.parse(data)
    except ManifestError as err:
        assert "\n" not in str(err)
        return
    # Whatever parsed can be used the way the workflows use it.
    manifest.md5_by_type()
    manifest.rootfs()
    for entry in manifest.artifacts:
        assert isinstance(entry.link.bucket, str) and isinstance(entry.link.key, str)
    Manifest.parse(manifest.to_json())


@FAST
@given(data=st.binary(max_size=200))
def test_manifest_reader_takes_any_bytes(data: bytes):
    _read(data)


@FAST
@given(document=st.one_of(NEAR_MANIFEST, JSON))
def test_manifest_reader_takes_any_json_shaped_like_a_manifest(document: Any):
    _read(json.dumps(document).encode())


def test_manifest_reader_refuses_json_nested_too_deep_for_the_parser():
    # A valid manifest but for one member nested deeper than the parser goes: read, it would be accepted.
    deep = b"[" * 100_000 + b"]" * 100_000
    data = b'{"version": "1.0", "created": "", "artifacts": [], "deep": ' + deep + b"}"

    with pytest.raises(ManifestError) as caught:
        Manifest.parse(data)

    assert str(caught.value) == "manifest is not valid JSON"


@FAST
@given(
    entries=st.lists(
        st.tuples(st.text(max_size=12), st.text(max_size=20), st.text(max_size=8), st.text(max_size=32)),
        max_size=6,
    )
)
def test_a_written_manifest_reads_back_the_same(entries: list):
    manifest = Manifest(
        artifacts=[
            ManifestEntry(ArtifactLink.s3("boot-images", key, etag), kind, md5) for key, kind, etag, md5 in entries
        ]
    )

    again = Manifest.parse(manifest.to_json())

    assert again.to_dict() == manifest.to_dict()


# -- ids, names and keys --------------------------------------------------------------------

UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@FAST
@given(value=st.one_of(st.text(max_size=60), st.uuids().map(str), st.uuids().map(lambda u: "{" + str(u).upper() + "}")))
def test_an_id_is_a_canonical_uuid_or_refused(value: str):
    # S3 keys are IMAGE_ID/<fixed key>: a checked id can hold no "/", ".." or anything else.
    try:
        checked = check_uuid(value)
    except InputError as err:
        assert "\n" not in str(err)
        return
    assert UUID_TEXT.match(checked)


@FAST
@given(name=st.one_of(st.text(max_size=300), st.none(), st.integers()))
def test_a_name_is_printable_bounded_text_or_refused(name: Any):
    try:
        checked = check_name(name)
    except InputError as err:
        assert "\n" not in str(err) and len(str(err)) < 2 * MAX_NAME_LENGTH
        return
    assert checked.isprintable() and 0 < len(checked) <= MAX_NAME_LENGTH


@FAST
@given(
    secret=st.text(min_size=4, max_size=40).filter(lambda s: "<" not in s and ">" not in s and s.strip()),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_a_registered_secret_never_survives_redaction(secret: str, before: str, after: str):
    registry = SecretRegistry()
    registry.add(secret)

    text = registry.redact(before + secret + after)

    assert secret not in text or secret in MASK
