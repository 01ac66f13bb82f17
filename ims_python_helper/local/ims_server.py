"""An IMS-compatible REST server for local runs and tests: the HTTP side.

It serves the image, recipe and job records of the IMS API (``ims-openapi.yaml``)
with the checks a client meets in production: bearer tokens, RFC 7807 problem
bodies, schema validation that names the offending field (:mod:`ims_schema`),
and the S3-backed link validation IMS performs when an image is linked to its
manifest (:mod:`ims_links`). Records persist as JSON files (:mod:`ims_store`),
so a restarted server with the same ``data_dir`` has them all.

``schema="legacy"`` (or ``IMS_LOCAL_SCHEMA=legacy``) makes it behave like IMS
before 3.16: image bodies with fields it does not know, ``metadata`` included,
are refused with 400, and ``GET /version`` reports a 3.15 version.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

# Re-exported: these names lived here before the server was split into modules.
from ims_python_helper.local.errors import ApiProblem
from ims_python_helper.local.ims_api import ImsApi
from ims_python_helper.local.ims_links import MAX_MANIFEST_BYTES, S3LinkChecker
from ims_python_helper.local.ims_schema import SCHEMAS, BodySchema
from ims_python_helper.local.ims_store import COLLECTIONS, RecordStore, utc_now
from ims_python_helper.local.json_http import BackgroundService, JsonRequestHandler, LoopbackHTTPServer
from ims_python_helper.local.vocabulary import API_VERSIONS, CURRENT_SCHEMA, resolve_schema

__all__ = [
    "API_VERSION",
    "MAX_BODY_BYTES",
    "MAX_MANIFEST_BYTES",
    "REQUEST_LOG_NAME",
    "ApiProblem",
    "BodySchema",
    "ImsApi",
    "ImsServer",
    "RecordStore",
    "S3LinkChecker",
]

log = logging.getLogger(__name__)

#: What ``GET /version`` answers with today's schema.
API_VERSION = API_VERSIONS[CURRENT_SCHEMA]
#: Largest request body accepted; IMS records are a few hundred bytes.
MAX_BODY_BYTES = 1024 * 1024
#: Name of the request log inside ``data_dir``.
REQUEST_LOG_NAME = "ims-requests.log"


@dataclass(frozen=True)
class _Route:
    """What a request path names."""

    kind: str  # "collection", "item", "version", "health"
    collection: str = ""
    record_id: str = ""

    @property
    def allowed_methods(self) -> Tuple[str, ...]:
        return {"collection": ("GET", "POST"), "item": ("GET", "PATCH", "DELETE")}.get(self.kind, ("GET",))


def _route(path: str) -> Optional[_Route]:
    parts = [part for part in path.split("/") if part]
    if parts and parts[0] in ("v2", "v3"):
        parts = parts[1:]
    if parts == ["version"]:
        return _Route("version")
    if len(parts) == 2 and parts[0] == "healthz" and parts[1] in ("ready", "live"):
        return _Route("health")
    if parts and parts[0] in COLLECTIONS:
        if len(parts) == 1:
            return _Route("collection", parts[0])
        if len(parts) == 2:
            return _Route("item", parts[0], parts[1])
    return None


class _ImsHandler(JsonRequestHandler):
    """Turns HTTP requests into :class:`ImsApi` calls."""

    def _server(self) -> ImsServer:
        return cast(ImsServer, self.app())

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def after_reply(self, status: int) -> None:
        path = self.request_path() if getattr(self, "path", "") else "-"
        self._server().log_request(self.command or "-", path, status)

    def _dispatch(self) -> None:
        raw_body = self.read_body(MAX_BODY_BYTES)
        if raw_body is None:
            return
        try:
            status, payload = self._handle(raw_body)
        except ApiProblem as problem:
            self.send_problem(problem.status, problem.title, problem.detail, problem.headers)
            return
        except Exception as error:  # a bug here must still produce a reply, not a dropped connection
            log.exception("local IMS failed on %s %s", self.command, self.request_path())
            self.send_problem(500, "Internal Server Error", f"{type(error).__name__}: {error}")
            return
        self.send_json(status, payload)

    def _handle(self, raw_body: bytes) -> Tuple[int, Any]:
        server = self._server()
        route = _route(self.request_path())
        if route is None or route.kind != "health":
            self._authenticate(server)
        if route is None:
            raise ApiProblem(404, f"no such resource: {self.request_path()}")
        if self.command not in route.allowed_methods:
            allowed = ", ".join(route.allowed_methods)
            raise ApiProblem(405, f"{self.command} is not allowed here; use {allowed}", {"Allow": allowed})
        if route.kind == "health":
            return 200, {}
        if route.kind == "version":
            return 200, server.version
        api = server.api
        if self.command == "GET":
            if route.kind == "collection":
                return 200, api.list(route.collection)
            return 200, api.get(route.collection, route.record_id)
        if self.command == "DELETE":
            api.delete(route.collection, route.record_id)
            return 204, None
        body = self._json_object(raw_body)
        if self.command == "POST":
            return 201, api.create(route.collection, body)
        return 200, api.update(route.collection, route.record_id, body)

    def _authenticate(self, server: ImsServer) -> None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and server.token_is_valid(token):
            return
        raise ApiProblem(401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    @staticmethod
    def _json_object(raw_body: bytes) -> Dict[str, Any]:
        if not raw_body.strip():
            raise ApiProblem(400, "the request body is empty; send a JSON object")
        try:
            body = json.loads(raw_body.decode("utf-8"))
        except ValueError as error:
            raise ApiProblem(400, f"the request body is not valid JSON: {error}") from error
        if not isinstance(body, dict):
            raise ApiProblem(400, "the request body must be a JSON object")
        return body


class ImsServer(BackgroundService):
    """A local IMS server: records in ``data_dir``, link checks against an S3 endpoint.

    ``verify_token`` decides which bearer tokens are accepted (typically
    :meth:`TokenSigner.verify`). ``s3_verify`` is passed to boto3 as ``verify``.
    ``schema`` picks the IMS generation to behave like: ``"current"`` or
    ``"legacy"`` (before 3.16); None reads ``IMS_LOCAL_SCHEMA`` (default current).
    """

    def __init__(
        self,
        data_dir: Path,
        s3_endpoint: str,
        s3_access_key: str,
        s3_secret_key: str,
        verify_token: Callable[[str], bool],
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Optional[ssl.SSLContext] = None,
        s3_verify: Union[bool, str] = True,
        schema: Optional[str] = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.schema = resolve_schema(schema)
        self._verify_token = verify_token
        self._links = S3LinkChecker(s3_endpoint, s3_access_key, s3_secret_key, s3_verify)
        self._http = LoopbackHTTPServer(_ImsHandler, self, host, port, ssl_context, name="ims")
        self._log_lock = threading.Lock()
        self._api: Optional[ImsApi] = None

    @property
    def url(self) -> str:
        """Base URL; the API paths (``/images`` ...) hang off it."""
        return self._http.base_url

    @property
    def version(self) -> str:
        """What ``GET /version`` answers: a 3.15 version in legacy mode, a current one otherwise."""
        return API_VERSIONS[self.schema]

    @property
    def api(self) -> ImsApi:
        """The record operations behind the HTTP layer."""
        if self._api is None:
            raise RuntimeError("IMS server is not running")
        return self._api

    @property
    def request_log(self) -> Path:
        """File that gets one line per request: time, method, path, status."""
        return self.data_dir / REQUEST_LOG_NAME

    def start(self) -> None:
        """Load the records and start serving in a daemon thread."""
        if self._http.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._api = ImsApi(RecordStore(self.data_dir), self._links, SCHEMAS[self.schema])
        self._http.start()

    def stop(self) -> None:
        """Stop serving; safe to call twice. Records are already on disk."""
        self._http.stop()
        self._links.close()

    def token_is_valid(self, token: str) -> bool:
        """Ask ``verify_token``; a checker that raises counts as a refusal."""
        try:
            return bool(self._verify_token(token))
        except Exception:
            log.debug("token check raised", exc_info=True)
            return False

    def seed_images(self, count: int, name: str = "seeded") -> List[str]:
        """Store ``count`` image records directly (no HTTP, one write), as a large catalogue; returns their ids.

        Every other one is linked to a manifest path (never checked: these records
        are only there to be listed) and carries metadata as the client writes it.
        """
        records = []
        for number in range(count):
            record: Dict[str, Any] = {"id": str(uuid.uuid4()), "created": utc_now(), "name": f"{name}-{number}"}
            record["arch"] = "x86_64"
            if number % 2:
                record["link"] = {"type": "s3", "path": f"s3://boot-images/{record['id']}/manifest.json", "etag": ""}
            if self.schema == CURRENT_SCHEMA:
                record["metadata"] = {"ims-python-helper-run-key": uuid.uuid4().hex}
            records.append(record)
        self.api.store.put_many("images", records)
        return [r["id"] for r in records]

    def log_request(self, method: str, path: str, status: int) -> None:
        """Append one line to the request log (never headers or bodies: they may hold secrets)."""
        line = f"{utc_now()} {method} {path} {status}\n"
        with self._log_lock:
            try:
                with open(self.request_log, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError:
                log.debug("cannot write %s", self.request_log, exc_info=True)
