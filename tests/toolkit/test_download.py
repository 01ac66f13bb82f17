"""The download engine against a range-serving server: parallel ranges, resume of a cut range, md5 checks."""

from __future__ import annotations

import errno
import hashlib
import os
import random

import pytest

from ims_python_helper.pod.download import ChecksumMismatch, Downloader, DownloadError, DownloadOptions, download_file
from ims_python_helper.pod.resume import SpanLedger
from tests.toolkit.rangeserver import RangeServer

PART = 256 * 1024


@pytest.fixture
def blob() -> bytes:
    return random.Random(7).randbytes(10 * PART + 12345)


def test_parallel_ranges_give_the_file_and_its_md5(tmp_path, blob):
    with RangeServer(blob) as server:
        result = download_file(server.url, tmp_path / "rootfs", options=DownloadOptions(part_size=PART, concurrency=4))
    assert (tmp_path / "rootfs").read_bytes() == blob
    assert result.md5 == hashlib.md5(blob).hexdigest()
    assert result.ranged and result.size == len(blob)
    assert server.bytes_sent == len(blob)  # every byte fetched once
    assert len(server.served) == 11
    assert len(server.clients) <= 4 + 1  # connections are reused from part to part (the first request's too)


def test_a_range_that_ends_early_starts_the_next_part_while_the_one_before_still_arrives(tmp_path, blob):
    # Two ranges: part 0 stalls halfway until part 2 is asked for. The range that finished part 1 must start
    # part 2 at once (the window holds one part more than the ranges), not wait for part 0 to be hashed.
    with RangeServer(blob) as server:
        server.hold_until_asked(held=0, awaited=2 * PART)
        result = download_file(server.url, tmp_path / "rootfs", options=DownloadOptions(part_size=PART, concurrency=2))
    assert result.md5 == hashlib.md5(blob).hexdigest()
    assert server.asked_while_held
    assert DownloadOptions(part_size=PART, concurrency=2).memory_bound == PART * 4
    assert DownloadOptions(part_size=PART, concurrency=2, window=5).window_parts == 5


def test_a_range_cut_midway_resumes_only_its_missing_bytes(tmp_path, blob):
    with RangeServer(blob) as server:
        cut_at = 5 * PART + 1000
        server.cut_once(cut_at, 70_000)  # the range holding cut_at stops after 70 000 bytes
        options = DownloadOptions(part_size=PART, concurrency=3, backoff=0.01)
        result = download_file(
            server.url, tmp_path / "rootfs", expected_md5=hashlib.md5(blob).hexdigest(), options=options
        )
    assert (tmp_path / "rootfs").read_bytes() == blob
    assert result.retries == 1
    # The cut range was asked for again from its first missing byte, and nothing else twice.
    assert (5 * PART + 70_000, 6 * PART - 1, PART - 70_000) in server.served
    assert server.bytes_sent == len(blob)


def test_a_server_without_ranges_is_read_in_one_stream(tmp_path, blob):
    with RangeServer(blob, ranges=False) as server:
        result = download_file(server.url, tmp_path / "rootfs", options=DownloadOptions(part_size=PART))
    assert not result.ranged
    assert (tmp_path / "rootfs").read_bytes() == blob
    assert len(server.served) == 1


def test_wrong_md5_fails_and_leaves_no_file(tmp_path, blob):
    with RangeServer(blob) as server, pytest.raises(ChecksumMismatch, match=r"expected 0{32}"):
        download_file(server.url, tmp_path / "rootfs", expected_md5="0" * 32, options=DownloadOptions(part_size=PART))
    assert os.listdir(tmp_path) == []


def test_a_range_that_keeps_failing_gives_up_and_leaves_no_file(tmp_path, blob):
    with RangeServer(blob) as server:
        for _ in range(3):
            server.cut_once(4 * PART - 1, 10)  # every answer for this range stops after 10 bytes
        options = DownloadOptions(part_size=PART, concurrency=2, attempts=3, backoff=0.01)
        with pytest.raises(DownloadError, match="after 3 attempts"):
            download_file(server.url, tmp_path / "rootfs", options=options)
    assert os.listdir(tmp_path) == []


def test_refused_url_is_one_line_error_without_the_signature(tmp_path):
    from ims_python_helper.local.repo_server import RepoServer

    with RepoServer() as server:  # answers 404 for anything it does not serve
        url = f"{server.url}/rootfs?X-Amz-Signature=0123456789abcdef&X-Amz-Expires=60"
        with pytest.raises(DownloadError) as caught:
            download_file(url, tmp_path / "rootfs")
    message = str(caught.value)
    assert "HTTP 404" in message and "\n" not in message
    assert "0123456789abcdef" not in message
    assert os.listdir(tmp_path) == []


def test_the_hasher_takes_the_bytes_in_file_order_whatever_order_they_arrive_in(blob):
    from ims_python_helper.pod.ranges import InOrderHasher, new_buffer, plan_spans

    spans = plan_spans(len(blob), PART)
    free: list = []
    hasher = InOrderHasher(spans, free)
    # The last span arrives first, the first last; each span in two reads, as a range thread would offer them.
    for span in reversed(spans):
        span.buffer = new_buffer(PART)
        span.buffer[: span.size] = blob[span.start : span.end + 1]
        for written in (span.size // 2, span.size):
            span.written = written
            hasher.offer()
        assert hasher.index == (len(spans) if span.start == 0 else 0)  # nothing hashed before the first span
    assert hasher.hexdigest() == hashlib.md5(blob).hexdigest()
    assert len(free) == len(spans) and all(span.buffer is None for span in spans)  # every buffer given back


def test_parts_off_the_direct_io_boundary_are_written_through_the_page_cache(tmp_path, blob):
    part = 64 * 1024 + 100  # no range but the first starts on a 4 KiB boundary
    with RangeServer(blob) as server:
        result = download_file(server.url, tmp_path / "rootfs", options=DownloadOptions(part_size=part, concurrency=3))
    assert (tmp_path / "rootfs").read_bytes() == blob
    assert result.md5 == hashlib.md5(blob).hexdigest()


def test_a_file_system_refusing_direct_writes_gets_the_bytes_through_the_page_cache(tmp_path, blob, monkeypatch):
    from ims_python_helper.pod import ranges as download_ranges

    writers, refusals = [], []
    real_init, real_pwrite = download_ranges.FileWriter.__init__, download_ranges.pwrite_all

    def init(self, fd, path, direct):
        real_init(self, fd, path, direct)
        writers.append((self, self.direct_fd))

    def pwrite(fd, view, offset):
        if any(fd == direct_fd for _, direct_fd in writers):  # the O_DIRECT descriptor: refused, as tmpfs would
            refusals.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real_pwrite(fd, view, offset)

    monkeypatch.setattr(download_ranges.FileWriter, "__init__", init)
    monkeypatch.setattr(download_ranges, "pwrite_all", pwrite)
    with RangeServer(blob) as server:
        result = download_file(server.url, tmp_path / "rootfs", options=DownloadOptions(part_size=PART, concurrency=4))
    assert (tmp_path / "rootfs").read_bytes() == blob
    assert result.md5 == hashlib.md5(blob).hexdigest()
    assert len(refusals) == 1  # O_DIRECT was tried, and after its refusal not again
    assert writers[0][0].direct_fd is None


def test_digest_hashes_every_byte_and_writes_nothing(tmp_path, blob, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RangeServer(blob) as server:
        options = DownloadOptions(part_size=PART, concurrency=4)
        result = Downloader(server.url, "", options, name="rootfs").digest()
    assert result.md5 == hashlib.md5(blob).hexdigest() and result.size == len(blob) and result.path == ""
    assert server.bytes_sent == len(blob)
    assert list(tmp_path.iterdir()) == []


def test_fetch_into_reads_back_what_the_ledger_kept_and_asks_only_for_the_rest(tmp_path, blob):
    path = tmp_path / "rootfs.part"
    kept = [PART, 0, PART // 2, 0, 0, PART, 0, 0, 0, 0, 0]  # whole, none, the first half (4 KiB aligned), ...
    with open(path, "wb") as handle:
        handle.truncate(len(blob))
        for index, count in enumerate(kept):
            handle.seek(index * PART)
            handle.write(blob[index * PART : index * PART + count])
    recorded = {}
    ledger = SpanLedger(list(kept), lambda index, written: recorded.__setitem__(index, written))
    fd = os.open(path, os.O_RDWR)
    try:
        with RangeServer(blob) as server:
            options = DownloadOptions(part_size=PART, concurrency=3)
            result = Downloader(server.url, path, options).fetch_into(fd, ledger)
    finally:
        os.close(fd)
    assert path.read_bytes() == blob
    assert result.md5 == hashlib.md5(blob).hexdigest()
    # The first request only learns the size (byte 0 is on disk); every kept byte stays unasked.
    assert server.bytes_sent == 1 + len(blob) - sum(kept)
    assert (2 * PART + PART // 2, 3 * PART - 1, PART - PART // 2) in server.served
    assert recorded[1] == PART and recorded[10] == len(blob) - 10 * PART and 0 not in recorded
