"""Measure what Debian 12's Ceph RGW (16.2) accepts from boto3, and how fast it takes uploads.

Starts a private :class:`~ims_python_helper.local.ceph.CephRgw` in a temporary
directory, asks it the questions in docs/ceph-findings.md, prints a report and
writes the raw results as JSON. Run from the repository root, with the package
importable (``pip install -e .`` or ``PYTHONPATH=.``)::

    PYTHONPATH=. .venv/bin/python benchmarks/rgw_probe.py   # everything (about 5 minutes)
    PYTHONPATH=. .venv/bin/python benchmarks/rgw_probe.py --no-throughput
    PYTHONPATH=. .venv/bin/python benchmarks/rgw_probe.py --json results.json

Needs the Ceph packages (see ims_python_helper.local.ceph.INSTALL_COMMAND) and
about 8 GiB of free RAM for the 1 GiB runs (memstore keeps objects in memory).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import resource
import socket
import subprocess
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from ims_python_helper.local.ceph import CephRgw

MiB = 1024**2
GiB = 1024**3
BUCKET = "boot-images"


# -- helpers ------------------------------------------------------------------


class TlsCephRgw(CephRgw):
    """The probe's gateway: the usual HTTP endpoint plus an HTTPS one with a self-signed certificate.

    Production RGW is reached over HTTPS, where botocore changes how it sends
    checksums, so the probe needs both.
    """

    def __init__(self, data_dir: Path, memstore_bytes: int) -> None:
        super().__init__(data_dir, memstore_bytes=memstore_bytes)
        self.tls_port = 0

    @property
    def tls_endpoint(self) -> str:
        return f"https://{self.host}:{self.tls_port}"

    @property
    def tls_certificate(self) -> Path:
        return self.root / "tls" / "cert.pem"

    def _config_text(self, mon_v1: int, mon_v2: int) -> str:
        text = super()._config_text(mon_v1, mon_v2)
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.tls_port = sock.getsockname()[1]
        key = self.root / "tls" / "key.pem"
        key.parent.mkdir(exist_ok=True)
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={self.host}",
                "-addext",
                f"subjectAltName=IP:{self.host}",
                "-keyout",
                str(key),
                "-out",
                str(self.tls_certificate),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        plain = f"rgw frontends = beast endpoint={self.host}:{self._rgw_port}"
        assert plain in text
        return text.replace(
            plain,
            f"{plain} ssl_endpoint={self.host}:{self.tls_port} "
            f"ssl_certificate={self.tls_certificate} ssl_private_key={key}",
        )


def make_client(
    rgw: CephRgw,
    checksum: str = "when_required",
    addressing: str = "path",
    endpoint: str = "",
    verify: Any = None,
    sign_payload: Optional[bool] = None,
) -> Any:
    """An S3 client for the probe; ``checksum`` sets both request and response checksum modes.

    ``sign_payload`` sets botocore's ``payload_signing_enabled`` (None: botocore decides,
    which means SHA-256 of every body unless HTTPS and a checksum header are both present).
    """
    # Deliberately independent of ims_python_helper.local.s3client: the probe varies each setting itself.
    s3_config: Dict[str, Any] = {"addressing_style": addressing}
    if sign_payload is not None:
        s3_config["payload_signing_enabled"] = sign_payload
    return boto3.client(
        "s3",
        endpoint_url=endpoint or rgw.endpoint,
        verify=verify,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        region_name="us-east-1",
        config=Config(
            s3=s3_config,
            request_checksum_calculation=checksum,
            response_checksum_validation=checksum,
            retries={"max_attempts": 1},
            connect_timeout=3,
            read_timeout=120,
            max_pool_connections=32,
        ),
    )


class RequestLog:
    """Records the method, URL and interesting headers of every request a client sends."""

    def __init__(self, client: Any) -> None:
        self.requests: List[Dict[str, Any]] = []
        client.meta.events.register("before-send.s3.*", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        headers = {k: _text(v) for k, v in request.headers.items() if _interesting(k)}
        self.requests.append({"method": request.method, "url": request.url, "headers": headers})

    def last(self, method: str) -> Dict[str, Any]:
        return next(r for r in reversed(self.requests) if r["method"] == method)


def _interesting(header: str) -> bool:
    h = header.lower()
    return h.startswith(("x-amz-checksum", "x-amz-sdk-checksum")) or h in (
        "content-encoding",
        "x-amz-trailer",
        "x-amz-decoded-content-length",
        "x-amz-content-sha256",
        "content-md5",
        "transfer-encoding",
        "content-length",
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_random_file(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` pseudo-random bytes; return their md5."""
    md5 = hashlib.md5()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            # Vary each MiB so parts differ, cheaply.
            chunk = i.to_bytes(8, "little") + block[8:]
            f.write(chunk)
            md5.update(chunk)
        rest = size % MiB
        if rest:
            f.write(block[:rest])
            md5.update(block[:rest])
    return md5.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives a multipart upload of ``path`` in ``part_size`` parts: md5 of part md5s, ``-N``."""
    digests = []
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            digests.append(hashlib.md5(chunk).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def body_md5(client: Any, key: str) -> str:
    md5 = hashlib.md5()
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    for chunk in iter(lambda: body.read(MiB), b""):
        md5.update(chunk)
    return md5.hexdigest()


def error_text(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"HTTP {status} {err.get('Code')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def collect_garbage(rgw: CephRgw) -> None:
    """Free deleted objects' RAM now instead of at the next gc period."""
    rgw._radosgw_admin("gc", "process", "--include-all")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_meter(rgw: CephRgw) -> Iterator[Dict[str, float]]:
    """Wall time and CPU seconds of the client process and of each daemon during the block."""
    daemons = {d.name: d.process.pid for d in rgw._daemons}
    before = {name: cpu_seconds(pid) for name, pid in daemons.items()}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client_before = usage.ru_utime + usage.ru_stime
    result: Dict[str, float] = {}
    start = time.perf_counter()
    yield result
    result["wall_s"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_client_s"] = usage.ru_utime + usage.ru_stime - client_before
    for name, pid in daemons.items():
        result[f"cpu_{name}_s"] = cpu_seconds(pid) - before[name]


# -- questions ------------------------------------------------------------------


def probe_checksums(rgw: TlsCephRgw, work: Path) -> Dict[str, Any]:
    """(a) Do uploads with each request_checksum_calculation mode succeed, over HTTP and HTTPS, intact?

    botocore puts the CRC32 in a header over plain HTTP (the payload is signed
    anyway) but sends it as an aws-chunked trailer with an unsigned payload
    over HTTPS, so both transports are asked.
    """
    small = work / "small.bin"
    small_md5 = write_random_file(small, 100 * 1024)
    big = work / "64m.bin"
    big_md5 = write_random_file(big, 64 * MiB)
    results: Dict[str, Any] = {}
    for transport, endpoint in (("http", rgw.endpoint), ("https", rgw.tls_endpoint)):
        for mode in ("when_supported", "when_required", "when_required+unsigned"):
            if mode.endswith("+unsigned") and transport == "http":
                continue  # botocore always signs the payload over plain HTTP
            client = make_client(
                rgw,
                checksum=mode.split("+")[0],
                endpoint=endpoint,
                verify=str(rgw.tls_certificate),
                sign_payload=False if mode.endswith("+unsigned") else None,
            )
            log = RequestLog(client)
            row: Dict[str, Any] = {}
            prefix = f"checksum/{transport}/{mode.replace('+', '-')}"
            try:
                response = client.put_object(Bucket=BUCKET, Key=f"{prefix}/put", Body=small.read_bytes())
                stored = body_md5(client, f"{prefix}/put")
                row["put_object_100KiB"] = {
                    "ok": stored == small_md5,
                    "sent": log.last("PUT")["headers"],
                    "returned_checksum_headers": {
                        k: v
                        for k, v in response["ResponseMetadata"]["HTTPHeaders"].items()
                        if k.startswith("x-amz-checksum")
                    },
                    "size_on_server": client.head_object(Bucket=BUCKET, Key=f"{prefix}/put")["ContentLength"],
                }
            except Exception as exc:
                row["put_object_100KiB"] = {"ok": False, "error": error_text(exc), "sent": log.last("PUT")["headers"]}
            try:
                client.upload_file(
                    str(big),
                    BUCKET,
                    f"{prefix}/multipart",
                    Config=TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB),
                )
                stored = body_md5(client, f"{prefix}/multipart")
                head = client.head_object(Bucket=BUCKET, Key=f"{prefix}/multipart")
                row["upload_file_64MiB_8MiB_parts"] = {
                    "ok": stored == big_md5,
                    "etag": head["ETag"].strip('"'),
                    "size_on_server": head["ContentLength"],
                    "sent_upload_part": log.last("PUT")["headers"],
                }
            except Exception as exc:
                row["upload_file_64MiB_8MiB_parts"] = {
                    "ok": False,
                    "error": error_text(exc),
                    "sent_upload_part": log.last("PUT")["headers"],
                }
            # DeleteObjects is the one call here that S3 says *requires* a checksum.
            try:
                response = client.delete_objects(
                    Bucket=BUCKET, Delete={"Objects": [{"Key": f"{prefix}/put"}, {"Key": f"{prefix}/multipart"}]}
                )
                row["delete_objects"] = {
                    "ok": not response.get("Errors"),
                    "deleted": len(response.get("Deleted", [])),
                    "sent": log.last("POST")["headers"],
                }
            except Exception as exc:
                row["delete_objects"] = {"ok": False, "error": error_text(exc), "sent": log.last("POST")["headers"]}
            results[f"{transport}/{mode}"] = row

    # Does RGW check the checksums it is sent? Header form, plain HTTP, so the value arrives as sent.
    client = make_client(rgw)
    body = small.read_bytes()
    good = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    checks: Dict[str, Any] = {}
    for name, kwargs in (
        ("correct_crc32_header", {"ChecksumCRC32": good}),
        ("wrong_crc32_header", {"ChecksumCRC32": "AAAAAA=="}),
        ("wrong_content_md5", {"ContentMD5": base64.b64encode(b"0" * 16).decode()}),
        ("correct_content_md5", {"ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode()}),
    ):
        try:
            client.put_object(Bucket=BUCKET, Key=f"checksum/{name}", Body=body, **kwargs)
            checks[name] = "accepted"
        except Exception as exc:
            checks[name] = f"refused: {error_text(exc)}"
    results["server_validation"] = checks
    return results


def probe_addressing(rgw: CephRgw) -> Dict[str, Any]:
    """(b) Which addressing styles reach the bucket on a loopback endpoint."""
    results: Dict[str, Any] = {}
    port = rgw.endpoint.rsplit(":", 1)[1]
    for endpoint in (rgw.endpoint, f"http://localhost:{port}"):
        for style in ("path", "auto", "virtual"):
            client = make_client(rgw, addressing=style, endpoint=endpoint)
            log = RequestLog(client)
            name = f"{endpoint.split('//')[1].split(':')[0]}/{style}"
            try:
                keys = client.list_objects_v2(Bucket=BUCKET, MaxKeys=1).get("KeyCount")
                results[name] = {"ok": True, "url": log.requests[-1]["url"], "key_count": keys}
            except Exception as exc:
                url = log.requests[-1]["url"] if log.requests else None
                results[name] = {"ok": False, "url": url, "error": error_text(exc)[:160]}
    # Does RGW itself read the bucket from the Host header? Anonymous GET / with Host
    # boot-images.localhost: a bucket listing is refused (403), the service listing is not.
    host, port = rgw.endpoint.split("//")[1].split(":")
    for name in ("boot-images.localhost", "localhost"):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/", headers={"Host": f"{name}:{port}"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        results[f"raw GET / Host={name}"] = {
            "status": response.status,
            "answer": "ListAllMyBucketsResult" if "ListAllMyBucketsResult" in body else body[:120],
        }
    return results


def probe_etags_and_metadata(rgw: CephRgw, work: Path, copy_size: int) -> Dict[str, Any]:
    """(c) and (d): ETags of single and multipart uploads, metadata round trips, copy in place."""
    client = make_client(rgw)
    results: Dict[str, Any] = {}
    small = work / "small.bin"
    small_md5 = write_random_file(small, 100 * 1024)
    meta = {"md5sum": small_md5, "ims-artifact": "rootfs"}
    client.put_object(Bucket=BUCKET, Key="meta/single", Body=small.read_bytes(), Metadata=meta)
    head = client.head_object(Bucket=BUCKET, Key="meta/single")
    results["single_put"] = {
        "etag": head["ETag"].strip('"'),
        "etag_is_md5": head["ETag"].strip('"') == small_md5,
        "metadata": head["Metadata"],
        "metadata_round_trips": head["Metadata"] == meta,
    }

    big = work / "copy.bin"
    big_md5 = write_random_file(big, copy_size)
    part = 64 * MiB
    meta = {"md5sum": big_md5}
    client.upload_file(
        str(big),
        BUCKET,
        "meta/multipart",
        ExtraArgs={"Metadata": meta, "ContentType": "application/vnd.cray.image.rootfs.squashfs"},
        Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=8),
    )
    head = client.head_object(Bucket=BUCKET, Key="meta/multipart")
    expected = multipart_etag(big, part)
    results["multipart_upload"] = {
        "size": copy_size,
        "part_size": part,
        "etag": head["ETag"].strip('"'),
        "etag_is_md5_of_part_md5s_dash_n": head["ETag"].strip('"') == expected,
        "metadata": head["Metadata"],
        "content_type": head["ContentType"],
        "metadata_round_trips": head["Metadata"] == meta,
    }

    # Copy onto itself: COPY directive (AWS refuses), then REPLACE (how IMS-style tools fix metadata).
    source = {"Bucket": BUCKET, "Key": "meta/multipart"}
    try:
        client.copy_object(Bucket=BUCKET, Key="meta/multipart", CopySource=source, MetadataDirective="COPY")
        results["copy_in_place_directive_copy"] = {"accepted": True}
    except Exception as exc:
        results["copy_in_place_directive_copy"] = {"accepted": False, "error": error_text(exc)}
    new_meta = {"md5sum": big_md5, "verified": "yes"}
    with cpu_meter(rgw) as cost:
        response = client.copy_object(
            Bucket=BUCKET,
            Key="meta/multipart",
            CopySource=source,
            MetadataDirective="REPLACE",
            Metadata=new_meta,
            ContentType="application/vnd.cray.image.rootfs.squashfs",
        )
    head = client.head_object(Bucket=BUCKET, Key="meta/multipart")
    with cpu_meter(rgw) as read_cost:
        intact = body_md5(client, "meta/multipart") == big_md5
    results["copy_in_place_replace"] = {
        "accepted": True,
        "seconds": round(cost["wall_s"], 3),
        "cpu": {k: round(v, 3) for k, v in cost.items()},
        "copy_result_etag": response["CopyObjectResult"]["ETag"].strip('"'),
        "etag_after": head["ETag"].strip('"'),
        "etag_unchanged": head["ETag"].strip('"') == results["multipart_upload"]["etag"],
        "metadata_after": head["Metadata"],
        "content_type_after": head["ContentType"],
        "data_intact": intact,
        "read_back_MBps": round(copy_size / MiB / read_cost["wall_s"], 1),
    }
    # A copy to a new key, for comparison.
    with cpu_meter(rgw) as cost:
        response = client.copy_object(Bucket=BUCKET, Key="meta/multipart-copy", CopySource=source)
    head = client.head_object(Bucket=BUCKET, Key="meta/multipart-copy")
    results["copy_to_new_key"] = {
        "seconds": round(cost["wall_s"], 3),
        "copy_result_etag": response["CopyObjectResult"]["ETag"].strip('"'),
        "etag": head["ETag"].strip('"'),
        "metadata": head["Metadata"],
    }
    # Copy-in-place of a single-part object.
    response = client.copy_object(
        Bucket=BUCKET,
        Key="meta/single",
        CopySource={"Bucket": BUCKET, "Key": "meta/single"},
        MetadataDirective="REPLACE",
        Metadata={"md5sum": small_md5, "verified": "yes"},
    )
    head = client.head_object(Bucket=BUCKET, Key="meta/single")
    results["single_copy_in_place_replace"] = {
        "copy_result_etag": response["CopyObjectResult"]["ETag"].strip('"'),
        "etag_after": head["ETag"].strip('"'),
        "metadata_after": head["Metadata"],
    }
    for key in ("meta/multipart", "meta/multipart-copy", "meta/single"):
        client.delete_object(Bucket=BUCKET, Key=key)
    return results


def probe_multipart_listing(rgw: CephRgw) -> Dict[str, Any]:
    """(e) list_multipart_uploads, list_parts and abort_multipart_upload."""
    client = make_client(rgw)
    results: Dict[str, Any] = {}
    key = "mpu/abandoned"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key, Metadata={"md5sum": "x"})["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"a" * (5 * MiB))
    listed = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    results["listed_after_create"] = [{"Key": u["Key"], "UploadId": u["UploadId"] == upload_id} for u in listed]
    prefixed = client.list_multipart_uploads(Bucket=BUCKET, Prefix="mpu/").get("Uploads", [])
    results["prefix_filter_works"] = [u["Key"] for u in prefixed] == [key]
    results["object_visible_before_complete"] = "Contents" in client.list_objects_v2(Bucket=BUCKET, Prefix="mpu/")
    parts = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", [])
    results["list_parts"] = [{"PartNumber": p["PartNumber"], "Size": p["Size"], "ETag": p["ETag"]} for p in parts]
    client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
    results["listed_after_abort"] = [u["Key"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    for name, call in (
        ("abort_again", lambda: client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)),
        ("abort_unknown_id", lambda: client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId="2~nope")),
        (
            "upload_part_after_abort",
            lambda: client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2, Body=b"b"),
        ),
    ):
        try:
            call()
            results[name] = "accepted (HTTP 2xx)"
        except Exception as exc:
            results[name] = error_text(exc)
    # Parts smaller than 5 MiB (except the last) must be refused at complete time.
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key="mpu/small-parts")["UploadId"]
    etags = [
        client.upload_part(Bucket=BUCKET, Key="mpu/small-parts", UploadId=upload_id, PartNumber=n, Body=b"c" * MiB)[
            "ETag"
        ]
        for n in (1, 2)
    ]
    try:
        client.complete_multipart_upload(
            Bucket=BUCKET,
            Key="mpu/small-parts",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]},
        )
        results["complete_with_1MiB_parts"] = "accepted"
        client.delete_object(Bucket=BUCKET, Key="mpu/small-parts")
    except Exception as exc:
        results["complete_with_1MiB_parts"] = error_text(exc)
        client.abort_multipart_upload(Bucket=BUCKET, Key="mpu/small-parts", UploadId=upload_id)
    return results


@dataclass
class TransferCase:
    """One row of the throughput table."""

    label: str
    transport: str  # "http" or "https"
    checksum: str  # request_checksum_calculation
    sign_payload: Optional[bool]
    config: TransferConfig
    direction: str = "upload"


def throughput_cases() -> List[TransferCase]:
    def parts(chunk: int, threads: int) -> TransferConfig:
        return TransferConfig(multipart_threshold=chunk * MiB, multipart_chunksize=chunk * MiB, max_concurrency=threads)

    cases = [
        TransferCase("default TransferConfig (8 MiB x 10)", "http", "when_required", None, TransferConfig()),
        TransferCase("default TransferConfig (8 MiB x 10)", "http", "when_supported", None, TransferConfig()),
        TransferCase("default TransferConfig, HTTPS", "https", "when_required", None, TransferConfig()),
        TransferCase("default TransferConfig, HTTPS, unsigned", "https", "when_required", False, TransferConfig()),
        TransferCase("64 MiB x 8, HTTPS, unsigned", "https", "when_required", False, parts(64, 8)),
    ]
    cases += [
        TransferCase(f"{chunk} MiB x {threads}", "http", "when_required", None, parts(chunk, threads))
        for chunk in (16, 32, 64)
        for threads in (4, 8, 16)
    ]
    cases += [
        TransferCase("download, default TransferConfig", "http", "when_required", None, TransferConfig(), "download"),
        TransferCase("download, 32 MiB x 8", "http", "when_required", None, parts(32, 8), "download"),
    ]
    return cases


def probe_throughput(rgw: TlsCephRgw, work: Path, size: int, repeats: int) -> List[Dict[str, Any]]:
    """(f) upload_file / download_file of one large file with several TransferConfigs.

    The cases run in ``repeats`` interleaved rounds, so drift (page cache, RGW
    warm-up, a noisy neighbour) spreads over all of them; the table shows medians.
    """
    path = work / "throughput.bin"
    write_random_file(path, size)
    path.read_bytes()  # warm the page cache so the disk is not measured
    target = work / "download.bin"
    cases = throughput_cases()
    samples: List[List[Dict[str, float]]] = [[] for _ in cases]

    def client_for(case: TransferCase) -> Any:
        if case.transport == "https":
            return make_client(
                rgw,
                checksum=case.checksum,
                endpoint=rgw.tls_endpoint,
                verify=str(rgw.tls_certificate),
                sign_payload=case.sign_payload,
            )
        return make_client(rgw, checksum=case.checksum, sign_payload=case.sign_payload)

    reference = make_client(rgw)
    reference.upload_file(str(path), BUCKET, "throughput/download-source")
    for round_number in range(repeats):
        for index, case in enumerate(cases):
            client = client_for(case)
            if case.direction == "download":
                with cpu_meter(rgw) as cost:
                    client.download_file(BUCKET, "throughput/download-source", str(target), Config=case.config)
                target.unlink()
            else:
                with cpu_meter(rgw) as cost:
                    client.upload_file(str(path), BUCKET, "throughput/object", Config=case.config)
                client.delete_object(Bucket=BUCKET, Key="throughput/object")
                collect_garbage(rgw)
            samples[index].append(cost)
        print(f"  round {round_number + 1}/{repeats} done", flush=True)
    reference.delete_object(Bucket=BUCKET, Key="throughput/download-source")

    rows = []
    for case, runs in zip(cases, samples):
        runs.sort(key=lambda run: run["wall_s"])
        median = runs[len(runs) // 2]
        rows.append(
            {
                "case": case.label,
                "direction": case.direction,
                "transport": case.transport,
                "checksum": case.checksum,
                "payload": "unsigned" if case.sign_payload is False else "signed",
                "MiBps_median": round(size / MiB / median["wall_s"], 1),
                "MiBps_all": sorted(round(size / MiB / run["wall_s"], 1) for run in runs),
                **{key: round(value, 2) for key, value in median.items()},
            }
        )
        row = rows[-1]
        print(
            f"  {case.direction:8} {case.label:40} {case.checksum:14} {row['MiBps_median']:7.1f} MiB/s "
            f"(all {row['MiBps_all']})",
            flush=True,
        )
    return rows


def probe_big_copy(rgw: CephRgw, work: Path, size: int) -> Dict[str, Any]:
    """Copy-in-place of an object above S3's 5 GiB single-copy limit: does RGW allow it, and how fast?"""
    path = work / "big.bin"
    md5 = write_random_file(path, size)
    client = make_client(rgw)
    part = 64 * MiB
    started = time.perf_counter()
    client.upload_file(
        str(path),
        BUCKET,
        "big/rootfs",
        Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=8),
    )
    result: Dict[str, Any] = {"size": size, "upload_s": round(time.perf_counter() - started, 1)}
    path.unlink()
    source = {"Bucket": BUCKET, "Key": "big/rootfs"}
    for name, key in (("copy_in_place_replace", "big/rootfs"), ("copy_to_new_key", "big/rootfs-copy")):
        started = time.perf_counter()
        try:
            client.copy_object(
                Bucket=BUCKET, Key=key, CopySource=source, MetadataDirective="REPLACE", Metadata={"md5sum": md5}
            )
            head = client.head_object(Bucket=BUCKET, Key=key)
            result[name] = {
                "accepted": True,
                "seconds": round(time.perf_counter() - started, 3),
                "etag": head["ETag"].strip('"'),
                "metadata": head["Metadata"],
                "size": head["ContentLength"],
            }
        except Exception as exc:
            result[name] = {"accepted": False, "error": error_text(exc)}
    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "big/rootfs"}, {"Key": "big/rootfs-copy"}]})
    collect_garbage(rgw)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-throughput", action="store_true", help="skip the 1 GiB throughput runs")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the copy and throughput objects")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the throughput cases (median is shown)")
    parser.add_argument(
        "--big-copy-gib", type=int, default=0, help="also copy an object of this many GiB in place (needs RAM)"
    )
    parser.add_argument("--memstore-mib", type=int, default=8192, help="memstore capacity for the probe's cluster")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)

    report: Dict[str, Any] = {"boto3": boto3.__version__, "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="rgw-probe-") as tmp:
        work = Path(tmp)
        rgw = TlsCephRgw(work, memstore_bytes=args.memstore_mib * MiB)
        started = time.perf_counter()
        rgw.start()
        report["startup_s"] = round(time.perf_counter() - started, 2)
        try:
            version = rgw._run("radosgw", "--version").stdout.strip()
            report["radosgw"] = version
            print(f"{version}; boto3 {boto3.__version__}; start-up {report['startup_s']} s", flush=True)
            report["checksums"] = probe_checksums(rgw, work)
            report["addressing"] = probe_addressing(rgw)
            report["etags_and_metadata"] = probe_etags_and_metadata(rgw, work, args.size_mib * MiB)
            report["multipart_listing"] = probe_multipart_listing(rgw)
            if args.big_copy_gib:
                report["big_copy"] = probe_big_copy(rgw, work, args.big_copy_gib * GiB)
            if not args.no_throughput:
                report["throughput"] = probe_throughput(rgw, work, args.size_mib * MiB, args.repeats)
        finally:
            report["loadavg_after"] = os.getloadavg()
            started = time.perf_counter()
            rgw.stop()
            report["stop_s"] = round(time.perf_counter() - started, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
