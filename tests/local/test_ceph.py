"""The local Ceph RGW backend: it starts, serves S3 the way production RGW does, and stops cleanly.

Needs the Debian packages (see ``ims_python_helper.local.ceph.INSTALL_COMMAND``);
the whole module is skipped without them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from boto3.s3.transfer import TransferConfig

from ims_python_helper.local.ceph import (
    BLUESTORE_ENV,
    DEFAULT_MEMSTORE_BYTES,
    MEMSTORE_ENV,
    STORE_ENV,
    CephError,
    CephRgw,
    bluestore_bytes_for,
    memstore_bytes_from_env,
    store_from_env,
)
from ims_python_helper.local.s3backend import DEFAULT_BUCKETS
from tests.support import s3_client_for, skip_module_unless_ceph_runs

skip_module_unless_ceph_runs()

MiB = 1024**2


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRgw]:
    backend = CephRgw(tmp_path_factory.mktemp("rgw"), memstore_bytes=512 * MiB)
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def rgw_s3(rgw: CephRgw) -> Any:
    return s3_client_for(rgw)


def ceph_processes_using(conf: Path) -> List[str]:
    """Live (non-zombie) processes whose command line names ``conf``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited while we looked
        if str(conf) in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def test_start_gives_a_loopback_endpoint_and_credentials(rgw: CephRgw) -> None:
    assert rgw.name == "ceph"
    assert rgw.endpoint.startswith("http://127.0.0.1:")
    assert rgw.access_key and rgw.secret_key
    assert rgw.conf.is_file()


def test_start_creates_default_buckets(rgw_s3: Any) -> None:
    names = {bucket["Name"] for bucket in rgw_s3.list_buckets()["Buckets"]}
    assert set(DEFAULT_BUCKETS) <= names


def test_put_get_round_trip_keeps_body_and_metadata(rgw_s3: Any) -> None:
    body = os.urandom(300 * 1024)
    md5 = hashlib.md5(body).hexdigest()
    rgw_s3.put_object(Bucket="boot-images", Key="roundtrip/kernel", Body=body, Metadata={"md5sum": md5})

    got = rgw_s3.get_object(Bucket="boot-images", Key="roundtrip/kernel")

    assert got["Body"].read() == body
    assert got["Metadata"] == {"md5sum": md5}
    assert got["ETag"].strip('"') == md5  # a single PUT's ETag is the body's md5


def test_multipart_upload_etag_is_md5_of_part_md5s_with_part_count(rgw_s3: Any, tmp_path: Path) -> None:
    part = 5 * MiB
    data = os.urandom(2 * part + 1024)
    path = tmp_path / "rootfs"
    path.write_bytes(data)
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part)

    rgw_s3.upload_file(str(path), "boot-images", "multipart/rootfs", Config=config, ExtraArgs={"Metadata": {"k": "v"}})

    head = rgw_s3.head_object(Bucket="boot-images", Key="multipart/rootfs")
    part_md5s = b"".join(hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part))
    assert head["ETag"].strip('"') == f"{hashlib.md5(part_md5s).hexdigest()}-3"
    assert head["Metadata"] == {"k": "v"}


def test_stop_leaves_no_ceph_process_running_and_is_idempotent(tmp_path: Path) -> None:
    backend = CephRgw(tmp_path, memstore_bytes=256 * MiB)
    backend.start()
    assert len(ceph_processes_using(backend.conf)) >= 3  # mon, osd, radosgw

    backend.stop()
    backend.stop()

    assert ceph_processes_using(backend.conf) == []


def test_missing_programs_error_names_the_apt_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(CephError, match="apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw"):
        CephRgw(tmp_path).start()


def test_memstore_size_comes_from_env_in_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMSTORE_ENV, raising=False)
    assert memstore_bytes_from_env() == DEFAULT_MEMSTORE_BYTES
    monkeypatch.setenv(MEMSTORE_ENV, "4096")
    assert memstore_bytes_from_env() == 4096 * MiB
    monkeypatch.setenv(MEMSTORE_ENV, "lots")
    with pytest.raises(CephError, match=MEMSTORE_ENV):
        memstore_bytes_from_env()


def test_the_default_store_is_bluestore_and_memstore_is_chosen_by_size_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    assert store_from_env() == "bluestore"
    assert store_from_env(memstore_bytes=256 * MiB) == "memstore"
    monkeypatch.setenv(STORE_ENV, "memstore")
    assert store_from_env() == "memstore"
    monkeypatch.setenv(STORE_ENV, "filestore")
    with pytest.raises(CephError, match=STORE_ENV):
        store_from_env()


def test_bluestore_is_sized_to_half_the_free_disk_or_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLUESTORE_ENV, raising=False)
    free = shutil.disk_usage(tmp_path).free
    # Free space moves while other tests write: within 1 GiB of half of it.
    assert abs(bluestore_bytes_for(tmp_path) - free // 2) < 1024 * MiB
    monkeypatch.setenv(BLUESTORE_ENV, "4096")
    assert bluestore_bytes_for(tmp_path) == 4096 * MiB
    monkeypatch.setenv(BLUESTORE_ENV, "100")
    with pytest.raises(CephError, match=BLUESTORE_ENV):
        bluestore_bytes_for(tmp_path)


def test_bluestore_keeps_objects_on_disk_in_a_sparse_file_of_its_size(tmp_path: Path) -> None:
    backend = CephRgw(tmp_path, store="bluestore", store_bytes=4096 * MiB)
    backend.start()
    try:
        s3 = s3_client_for(backend)
        body = os.urandom(24 * MiB)
        s3.put_object(Bucket="boot-images", Key="bluestore/rootfs", Body=body)
        assert s3.get_object(Bucket="boot-images", Key="bluestore/rootfs")["Body"].read() == body
        usage = backend.usage()
        line = backend.describe_store()
    finally:
        backend.stop()

    block = tmp_path / "ceph" / "osd" / "ceph-0" / "block"
    assert "osd objectstore = bluestore" in backend.conf.read_text()
    assert block.stat().st_size == 4096 * MiB == usage["stat_bytes"]
    assert block.stat().st_blocks * 512 < 1024 * MiB, "the block file is not sparse"
    assert line.startswith(f"Ceph bluestore of 4.0 GiB in a sparse file {block}, ")
    assert line.endswith(" GiB free")
