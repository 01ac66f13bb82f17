"""The whole local stack in one object: S3, a token endpoint and IMS, plus a job to publish into.

    with LocalStack() as stack:
        os.environ.update(stack.env())
        ...  # run the client against it

The token and IMS servers run in threads of this process; S3 runs as a child
process (moto) or a set of Ceph daemons.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, TypeVar, Union

import requests

from ims_python_helper.local.errors import undone_on_error
from ims_python_helper.local.ims_server import ImsServer
from ims_python_helper.local.moto_s3 import MotoS3, persistent_secret
from ims_python_helper.local.s3backend import S3Backend
from ims_python_helper.local.tls import LocalCA, TlsRelay
from ims_python_helper.local.token_server import TokenServer
from ims_python_helper.local.tokens import TokenSigner
from ims_python_helper.local.vocabulary import resolve_schema

log = logging.getLogger(__name__)

_Part = TypeVar("_Part")

#: OAuth2 client id the stack registers.
CLIENT_ID = "ims-local-client"
#: Bucket clients are told to publish images into.
IMAGE_BUCKET = "boot-images"
#: S3 engines ``LocalStack(s3=...)`` accepts.
S3_ENGINES = ("moto", "ceph", "auto")


def _ceph_module() -> Optional[Any]:
    """The Ceph launcher module, or None when it is not installed in this tree."""
    try:
        return importlib.import_module("ims_python_helper.local.ceph")
    except ImportError:
        return None


class LocalStack:
    """Starts and stops S3, the token endpoint and IMS together.

    ``data_dir`` holds the records, logs and the persisted secrets (client
    secret, token signing key, S3 secret), so restarting with the same
    directory gives the same credentials and earlier tokens stay valid. With no
    ``data_dir`` a temporary one is made and removed by stop().

    ``s3`` picks the engine: ``"moto"``, ``"ceph"`` or ``"auto"`` (Ceph when
    its daemons are installed, else moto). An ``s3_backend`` passed in is used
    as is: the caller has started it and stops it; the stack does neither. Ceph's object store
    is ``ceph_store`` (``"bluestore"``, on disk; ``"memstore"``, in RAM, also
    chosen by ``memstore_bytes``); None reads ``IMS_LOCAL_CEPH_STORE``, else bluestore.

    With ``tls`` every endpoint speaks HTTPS with a certificate from a test CA
    kept in ``data_dir/tls`` (``ca_path``): IMS and the token endpoint directly,
    S3 through a TLS relay in front of the engine; ``env()`` then also exports
    ``CA_CERT`` and ``S3_SSL_VERIFY`` pointing at the CA.

    ``ims_schema`` picks the IMS generation the local IMS behaves like:
    ``"current"``, or ``"legacy"`` for IMS before 3.16 (no image metadata,
    unknown image fields refused with 400); None reads ``IMS_LOCAL_SCHEMA``.
    """

    def __init__(
        self,
        data_dir: Optional[Path] = None,
        s3: str = "moto",
        token_lifetime: int = 300,
        s3_backend: Optional[S3Backend] = None,
        memstore_bytes: Optional[int] = None,
        tls: bool = False,
        ims_schema: Optional[str] = None,
        ceph_store: Optional[str] = None,
    ) -> None:
        if s3 not in S3_ENGINES:
            raise ValueError(f"unknown S3 engine {s3!r}; choose one of {', '.join(S3_ENGINES)}")
        #: The IMS generation the local IMS behaves like (``current`` or ``legacy``).
        self.ims_schema = resolve_schema(ims_schema)
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._engine = s3
        self._token_lifetime = token_lifetime
        self._memstore_bytes = memstore_bytes
        self._ceph_store = ceph_store
        self._owns_s3 = s3_backend is None
        self.s3: Optional[S3Backend] = s3_backend
        self.tokens: Optional[TokenServer] = None
        self.ims: Optional[ImsServer] = None
        self.signer: Optional[TokenSigner] = None
        self.tls = tls
        #: The test CA's certificate (PEM) when ``tls``; clients pass it as --cert / CA_CERT / S3_SSL_VERIFY.
        self.ca_path: Optional[Path] = None
        #: The HTTPS front of the S3 engine when ``tls``.
        self.s3_relay: Optional[TlsRelay] = None
        self.job_id = ""
        self.client_id = CLIENT_ID
        self.client_secret = ""
        #: The directory in use; a fresh temporary one is chosen by start() when none was given.
        self.data_dir: Path = self._given_data_dir or Path(tempfile.gettempdir())
        self._temp_dir: Optional[Path] = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start S3, the token endpoint and IMS, then create the job record."""
        if self._running:
            return
        if self._given_data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="ims-local-"))
            self.data_dir = self._temp_dir
        else:
            self.data_dir = self._given_data_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self._running = True
        with undone_on_error(self.stop):
            self.client_secret = persistent_secret(self.data_dir / "oauth-client-secret")
            signing_key = persistent_secret(self.data_dir / "token-signing-key").encode("utf-8")
            self.signer = TokenSigner(signing_key)
            context = None
            if self.tls:
                ca = LocalCA(self.data_dir / "tls")
                self.ca_path = ca.ca_path
                context = ca.server_context()

            if self._owns_s3:
                self.s3 = self._make_s3_backend()
                self.s3.start()
            s3 = self._require(self.s3)
            if context is not None:
                self.s3_relay = TlsRelay(s3.endpoint, context)
                self.s3_relay.start()

            self.tokens = TokenServer(
                {CLIENT_ID: self.client_secret}, self.signer, lifetime=self._token_lifetime, ssl_context=context
            )
            self.tokens.start()
            # IMS checks links against the engine directly: that traffic never leaves the machine.
            self.ims = ImsServer(
                self.data_dir,
                s3.endpoint,
                s3.access_key,
                s3.secret_key,
                self.signer.verify,
                ssl_context=context,
                schema=self.ims_schema,
            )
            self.ims.start()
            self.job_id = self._create_job()

    def stop(self) -> None:
        """Stop IMS, the token endpoint and S3 (in that order); safe to call twice."""
        if not self._running:
            return
        self._running = False
        for server in (self.ims, self.tokens):
            if server is not None:
                try:
                    server.stop()
                except Exception:
                    log.warning("stopping a local server failed", exc_info=True)
        if self.s3_relay is not None:
            self.s3_relay.stop()
            self.s3_relay = None
        if self._owns_s3 and self.s3 is not None:
            try:
                self.s3.stop()
            except Exception:
                log.warning("stopping the %s S3 server failed", self.s3.name, exc_info=True)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what clients need

    def env(self) -> Dict[str, str]:
        """The environment variables that point the client at this stack."""
        ims, tokens, s3 = self._require(self.ims), self._require(self.tokens), self._require(self.s3)
        env = {
            "IMS_URL": ims.url,
            "OAUTH_CLIENT_ID": self.client_id,
            "OAUTH_CLIENT_SECRET": self.client_secret,
            "OAUTH_CLIENT_ENDPOINT": tokens.url,
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_ACCESS_KEY": s3.access_key,
            "S3_SECRET_KEY": s3.secret_key,
            "S3_BUCKET": IMAGE_BUCKET,
            "IMS_JOB_ID": self.job_id,
        }
        if self.ca_path is not None:
            env["CA_CERT"] = str(self.ca_path)
            env["S3_SSL_VERIFY"] = str(self.ca_path)
        return env

    @property
    def s3_endpoint(self) -> str:
        """The S3 URL clients use: the TLS relay's with ``tls``, else the engine's own."""
        s3 = self._require(self.s3)
        return self.s3_relay.endpoint if self.s3_relay is not None else s3.endpoint

    @property
    def verify(self) -> Union[bool, str]:
        """What to pass as requests' ``verify`` when talking to this stack."""
        return str(self.ca_path) if self.ca_path is not None else True

    def issue_token(self, lifetime: Optional[int] = None) -> str:
        """A bearer token for the stack's client, made without a round trip to the token endpoint."""
        signer = self._require(self.signer)
        return signer.issue(self.client_id, self._token_lifetime if lifetime is None else lifetime)

    # ------------------------------------------------------------------ internals

    def _make_s3_backend(self) -> S3Backend:
        engine = self._engine
        ceph = _ceph_module() if engine in ("ceph", "auto") else None
        if engine == "auto":
            engine = "ceph" if ceph is not None and ceph.ceph_available() else "moto"
        if engine == "ceph":
            if ceph is None:
                raise RuntimeError("the Ceph launcher (ims_python_helper.local.ceph) is not available")
            backend: S3Backend = ceph.CephRgw(
                self.data_dir, memstore_bytes=self._memstore_bytes, store=self._ceph_store
            )
            return backend
        return MotoS3(self.data_dir)

    def _create_job(self) -> str:
        ims = self._require(self.ims)
        body = {
            "job_type": "create",
            "artifact_id": str(uuid.uuid4()),
            "public_key_id": str(uuid.uuid4()),
            "image_root_archive_name": "local-stack",
        }
        # Through the HTTP API, so a broken server shows up at start-up, not in the client.
        response = requests.post(
            f"{ims.url}/jobs",
            json=body,
            headers={"Authorization": f"Bearer {self.issue_token(60)}"},
            timeout=10,
            verify=self.verify,
        )
        if response.status_code != 201:
            raise RuntimeError(f"local IMS refused to create the job record: HTTP {response.status_code}")
        return str(response.json()["id"])

    def _require(self, part: Optional[_Part]) -> _Part:
        if part is None or not self._running:
            raise RuntimeError("the local stack is not running; call start() first")
        return part
