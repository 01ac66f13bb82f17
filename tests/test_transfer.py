"""The upload engine against the real local stack, over real sockets.

Each artifact is read once; a multipart upload stores the file's md5 (and
SHA-256) and an ETag of the right number of parts; memory does not grow with
the file; a failed multipart upload leaves no upload and no object behind; and
progress is reported as log lines (pods) or bars (terminals) with a summary.
Faults and slow links come from the fault proxy in ``tests/faults``, never from
mocking boto3.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from ims_python_helper.clients.deadline import Deadline
from ims_python_helper.clients.defaults import PIECE
from ims_python_helper.clients.sendfile import FileRange, FileRangeShort
from ims_python_helper.clients.storage import S3Settings, S3Storage, describe_s3_error
from ims_python_helper.errors import StorageError, UploadCancelled, VerificationError
from ims_python_helper.local.stack import LocalStack
from ims_python_helper.progress import LogProgress
from ims_python_helper.publish.parts import PartSlots
from ims_python_helper.publish.transfer import ArtifactUpload, ArtifactUploader, TransferOptions
from tests.faults.proxy import Fault, FaultProxy
from tests.support import (
    Artifacts,
    ChildRun,
    CliRunner,
    Snapshot,
    make_artifacts,
    run_cli_measured,
    s3_client_for,
)

MIB = 1024 * 1024
BUCKET = "boot-images"
ROOTFS_TYPE = "application/vnd.cray.image.rootfs.squashfs"
#: Small parts so test files of a few MiB go up as multipart uploads.
PART_MIB = 5


# -- helpers ---------------------------------------------------------------------------


def storage_for(stack: LocalStack, endpoint: str = "") -> S3Storage:
    """The client's own S3 storage on the stack (or on a proxy in front of it)."""
    assert stack.s3 is not None
    return S3Storage(
        S3Settings(
            endpoint=endpoint or stack.s3.endpoint,
            bucket=BUCKET,
            access_key=stack.s3.access_key,
            secret_key=stack.s3.secret_key,
            max_attempts=2,
        )
    )


def uploads_of(artifacts: Artifacts, prefix: str, *names: str) -> List[ArtifactUpload]:
    """``ArtifactUpload``s of the sample files under ``prefix``."""
    return [
        ArtifactUpload(
            name, str(artifacts.paths[name]), f"{prefix}{name}", ROOTFS_TYPE, artifacts.paths[name].stat().st_size
        )
        for name in names
    ]


def keys_under(s3: Any, prefix: str) -> List[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def open_uploads(s3: Any, prefix: str = "") -> List[str]:
    listing = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


def md5_of_object(s3: Any, key: str) -> str:
    digest = hashlib.md5()
    for chunk in s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(MIB):
        digest.update(chunk)
    return digest.hexdigest()


# -- one read, one md5 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_and_large_runs(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Tuple[ChildRun, ChildRun, int]:
    """Two CLI runs (child processes) that differ only in the rootfs size, 16 or 176 MiB; and that difference."""
    tmp_path = tmp_path_factory.mktemp("measured")
    stack_env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    stack_env.update(stack.env(), IMS_PROGRESS="log")
    runs = []
    sizes = (16 * MIB, 176 * MIB)
    for size in sizes:
        files = make_artifacts(tmp_path / f"rootfs-{size}", rootfs_size=size, seed=size)
        argv = ["image", "upload_artifacts", f"measured-{uuid.uuid4().hex[:8]}", *files.flags("rootfs", "kernel")]
        argv += ["--part-size", str(PART_MIB), "--concurrency", "2"]
        run = run_cli_measured(argv, stack_env, tmp_path / f"run-{size}.log")
        assert run.code == 0, run.output
        runs.append(run)
    return runs[0], runs[1], sizes[1] - sizes[0]


def test_each_artifact_is_read_once_for_its_hashes_and_once_by_the_kernel_to_send_it(
    small_and_large_runs: Tuple[ChildRun, ChildRun, int],
) -> None:
    small, large, extra = small_and_large_runs
    # Interpreter and library files are read alike in both runs. 160 MiB more rootfs is 160 MiB more read by
    # the client (its hashes) and 160 MiB more by sendfile from the page cache (the kernel counts both in rchar);
    # a second pass of the client over the file would make it three times.
    assert abs((large.rchar - small.rchar) - 2 * extra) < 0.01 * extra, (large.rchar - small.rchar, extra)


def test_memory_does_not_grow_with_the_file(small_and_large_runs: Tuple[ChildRun, ChildRun, int]) -> None:
    small, large, extra = small_and_large_runs
    bound = TransferOptions(part_size=PART_MIB * MIB, concurrency=2).memory_bound
    # Ten times the file, the same peak give or take the engine's bound (not the 160 MiB the file grew by).
    assert large.peak_rss - small.peak_rss < bound, (small.peak_rss, large.peak_rss)
    assert large.peak_rss - small.peak_rss < extra / 4


def test_a_file_sent_in_one_put_is_not_held_in_memory_either(stack: LocalStack, tmp_path: Path) -> None:
    # Below the part size (64 MiB by default) a file goes up in one PUT, hashed a piece at a time and sent
    # from the file like a part: 56 MiB more of it must not raise the peak by 56 MiB (it did when read whole).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OAUTH_", "IMS_", "CA_CERT"))}
    env.update(stack.env())
    runs = []
    for size in (4 * MIB, 60 * MIB):
        files = make_artifacts(tmp_path / f"rootfs-{size}", rootfs_size=size, seed=size)
        argv = ["image", "upload_artifacts", f"one-put-{uuid.uuid4().hex[:8]}", *files.flags("rootfs", "kernel")]
        run = run_cli_measured(argv, env, tmp_path / f"run-{size}.log")
        assert run.code == 0, run.output
        runs.append(run)
    small, large = runs
    assert large.peak_rss - small.peak_rss < 16 * MIB, (small.peak_rss, large.peak_rss)


def test_the_parts_read_ahead_of_the_sending_are_bound_by_concurrency() -> None:
    options = TransferOptions(part_size=8 * MIB, concurrency=3)
    assert options.memory_bound == 6 * PIECE  # a piece per part sent and per file read, whatever the part size
    slots = PartSlots(options.concurrency + 1)
    for _ in range(slots.count):
        slots.take()
    raised: List[BaseException] = []

    def take() -> None:
        try:
            slots.take()
        except UploadCancelled as err:
            raised.append(err)

    waiting = threading.Thread(target=take)
    waiting.start()  # all slots are taken: it waits until one is freed
    slots.give()
    waiting.join(timeout=10)
    assert not waiting.is_alive() and not raised, "a freed slot did not let the waiting reader on"
    waiting = threading.Thread(target=take)
    waiting.start()
    slots.cancel()
    waiting.join(timeout=10)
    assert not waiting.is_alive(), "a reader waiting for a slot was not woken by the cancel"
    assert raised, "the woken reader did not stop"


class SentFromTheFile(FileRange):
    """A part body that records what its ``read`` handed to the HTTP layer."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.handed: List[Any] = []

    def read(self, amount: int = -1) -> Any:
        data = super().read(amount)
        self.handed.append(data if isinstance(data, FileRange) else bytes(data))
        return data


@pytest.mark.parametrize("with_sendfile", [True, False], ids=["sendfile", "read"])
def test_a_part_goes_from_the_file_to_the_socket_by_sendfile_over_plain_http(
    stack: LocalStack, tmp_path: Path, with_sendfile: bool
) -> None:
    """Over plain HTTP a part's bytes never pass through the client (``os.sendfile``); else read by pieces."""
    path = tmp_path / "data"
    data = os.urandom(3 * MIB + 5)
    path.write_bytes(data)
    assert stack.s3 is not None
    client = storage_for(stack).client if with_sendfile else s3_client_for(stack.s3)
    key = f"sendfile/{uuid.uuid4()}"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    with open(path, "rb") as handle:
        body = SentFromTheFile(handle.fileno(), 5, 3 * MIB, threading.Event())
        digest = hashlib.md5(data[5 : 5 + 3 * MIB]).digest()
        answer = client.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            PartNumber=1,
            Body=body,
            ContentMD5=base64.b64encode(digest).decode("ascii"),
        )
    client.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": answer["ETag"]}]},
    )
    stored = s3_client_for(stack.s3).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored == data[5 : 5 + 3 * MIB]
    copies = [handed for handed in body.handed if isinstance(handed, bytes) and handed]
    if with_sendfile:
        # urllib3 2 hands the connection what ``read`` returns (the range itself), urllib3 1.26 the body.
        assert not copies, "the part's bytes were read into the client instead of sent from the file"
        assert body.tell() == 3 * MIB
    else:
        # A client without the sendfile pool (and any client over TLS) reads the part, a piece at a time.
        # The bytes sent are read last (a client with botocore's default checksums reads the body once before).
        assert b"".join(copies).endswith(stored), "a client without the sendfile pool did not read the part"
        assert max(len(copy) for copy in copies) <= PIECE, "the part was read whole, not a piece at a time"


def test_a_file_cut_short_after_its_part_was_hashed_fails_as_such_on_both_paths(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as handle:
        body = FileRange(handle.fileno(), 50, 80, threading.Event())
        with pytest.raises(FileRangeShort, match="cut short"):
            body.read()
        body.seek(0)
        sender, receiver = socket.socketpair()
        with sender, receiver, pytest.raises(FileRangeShort, match="ended 50 bytes into a part of 80 bytes"):
            body.send_over(sender)


def test_a_part_cut_short_before_it_is_sent_is_reported_as_such(stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100)
    client = storage_for(stack).client
    key = f"short/{uuid.uuid4()}"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    try:
        with open(path, "rb") as handle, pytest.raises(Exception) as raised:
            body = FileRange(handle.fileno(), 50, 80, threading.Event())
            client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=body)
        reason = describe_s3_error(raised.value)
        assert reason.startswith("the file ended 50 bytes into a part of 80 bytes at offset 50: it was cut short"), (
            reason
        )
    finally:
        client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)


def test_a_small_file_changed_after_it_was_hashed_is_not_stored_as_the_md5_says(
    stack: LocalStack, tmp_path: Path
) -> None:
    # A small file goes up in one PUT sent from the file, like a part: the bytes sent are read again after
    # they were hashed, and the Content-MD5 (or the ETag check) refuses bytes that changed in between.
    path = tmp_path / "small"
    hashed = os.urandom(MIB + 3)
    path.write_bytes(hashed)
    storage = storage_for(stack)
    key = f"small/{uuid.uuid4()}"
    with open(path, "rb") as handle:
        path.write_bytes(os.urandom(MIB + 3))  # same size, other bytes, after the hashing
        body = FileRange(handle.fileno(), 0, MIB + 3, threading.Event())
        with pytest.raises(StorageError, match=r"BadDigest|Content-MD5|the md5 of the bytes sent"):
            storage.put_body(key, body, hashlib.md5(hashed).digest(), "application/octet-stream", {})
    path.write_bytes(hashed)
    with open(path, "rb") as handle:
        body = FileRange(handle.fileno(), 0, MIB + 3, threading.Event())
        etag = storage.put_body(key, body, hashlib.md5(hashed).digest(), "application/octet-stream", {})
    assert etag == hashlib.md5(hashed).hexdigest()
    assert s3_client_for(stack.s3).get_object(Bucket=BUCKET, Key=key)["Body"].read() == hashed


def test_a_part_body_is_read_again_for_a_retry_and_not_once_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "data"
    data = os.urandom(MIB)
    path.write_bytes(data)
    cancelled = threading.Event()
    with open(path, "rb") as handle:
        body = FileRange(handle.fileno(), 10, 1000, cancelled)
        assert len(body) == 1000
        for send in ("first send", "retry"):
            body.seek(0)
            assert body.read(16 * 1024) == data[10:1010], f"{send}: not the part's bytes"
            assert body.read(16 * 1024) == b"", f"{send}: more after the whole part"
        cancelled.set()
        assert body.read() == b"", "an attempt that has sent its body is left to finish"
        body.seek(0)
        with pytest.raises(UploadCancelled):
            body.read()  # a retry that has not begun


def test_multipart_upload_records_the_md5_of_the_whole_file(run_cli: CliRunner, artifacts: Artifacts, s3: Any) -> None:
    result = run_cli(
        "image",
        "upload_artifacts",
        f"multipart-{uuid.uuid4().hex[:8]}",
        *artifacts.flags("rootfs", "kernel", "initrd"),
        "--part-size",
        str(PART_MIB),
        "--sha256",
    )
    assert result.code == 0, result.stderr
    entries = {entry["type"]: entry for entry in result.json["ims_image_artifacts"]}
    rootfs = entries[ROOTFS_TYPE]
    key = rootfs["link"]["path"].split(f"s3://{BUCKET}/", 1)[1]
    head = s3.head_object(Bucket=BUCKET, Key=key)
    local = artifacts.md5("rootfs")
    size = artifacts.paths["rootfs"].stat().st_size
    parts = -(-size // (PART_MIB * MIB))
    assert parts > 1
    assert rootfs["md5"] == head["Metadata"]["md5sum"] == local == md5_of_object(s3, key)
    assert head["Metadata"]["sha256sum"] == hashlib.sha256(artifacts.paths["rootfs"].read_bytes()).hexdigest()
    assert head["ETag"].strip('"') == rootfs["link"]["etag"]
    # Ceph RGW keeps the multipart ETag (md5 of the part md5s, "-N") through the copy that adds
    # the metadata; AWS and moto give the copy a fresh ETag, the md5 of the stored bytes.
    assert rootfs["link"]["etag"] == local or rootfs["link"]["etag"].endswith(f"-{parts}")
    assert head["ContentLength"] == size
    assert head["ContentType"] == ROOTFS_TYPE
    # A file smaller than a part is one PUT: its ETag is its md5.
    kernel = entries["application/vnd.cray.image.kernel"]
    assert kernel["link"]["etag"] == kernel["md5"] == artifacts.md5("kernel")


# -- failures leave nothing behind --------------------------------------------------------


@pytest.mark.parametrize("actual_mib", [0, 2], ids=["emptied", "cut-short"])
def test_a_file_cut_short_while_it_is_read_fails_as_changed_and_leaves_no_upload(
    stack: LocalStack, tmp_path: Path, s3: Any, actual_mib: int
) -> None:
    prefix = f"transfer-test/{uuid.uuid4()}/"
    path = tmp_path / "rootfs"
    path.write_bytes(os.urandom(actual_mib * MIB))
    # Planned from the size it had (three parts), read at the size it has now.
    upload = ArtifactUpload("rootfs", str(path), f"{prefix}rootfs", ROOTFS_TYPE, 3 * PART_MIB * MIB)
    uploader = ArtifactUploader(storage_for(stack), TransferOptions(part_size=PART_MIB * MIB))

    with pytest.raises(VerificationError, match=r"rootfs changed while it was read \(\d+ bytes read"):
        uploader.upload_all([upload])

    assert open_uploads(s3, prefix) == []


def test_failed_multipart_upload_is_aborted_by_the_engine(
    stack: LocalStack, s3_proxy: FaultProxy, artifacts: Artifacts, s3: Any
) -> None:
    prefix = f"transfer-test/{uuid.uuid4()}/"
    # Every attempt at part 3 has its connection cut, after parts 1 and 2 went through.
    s3_proxy.add(Fault(action="drop", method="PUT", path=r"partNumber=3(&|$)"))
    uploader = ArtifactUploader(storage_for(stack, s3_proxy.url), TransferOptions(part_size=PART_MIB * MIB))

    with pytest.raises(StorageError, match=r"upload of .*rootfs.* failed"):
        uploader.upload_all(uploads_of(artifacts, prefix, "rootfs", "kernel"))

    assert s3_proxy.count(method="POST", path=r"\?uploads") == 1  # the multipart upload was started
    assert s3_proxy.count(method="PUT", path=r"partNumber=1(&|$)") == 1
    assert s3_proxy.count(method="DELETE", path=r"uploadId=") >= 1  # and aborted, by the engine itself
    assert open_uploads(s3, prefix) == []
    assert [k for k in keys_under(s3, prefix) if k.endswith("rootfs")] == []


@pytest.mark.wallclock
def test_a_failed_upload_cancels_and_aborts_the_multipart_uploads_of_the_others(
    stack: LocalStack, s3_proxy: FaultProxy, artifacts: Artifacts, s3: Any, tmp_path: Path
) -> None:
    prefix = f"transfer-test/{uuid.uuid4()}/"
    initrd = tmp_path / "initrd-large"
    initrd.write_bytes(os.urandom(3 * PART_MIB * MIB))
    large_initrd = ArtifactUpload("initrd", str(initrd), f"{prefix}initrd", ROOTFS_TYPE, initrd.stat().st_size)
    uploads = [*uploads_of(artifacts, prefix, "rootfs"), large_initrd]
    # The initrd's parts crawl (it is read first, being smaller), so it is still going when the rootfs fails.
    s3_proxy.add(Fault(action="delay", delay=3.0, method="PUT", path=r"initrd\?.*partNumber="))
    s3_proxy.add(Fault(action="drop", method="PUT", path=r"rootfs\?.*partNumber=2(&|$)"))
    uploader = ArtifactUploader(
        storage_for(stack, s3_proxy.url), TransferOptions(part_size=PART_MIB * MIB, concurrency=8)
    )

    with pytest.raises(StorageError, match=r"rootfs"):
        uploader.upload_all(uploads)

    assert s3_proxy.count(method="POST", path=r"initrd\?uploads") == 1  # its multipart upload had begun
    assert s3_proxy.count(method="POST", path=r"initrd\?.*uploadId=") == 0  # and was never completed
    assert s3_proxy.count(method="DELETE", path=r"initrd\?uploadId=") == 1  # but aborted
    assert open_uploads(s3, prefix) == []
    assert keys_under(s3, prefix) == []


def test_failed_multipart_upload_leaves_no_upload_and_no_object_of_the_run(
    run_cli: CliRunner, s3_proxy: FaultProxy, artifacts: Artifacts, s3: Any, snapshot: Any
) -> None:
    before: Snapshot = snapshot()
    # Part 2 is refused for good (a cut connection would be retried through the outage budget first:
    # tests/test_restarts_and_signals.py covers that path).
    refused = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    s3_proxy.add(Fault(status=403, method="PUT", path=r"partNumber=2(&|$)", body=refused))

    result = run_cli(
        "image",
        "upload_artifacts",
        f"cut-{uuid.uuid4().hex[:8]}",
        *artifacts.flags("rootfs", "kernel", "initrd"),
        "--part-size",
        str(PART_MIB),
        env={"S3_ENDPOINT": s3_proxy.url},
    )

    assert result.code == 1, result.stderr
    assert result.json["result"] == "failure"
    assert s3_proxy.count(method="POST", path=r"\?uploads") >= 1
    assert s3_proxy.faults_fired >= 1
    # Parts in flight when part 2 was refused stop at once: none is sent again.
    parts = Counter(re.search(r"partNumber=(\d+)", e.path)[1] for e in s3_proxy.exchanges if "partNumber=" in e.path)
    assert max(parts.values()) == 1, parts
    assert open_uploads(s3) == []
    assert snapshot() == before  # no image record, object or multipart upload of the run is left


# -- progress --------------------------------------------------------------------------------


@pytest.mark.wallclock
def test_pod_progress_logs_each_artifact_at_most_every_interval_and_a_summary(
    stack: LocalStack, s3_proxy: FaultProxy, artifacts: Artifacts, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    interval = 0.3
    # Bytes per second: the 24 MiB rootfs takes about 3 s. Progress counts bytes handed to the
    # socket, and the kernel buffers several MiB per connection, so one connection at a time
    # keeps most of the file behind the throttle.
    s3_proxy.throttle.rate = 8 * MIB
    logger = logging.getLogger("test_transfer.progress")
    prefix = f"transfer-test/{uuid.uuid4()}/"
    uploader = ArtifactUploader(
        storage_for(stack, s3_proxy.url),
        TransferOptions(part_size=PART_MIB * MIB, concurrency=1),
        LogProgress(interval=interval, logger=logger),
        Deadline(60),
    )
    uploads = uploads_of(artifacts, prefix, "rootfs", "kernel")
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            uploader.upload_all(uploads)
    finally:
        for key in keys_under(s3, prefix):
            s3.delete_object(Bucket=BUCKET, Key=key)

    records = [r for r in caplog.records if r.name == logger.name]
    periodic = re.compile(r"^rootfs: (\d+) of (\d+) bytes \((\d+)%\), ([\d.]+) MB/s$")
    lines = [(r.created, periodic.match(r.getMessage())) for r in records if periodic.match(r.getMessage())]
    assert len(lines) >= 2, [r.getMessage() for r in records]
    size = uploads[0].size
    for (earlier, _), (later, _) in zip(lines, lines[1:]):
        assert later - earlier >= interval * 0.99
    for _, match in lines:
        done, total, percent, rate = int(match[1]), int(match[2]), int(match[3]), float(match[4])
        assert total == size and 0 <= done <= size and percent == round(100 * done / size) and rate > 0
    messages = [r.getMessage() for r in records]
    assert any(re.match(r"^rootfs: stored \d+ bytes in [\d.]+ s \([\d.]+ MB/s\)$", m) for m in messages)
    total = sum(u.size for u in uploads)
    assert re.match(rf"^uploaded {total} bytes in [\d.]+ s \([\d.]+ MB/s\)$", messages[-1]), messages[-1]


def test_cli_without_a_terminal_logs_lines_and_a_summary(run_cli: CliRunner, artifacts: Artifacts) -> None:
    result = run_cli(
        "image",
        "upload_artifacts",
        f"log-{uuid.uuid4().hex[:8]}",
        *artifacts.flags("rootfs", "kernel"),
        env={"IMS_PROGRESS": "auto"},  # stderr is not a terminal here, as in a pod
    )
    assert result.code == 0, result.stderr
    total = sum(artifacts.paths[name].stat().st_size for name in ("rootfs", "kernel"))
    assert re.search(r"rootfs: stored \d+ bytes in [\d.]+ s \([\d.]+ MB/s\)", result.stderr)
    assert re.search(rf"uploaded {total} bytes in [\d.]+ s \([\d.]+ MB/s\)", result.stderr)
    assert "\r" not in result.stderr  # no bars


def test_cli_draws_bars_when_asked(run_cli: CliRunner, artifacts: Artifacts) -> None:
    pytest.importorskip("tqdm")
    result = run_cli(
        "image",
        "upload_artifacts",
        f"bars-{uuid.uuid4().hex[:8]}",
        *artifacts.flags("rootfs", "kernel"),
        "--progress",
        "bar",
    )
    assert result.code == 0, result.stderr
    assert re.search(r"rootfs: *100%\|", result.stderr), result.stderr
    assert re.search(r"kernel: *100%\|", result.stderr)
    assert re.search(r"total: *100%\|", result.stderr)
    assert re.search(r"uploaded \d+ bytes in [\d.]+ s \([\d.]+ MB/s\)", result.stderr)
