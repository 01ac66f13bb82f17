"""Every byte is checked by the server, and every stored object end to end by the client.

Bodies are not SHA-256-signed; each carries a signed Content-MD5 instead, so a
byte changed on the way is refused by the server (``BadDigest``). After the
upload the client compares the object's ETag with the one it computed from
the parts it sent, so an object that is not what was sent fails the run even
when the server accepted it. Copies past the single-copy limit and files past
the part-count limit are covered with lowered thresholds. All of it over real
sockets, through the fault proxy (``tests/faults/proxy.py``) where bytes or
answers are altered on the way.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from ims_python_helper.clients.storage import S3Settings, S3Storage
from ims_python_helper.errors import StorageError, VerificationError
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.publish.transfer import ArtifactUpload, ArtifactUploader, TransferOptions
from tests.faults.front import ProxiedStack, publish_argv
from tests.faults.proxy import Fault, FaultProxy
from tests.support import Artifacts, CliResult, Snapshot

MIB = 1024 * 1024
GIB = 1024 * MIB
BUCKET = "boot-images"
ROOTFS_TYPE = "application/vnd.cray.image.rootfs.squashfs"
INVALID_COPY = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidRequest</Code>"
    b"<Message>The specified copy source is larger than the maximum allowable size for a copy source: 5368709120"
    b"</Message></Error>"
)


def storage_for(stack: LocalStack, endpoint: str) -> S3Storage:
    """The client's own S3 storage, through ``endpoint`` (a proxy in front of the stack's S3)."""
    assert stack.s3 is not None
    settings = S3Settings(endpoint, BUCKET, stack.s3.access_key, stack.s3.secret_key, max_attempts=2)
    return S3Storage(settings)


def upload_of(path: Path, key: str) -> ArtifactUpload:
    return ArtifactUpload("rootfs", str(path), key, ROOTFS_TYPE, path.stat().st_size)


def engine_checks_content_md5(stack: LocalStack) -> bool:
    """Ceph RGW (like AWS) refuses a body that does not match its Content-MD5; moto 5 does not check it."""
    assert stack.s3 is not None
    return stack.s3.name == "ceph"


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- the server checks every byte ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(r"/rootfs\?.*\bpartNumber=2\b", id="part"),
        pytest.param(r"/kernel$", id="single-put"),
        pytest.param(r"/manifest\.json$", id="manifest"),
    ],
)
def test_a_body_changed_on_the_way_is_refused_by_the_server_and_the_run_leaves_nothing(
    path: str,
    stack: LocalStack,
    publish: Callable[..., CliResult],
    proxied: ProxiedStack,
    two_part_artifacts: Artifacts,
    ims_api: Any,
    snapshot: Callable[[], Snapshot],
) -> None:
    job = ims_api.new_job()
    before = snapshot()
    fault = proxied.s3.add(Fault(action="flip_byte", method="PUT", path=path))

    result = publish(*publish_argv("flipped", job, two_part_artifacts))

    assert fault.fired >= 1
    assert result.code == 1, result.stderr
    if engine_checks_content_md5(stack):
        assert "BadDigest" in result.json["error"], result.json
    else:  # moto stores what it got; the client's own check of the stored object finds it
        assert re.search(r"s3://boot-images/\S+ (does not match|was stored with) .*ETag", result.json["error"]), (
            result.json
        )
    assert snapshot() == before


# -- the client checks every object -------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        pytest.param("POST", r"/rootfs\?uploadId=", id="complete-answer"),
        pytest.param("HEAD", r"/rootfs$", id="head"),
    ],
)
def test_an_object_whose_etag_is_not_the_one_of_the_parts_sent_fails_verification_and_is_undone(
    method: str,
    path: str,
    stack: LocalStack,
    publish: Callable[..., CliResult],
    proxied: ProxiedStack,
    two_part_artifacts: Artifacts,
    ims_api: Any,
    snapshot: Callable[[], Snapshot],
) -> None:
    if method == "POST" and engine_checks_content_md5(stack):
        pytest.skip("Ceph RGW 16.2 answers CompleteMultipartUpload with an empty ETag: the HEAD case covers it")
    job = ims_api.new_job()
    before = snapshot()
    # The server stored what it was sent, but its answer names another ETag (of the same form).
    fault = proxied.s3.add(
        Fault(action="rewrite", method=method, path=path, pattern=rb"[0-9a-f]{32}", replacement=b"0" * 32)
    )

    result = publish(*publish_argv("altered", job, two_part_artifacts))

    assert fault.fired >= 1
    assert result.code == 1, result.stderr
    error = result.json["error"]
    assert re.search(r"s3://boot-images/[-0-9a-f]+/rootfs does not match .*ETag 0{32}", error), error
    assert snapshot() == before


def test_the_expected_etag_is_what_the_server_computes(
    stack: LocalStack, s3_proxy: FaultProxy, s3: Any, tmp_path: Path
) -> None:
    path = tmp_path / "rootfs"
    path.write_bytes(os.urandom(12 * MIB + 12345))
    key = f"integrity-test/{uuid.uuid4()}/rootfs"
    uploader = ArtifactUploader(storage_for(stack, s3_proxy.url), TransferOptions(part_size=5 * MIB))

    [stored] = uploader.upload_all([upload_of(path, key)])

    data = path.read_bytes()
    parts = [hashlib.md5(data[i : i + 5 * MIB]).digest() for i in range(0, len(data), 5 * MIB)]
    multipart_etag = f"{hashlib.md5(b''.join(parts)).hexdigest()}-3"
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert stored.etag == head["ETag"].strip('"') in (multipart_etag, file_md5(path))
    assert head["Metadata"]["md5sum"] == file_md5(path)
    # Every part went up once, unsigned, with the signed Content-MD5 of its bytes.
    sent = [e for e in s3_proxy.exchanges if e.method == "PUT" and "partNumber=" in e.path]
    assert sorted(e.headers["content-md5"] for e in sent) == sorted(base64.b64encode(p).decode() for p in parts)
    for exchange in sent:
        assert exchange.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert "content-md5" in exchange.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]


# -- past the single-copy and the part-count limits ---------------------------------------


def test_a_refused_single_copy_above_the_limit_is_done_part_by_part(
    stack: LocalStack, s3_proxy: FaultProxy, s3: Any, tmp_path: Path
) -> None:
    path = tmp_path / "rootfs"
    path.write_bytes(os.urandom(16 * MIB + 777))
    key = f"integrity-test/{uuid.uuid4()}/rootfs"
    storage = storage_for(stack, s3_proxy.url)
    # As AWS does above 5 GiB: the copy in place that adds md5sum is refused once.
    storage.max_single_copy, storage.copy_part_size = 8 * MIB, 6 * MIB
    refusal = s3_proxy.add(
        Fault(
            status=400,
            method="PUT",
            path=r"/rootfs$",
            times=1,
            body=INVALID_COPY,
            headers={"Content-Type": "application/xml"},
        )
    )
    uploader = ArtifactUploader(storage, TransferOptions(part_size=5 * MIB))

    [stored] = uploader.upload_all([upload_of(path, key)])

    assert refusal.fired == 1
    copy_parts = math.ceil(path.stat().st_size / (6 * MIB))
    # The copy's parts carry x-amz-copy-source; the upload's four parts came first.
    assert s3_proxy.count(method="PUT", path=r"/rootfs\?.*partNumber=") == 4 + copy_parts
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"]["md5sum"] == stored.md5 == file_md5(path)
    assert head["ETag"].strip('"').endswith(f"-{copy_parts}")
    assert head["ContentLength"] == path.stat().st_size


def test_a_refused_copy_at_or_below_the_limit_fails(stack: LocalStack, s3_proxy: FaultProxy, tmp_path: Path) -> None:
    path = tmp_path / "rootfs"
    path.write_bytes(os.urandom(6 * MIB))
    storage = storage_for(stack, s3_proxy.url)
    s3_proxy.add(Fault(status=400, method="PUT", path=r"/rootfs$", body=INVALID_COPY))

    with pytest.raises(StorageError, match=r"cannot set metadata on .*InvalidRequest"):
        ArtifactUploader(storage, TransferOptions(part_size=5 * MIB)).upload_all(
            [upload_of(path, f"integrity-test/{uuid.uuid4()}/rootfs")]
        )


def test_the_part_size_doubles_until_the_parts_fit_the_limit() -> None:
    options = TransferOptions(part_size=8 * MIB)
    assert options.planned_for([100 * GIB, 16 * MIB]).part_size == 16 * MIB
    assert options.planned_for([6 * GIB, 16 * MIB]).part_size == 8 * MIB
    huge = options.planned_for([1024 * GIB])
    assert huge.parts(1024 * GIB) <= 10_000 < math.ceil(1024 * GIB / (8 * MIB))
    assert TransferOptions(part_size=5 * MIB, max_parts=2).planned_for([24 * MIB]).part_size == 20 * MIB


def test_a_file_past_the_part_limit_goes_up_in_larger_parts(
    stack: LocalStack, s3_proxy: FaultProxy, s3: Any, tmp_path: Path
) -> None:
    # A sparse file: its content does not matter, its size and part count do.
    path = tmp_path / "rootfs"
    with open(path, "wb") as handle:
        handle.truncate(24 * MIB + 5)
    key = f"integrity-test/{uuid.uuid4()}/rootfs"
    # At 5 MiB the file needs 5 parts; with at most 2 allowed they grow to 20 MiB.
    uploader = ArtifactUploader(storage_for(stack, s3_proxy.url), TransferOptions(part_size=5 * MIB, max_parts=2))

    [stored] = uploader.upload_all([upload_of(path, key)])

    assert s3_proxy.count(method="PUT", path=r"partNumber=") == 2
    assert s3_proxy.count(method="PUT", path=r"partNumber=3") == 0
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]["md5sum"] == stored.md5 == file_md5(path)


@pytest.mark.parametrize("beside", [False, True], ids=["one thread", "part md5 beside"])
def test_the_part_md5s_are_those_of_the_bytes_read_whichever_thread_takes_them(tmp_path: Path, beside: bool) -> None:
    from ims_python_helper.publish.integrity import HashingReader

    data = os.urandom(5 * 1000 + 7)
    path = tmp_path / "data"
    path.write_bytes(data)
    with open(path, "rb") as handle, concurrent.futures.ThreadPoolExecutor(1) as helper:
        reader = HashingReader(handle, sha256=True)
        piece = memoryview(bytearray(300))  # parts of 1000 bytes read in pieces of 300: the pieces straddle them
        sizes = [reader.read_part(1000, piece, helper if beside else None) for _ in range(7)]
    assert sizes == [1000] * 5 + [7, 0]
    assert [reader.part_md5(n) for n in range(1, 7)] == [
        hashlib.md5(data[i : i + 1000]).digest() for i in range(0, len(data), 1000)
    ]
    assert reader.md5 == hashlib.md5(data).hexdigest() and reader.sha256 == hashlib.sha256(data).hexdigest()


def test_a_part_whose_size_differs_from_what_was_read_is_not_sent(tmp_path: Path) -> None:
    from ims_python_helper.publish.integrity import HashingReader

    path = tmp_path / "data"
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as handle:
        reader = HashingReader(handle)
        piece = memoryview(bytearray(16))
        assert [reader.read_part(60, piece) for _ in range(3)] == [60, 40, 0]
    assert reader.parts == 2
    assert reader.md5 == hashlib.md5(b"x" * 100).hexdigest()
    assert reader.part_md5(1) == hashlib.md5(b"x" * 60).digest()
    assert reader.part_md5(2) == hashlib.md5(b"x" * 40).digest()
    with pytest.raises(VerificationError, match="part 1 is 59 bytes, but 60 were read"):
        reader.part_md5(1, 59)
    with pytest.raises(VerificationError, match="part 3 was never read"):
        reader.part_md5(3)
