"""Shared fixtures for the local stack tests: one moto S3 server per session, real HTTP everywhere."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from ims_python_helper.artifacts import KERNEL_ARTIFACT_TYPE, SQUASHFS_ARTIFACT_TYPE
from ims_python_helper.local.ims_server import ImsServer
from ims_python_helper.local.moto_s3 import MotoS3
from ims_python_helper.local.token_server import TokenServer
from ims_python_helper.local.tokens import TokenSigner
from tests.support import CLIENT_ID, CLIENT_SECRET, Client, ImsClient, StoreManifest, s3_client_for


@pytest.fixture
def client() -> Client:
    """The client id and secret ``token_server`` accepts."""
    return Client()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server shared by the whole session (start-up is the slow part)."""
    with MotoS3(tmp_path_factory.mktemp("moto")) as backend:
        yield backend


@pytest.fixture(scope="session")
def s3_client(moto: MotoS3) -> Any:
    """A boto3 client for the session's moto server."""
    return s3_client_for(moto)


@pytest.fixture
def signer() -> TokenSigner:
    """A signer with a fresh random key."""
    return TokenSigner(secrets.token_bytes(32))


@pytest.fixture
def token_server(signer: TokenSigner) -> Iterator[TokenServer]:
    """A running token endpoint that knows one client."""
    with TokenServer({CLIENT_ID: CLIENT_SECRET}, signer, lifetime=120) as server:
        yield server


@pytest.fixture
def ims_factory(moto: MotoS3, signer: TokenSigner) -> Iterator[Callable[..., ImsServer]]:
    """Starts IMS servers on a data directory; all are stopped after the test.

    ``schema`` picks the IMS generation: today's unless named (None reads ``IMS_LOCAL_SCHEMA``),
    so these tests check the same server however the environment sets the stack's default.
    """
    started: List[ImsServer] = []

    def start(data_dir: Path, schema: Optional[str] = "current") -> ImsServer:
        server = ImsServer(data_dir, moto.endpoint, moto.access_key, moto.secret_key, signer.verify, schema=schema)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def ims_server(ims_factory: Callable[..., ImsServer], tmp_path: Path) -> ImsServer:
    """A running IMS server with an empty data directory."""
    return ims_factory(tmp_path / "ims")


@pytest.fixture
def ims(ims_server: ImsServer, signer: TokenSigner) -> Iterator[ImsClient]:
    """A client of ``ims_server`` holding a valid token."""
    client = ImsClient(ims_server.url, signer.issue(CLIENT_ID, 120))
    yield client
    client.session.close()


@pytest.fixture
def store_manifest(s3_client: Any) -> StoreManifest:
    """Uploads artifacts and a manifest for an image id the way the client does; returns the manifest link.

    Keyword arguments bend the manifest for negative tests: ``manifest`` replaces
    it wholesale (a dict is JSON-encoded, bytes are stored as is), ``skip_upload``
    names artifact keys listed in the manifest but never uploaded, ``extra_rootfs``
    adds a second rootfs entry.
    """

    def publish_image(
        image_id: str,
        manifest: Optional[Any] = None,
        skip_upload: tuple = (),
        extra_rootfs: bool = False,
    ) -> Dict[str, str]:
        bucket = "boot-images"
        artifacts = [
            ("rootfs", SQUASHFS_ARTIFACT_TYPE, b"squashfs bytes"),
            ("kernel", KERNEL_ARTIFACT_TYPE, b"vmlinuz"),
        ]
        if extra_rootfs:
            artifacts.append(("rootfs2", SQUASHFS_ARTIFACT_TYPE, b"another rootfs"))
        entries = []
        for key, mime_type, data in artifacts:
            path = f"s3://{bucket}/{image_id}/{key}"
            etag = hashlib.md5(data).hexdigest()
            if key not in skip_upload:
                etag = s3_client.put_object(Bucket=bucket, Key=f"{image_id}/{key}", Body=data)["ETag"].strip('"')
            entries.append({"link": {"path": path, "etag": etag, "type": "s3"}, "type": mime_type, "md5": etag})
        if manifest is None:
            manifest = {"version": "1.0", "created": "2024-01-01T00:00:00Z", "artifacts": entries}
        manifest_bytes = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        key = f"{image_id}/manifest.json"
        etag = s3_client.put_object(Bucket=bucket, Key=key, Body=manifest_bytes)["ETag"].strip('"')
        return {"path": f"s3://{bucket}/{key}", "etag": etag, "type": "s3"}

    return publish_image
