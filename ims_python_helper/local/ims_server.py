"""An IMS-compatible REST server for local runs and tests.

It serves the image, recipe and job records of the IMS API (``ims-openapi.yaml``)
with the checks a client meets in production: bearer tokens, RFC 7807 problem
bodies, schema validation that names the offending field, and the S3-backed
link validation IMS performs when an image is linked to its manifest. Records
persist as JSON files so a restarted server with the same ``data_dir`` has
them all.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union, cast

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from ims_python_helper.artifacts import SQUASHFS_ARTIFACT_TYPE
from ims_python_helper.config import ARCHES
from ims_python_helper.helper import JOB_STATUSES
from ims_python_helper.local.token_server import JsonRequestHandler, LoopbackHTTPServer

log = logging.getLogger(__name__)

#: What ``GET /version`` answers.
API_VERSION = "3.20.0-local"
#: Largest request body accepted; IMS records are a few hundred bytes.
MAX_BODY_BYTES = 1024 * 1024
#: Largest manifest the link check reads.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: Name of the request log inside ``data_dir``.
REQUEST_LOG_NAME = "ims-requests.log"

COLLECTIONS = ("images", "recipes", "jobs")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ApiProblem(Exception):
    """A request that ends in an RFC 7807 problem reply."""

    TITLES = {
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        422: "Unprocessable Entity",
        500: "Internal Server Error",
    }

    def __init__(self, status: int, detail: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = self.TITLES.get(status, "Error")
        self.detail = detail
        self.headers = dict(headers or {})


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- persistence


class RecordStore:
    """The image, recipe and job records, one JSON file per collection.

    Every change rewrites its collection's file through a temp file and
    ``os.replace``, so a crash leaves either the old or the new file, never half
    of one. ``lock`` serialises changes; hold it across a read-check-write.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lock = threading.RLock()
        self._records: Dict[str, Dict[str, Dict[str, Any]]] = {name: self._load(name) for name in COLLECTIONS}

    def _path(self, collection: str) -> Path:
        return self.data_dir / f"ims-{collection}.json"

    def _load(self, collection: str) -> Dict[str, Dict[str, Any]]:
        path = self._path(collection)
        if not path.exists():
            return {}
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            # Refuse to start rather than silently start empty and overwrite the file.
            raise RuntimeError(f"IMS record file {path} is not valid JSON: {error}") from error
        if not isinstance(records, list) or not all(isinstance(r, dict) and "id" in r for r in records):
            raise RuntimeError(f"IMS record file {path} does not hold a JSON list of records with ids")
        return {record["id"]: record for record in records}

    def _save(self, collection: str) -> None:
        path = self._path(collection)
        payload = json.dumps(list(self._records[collection].values()), indent=1)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(self.data_dir))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, path)
        except BaseException:
            try:
                os.unlink(temp_name)
            except OSError:
                pass
            raise

    def list(self, collection: str) -> List[Dict[str, Any]]:
        """Copies of every record in ``collection``, oldest first."""
        with self.lock:
            return copy.deepcopy(list(self._records[collection].values()))

    def get(self, collection: str, record_id: str) -> Optional[Dict[str, Any]]:
        """A copy of one record, or None."""
        with self.lock:
            record = self._records[collection].get(record_id)
            return copy.deepcopy(record) if record is not None else None

    def put(self, collection: str, record: Dict[str, Any]) -> None:
        """Create or replace a record and persist the collection."""
        with self.lock:
            self._records[collection][record["id"]] = copy.deepcopy(record)
            self._save(collection)

    def delete(self, collection: str, record_id: str) -> bool:
        """Remove a record; False when there was none."""
        with self.lock:
            if self._records[collection].pop(record_id, None) is None:
                return False
            self._save(collection)
            return True

    def owner_of_link(self, collection: str, path: str, exclude_id: Optional[str] = None) -> Optional[str]:
        """Id of the record in ``collection`` whose link path is ``path``, if any."""
        with self.lock:
            for record_id, record in self._records[collection].items():
                link = record.get("link")
                if record_id != exclude_id and isinstance(link, dict) and link.get("path") == path:
                    return record_id
        return None


# --------------------------------------------------------------------------- validation

FieldCheck = Callable[[str, Any], Any]


def _fail(detail: str) -> ApiProblem:
    return ApiProblem(422, detail)


def _string(non_empty: bool = True) -> FieldCheck:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise _fail(f"field '{name}' must be a string")
        if non_empty and not value:
            raise _fail(f"field '{name}' must not be empty")
        return value

    return check


def _choice(*choices: str) -> FieldCheck:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise _fail(f"field '{name}' must be one of {', '.join(choices)}; got {json.dumps(value)}")
        return value

    return check


def _boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise _fail(f"field '{name}' must be true or false")
    return value


def _uuid(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise _fail(f"field '{name}' must be a UUID string")
    return value


def _positive_int(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(f"field '{name}' must be an integer of at least 1")
    return value


def _object(name: str, value: Any, required: Tuple[str, ...], optional: Tuple[str, ...]) -> Dict[str, str]:
    """An object whose members are all strings, with exactly the named members allowed."""
    if not isinstance(value, dict):
        raise _fail(f"field '{name}' must be an object")
    for key in value:
        if key not in required and key not in optional:
            raise _fail(f"unknown field '{name}.{key}'")
    for key in required:
        if key not in value:
            raise _fail(f"field '{name}' is missing '{key}'")
    for key, member in value.items():
        if not isinstance(member, str):
            raise _fail(f"field '{name}.{key}' must be a string")
    return dict(value)


def _link(name: str, value: Any) -> Any:
    link = _object(name, value, ("path", "type"), ("etag",))
    if not link["path"] or not link["type"]:
        raise _fail(f"field '{name}' needs a non-empty 'path' and 'type'")
    return link


def _string_map(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _fail(f"field '{name}' must be an object of string values")
    return dict(value)


def _metadata_operation(name: str, value: Any) -> Any:
    operation = _object(name, value, ("operation", "key"), ("value",))
    if operation["operation"] not in ("set", "remove"):
        raise _fail(f"field '{name}.operation' must be one of set, remove")
    if operation["operation"] == "set" and "value" not in operation:
        raise _fail(f"field '{name}' needs a 'value' for operation 'set'")
    return operation


def _key_value_list(name: str, value: Any) -> Any:
    if not isinstance(value, list):
        raise _fail(f"field '{name}' must be a list of {{key, value}} objects")
    return [_object(f"{name}[{index}]", item, ("key", "value"), ()) for index, item in enumerate(value)]


def _ssh_containers(name: str, value: Any) -> Any:
    if not isinstance(value, list):
        raise _fail(f"field '{name}' must be a list")
    containers = []
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise _fail(f"field '{where}' must be an object")
        for key in item:
            if key not in ("name", "jail"):
                raise _fail(f"unknown field '{where}.{key}'")
        if not isinstance(item.get("name"), str) or not 1 <= len(item["name"]) <= 40:
            raise _fail(f"field '{where}.name' must be a string of 1 to 40 characters")
        if not isinstance(item.get("jail"), bool):
            raise _fail(f"field '{where}.jail' must be true or false")
        containers.append(dict(item))
    return containers


@dataclass(frozen=True)
class BodySchema:
    """What a POST or PATCH body may hold."""

    fields: Dict[str, FieldCheck]
    required: Tuple[str, ...] = ()
    read_only: Tuple[str, ...] = ("id", "created")
    defaults: Dict[str, Any] = field(default_factory=dict)

    def validate(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Return the checked fields with defaults filled in, or raise a 422 problem."""
        for name in body:
            if name in self.read_only:
                raise _fail(f"field '{name}' is read-only")
            if name not in self.fields:
                raise _fail(f"unknown field '{name}'")
        for name in self.required:
            if name not in body:
                raise _fail(f"missing required field '{name}'")
        checked = copy.deepcopy(self.defaults)
        for name, value in body.items():
            checked[name] = self.fields[name](name, value)
        return checked


IMAGE_CREATE = BodySchema(
    fields={"name": _string(), "arch": _choice(*ARCHES), "link": _link, "metadata": _string_map},
    required=("name",),
    defaults={"arch": "x86_64"},
)
IMAGE_PATCH = BodySchema(fields={"link": _link, "arch": _choice(*ARCHES), "metadata": _metadata_operation})
RECIPE_CREATE = BodySchema(
    fields={
        "name": _string(),
        "recipe_type": _choice("kiwi-ng", "packer"),
        "linux_distribution": _choice("sles12", "sles15", "centos7"),
        "template_dictionary": _key_value_list,
        "arch": _choice(*ARCHES),
        "require_dkms": _boolean,
        "link": _link,
    },
    required=("name", "recipe_type", "linux_distribution"),
    defaults={"arch": "x86_64", "require_dkms": False, "template_dictionary": []},
)
RECIPE_PATCH = BodySchema(
    fields={
        "link": _link,
        "arch": _choice(*ARCHES),
        "require_dkms": _boolean,
        "template_dictionary": _key_value_list,
    }
)
JOB_CREATE = BodySchema(
    fields={
        "job_type": _choice("create", "customize"),
        "artifact_id": _uuid,
        "public_key_id": _uuid,
        "image_root_archive_name": _string(),
        "kernel_file_name": _string(),
        "initrd_file_name": _string(),
        "kernel_parameters_file_name": _string(),
        "enable_debug": _boolean,
        "build_env_size": _positive_int,
        "require_dkms": _boolean,
        "ssh_containers": _ssh_containers,
    },
    required=("job_type", "artifact_id", "public_key_id", "image_root_archive_name"),
    read_only=(
        "id",
        "created",
        "status",
        "resultant_image_id",
        "arch",
        "kubernetes_job",
        "kubernetes_service",
        "kubernetes_configmap",
        "kubernetes_namespace",
    ),
    # The defaults the spec documents for a new job.
    defaults={
        "initrd_file_name": "initrd",
        "kernel_parameters_file_name": "kernel-parameters",
        "enable_debug": False,
        "build_env_size": 15,
        "kubernetes_namespace": "default",
    },
)
JOB_PATCH = BodySchema(fields={"resultant_image_id": _uuid, "status": _choice(*JOB_STATUSES)})

_SCHEMAS: Dict[Tuple[str, str], BodySchema] = {
    ("images", "POST"): IMAGE_CREATE,
    ("images", "PATCH"): IMAGE_PATCH,
    ("recipes", "POST"): RECIPE_CREATE,
    ("recipes", "PATCH"): RECIPE_PATCH,
    ("jobs", "POST"): JOB_CREATE,
    ("jobs", "PATCH"): JOB_PATCH,
}


# --------------------------------------------------------------------------- S3 link checks


def _split_s3_path(path: str, what: str) -> Tuple[str, str]:
    if not path.startswith("s3://"):
        raise _fail(f"{what} path {path!r} is not of the form s3://BUCKET/KEY")
    bucket, _, key = path[len("s3://") :].partition("/")
    if not bucket or not key:
        raise _fail(f"{what} path {path!r} is not of the form s3://BUCKET/KEY")
    return bucket, key


_boto_session: Any = None
_boto_session_lock = threading.RLock()


def _shared_boto_session() -> Any:
    """The boto3 session every checker in this process makes its client from.

    The session caches the parsed S3 service model, so each further client takes
    milliseconds instead of a few hundred.
    """
    global _boto_session
    with _boto_session_lock:
        if _boto_session is None:
            _boto_session = boto3.session.Session()
        return _boto_session


class S3LinkChecker:
    """Checks links against the S3 server the way IMS does before it accepts them."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, verify: Union[bool, str] = True) -> None:
        self._endpoint = endpoint
        self._access_key = access_key
        self._secret_key = secret_key
        self._verify = verify
        self._client: Any = None
        self._client_lock = threading.Lock()

    def client(self) -> Any:
        """The boto3 S3 client, made on first use."""
        with self._client_lock:
            if self._client is None:
                config = Config(
                    # Checksums off unless required: what Ceph RGW understands (see ims-facts.md).
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"},
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": 2, "mode": "standard"},
                )
                # Session.client() is not thread-safe; the module lock serialises it.
                with _boto_session_lock:
                    self._client = _shared_boto_session().client(
                        "s3",
                        endpoint_url=self._endpoint,
                        aws_access_key_id=self._access_key,
                        aws_secret_access_key=self._secret_key,
                        region_name="us-east-1",
                        verify=self._verify,
                        config=config,
                    )
            return self._client

    def close(self) -> None:
        """Release the client's connections."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def check_image_manifest(self, link: Dict[str, str]) -> None:
        """Raise a 422 problem unless ``link`` names a valid version 1.0 image manifest."""
        path = link["path"]
        manifest = self._read_manifest(link)
        if not isinstance(manifest, dict):
            raise _fail(f"manifest {path} must be a JSON object")
        if manifest.get("version") != "1.0":
            raise _fail(f'manifest {path} has version {json.dumps(manifest.get("version"))}; IMS requires "1.0"')
        artifacts = manifest.get("artifacts")
        if not isinstance(artifacts, list):
            raise _fail(f"manifest {path} has no 'artifacts' list")
        artifact_paths = []
        for index, entry in enumerate(artifacts):
            if not isinstance(entry, dict) or not isinstance(entry.get("link"), dict):
                raise _fail(f"manifest {path} artifact {index} has no 'link' object")
            artifact_link = entry["link"]
            if not isinstance(artifact_link.get("type"), str) or not isinstance(artifact_link.get("path"), str):
                raise _fail(f"manifest {path} artifact {index} link needs string 'type' and 'path'")
            if artifact_link["type"] != "s3":
                raise _fail(f"manifest {path} artifact {index} link type is {artifact_link['type']!r}, not 's3'")
            artifact_paths.append(artifact_link["path"])
        rootfs_count = sum(1 for entry in artifacts if entry.get("type") == SQUASHFS_ARTIFACT_TYPE)
        if rootfs_count != 1:
            raise _fail(
                f"manifest {path} must list exactly one {SQUASHFS_ARTIFACT_TYPE} artifact; found {rootfs_count}"
            )
        for artifact_path in artifact_paths:
            self._require_object(artifact_path, "artifact")

    def check_recipe_object(self, link: Dict[str, str]) -> None:
        """Raise a 422 problem unless ``link`` names an existing S3 object."""
        if link["type"] != "s3":
            raise _fail(f"link type is {link['type']!r}; only 's3' links are supported")
        self._require_object(link["path"], "recipe")

    def _read_manifest(self, link: Dict[str, str]) -> Any:
        path = link["path"]
        if link["type"] != "s3":
            raise _fail(f"link type is {link['type']!r}; only 's3' links are supported")
        bucket, key = _split_s3_path(path, "manifest")
        try:
            response = self.client().get_object(Bucket=bucket, Key=key)
            if response.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
                response["Body"].close()
                raise _fail(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
            data = response["Body"].read()
        except ClientError as error:
            raise self._client_problem(error, f"manifest {path}") from error
        except BotoCoreError as error:
            raise ApiProblem(500, f"could not read manifest {path} from S3: {error}") from error
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as error:
            raise _fail(f"manifest {path} is not valid JSON") from error

    def _require_object(self, path: str, what: str) -> None:
        bucket, key = _split_s3_path(path, what)
        try:
            self.client().head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise self._client_problem(error, f"{what} {path}") from error
        except BotoCoreError as error:
            raise ApiProblem(500, f"could not check {what} {path} in S3: {error}") from error

    @staticmethod
    def _client_problem(error: ClientError, what: str) -> ApiProblem:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return _fail(f"{what} does not exist")
        return _fail(f"{what} cannot be read from S3 ({code or 'error'})")


# --------------------------------------------------------------------------- the API


class ImsApi:
    """The IMS operations on records, independent of HTTP.

    Each method returns a JSON-ready result or raises :class:`ApiProblem`.
    """

    def __init__(self, store: RecordStore, links: S3LinkChecker) -> None:
        self.store = store
        self.links = links

    def list(self, collection: str) -> List[Dict[str, Any]]:
        """Every record of a collection."""
        return self.store.list(collection)

    def get(self, collection: str, record_id: str) -> Dict[str, Any]:
        """One record, or a 404 problem."""
        record = self.store.get(collection, record_id)
        if record is None:
            raise ApiProblem(404, f"no {collection[:-1]} record with id {record_id}")
        return record

    def create(self, collection: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Validate ``body`` and store it as a new record."""
        fields = _SCHEMAS[(collection, "POST")].validate(body)
        link = fields.get("link")
        if link is not None:
            self._check_link_unique(collection, link, None)
            self._check_link_target(collection, link)
        record: Dict[str, Any] = {"id": str(uuid.uuid4()), "created": _utc_now()}
        if collection == "jobs":
            record.update({"status": "creating", "arch": "x86_64"})
        record.update(fields)
        with self.store.lock:
            if link is not None:
                # Checked again under the lock: another request may have taken the link meanwhile.
                self._check_link_unique(collection, link, None)
            self.store.put(collection, record)
        return record

    def update(self, collection: str, record_id: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Apply a PATCH body to a record and return the result."""
        changes = _SCHEMAS[(collection, "PATCH")].validate(body)
        if not changes:
            raise ApiProblem(400, "the PATCH body names no field to update")
        link = changes.get("link")
        if link is not None and self._link_changes(collection, self.get(collection, record_id), link):
            # The S3 checks run outside the lock so a slow S3 does not stall every other request.
            self._check_link_target(collection, link)
        with self.store.lock:
            record = self.get(collection, record_id)
            if link is not None and not self._link_changes(collection, record, link):
                changes.pop("link")
            metadata_operation = changes.pop("metadata", None) if collection == "images" else None
            record.update(changes)
            if metadata_operation is not None:
                metadata = record.setdefault("metadata", {})
                if metadata_operation["operation"] == "set":
                    metadata[metadata_operation["key"]] = metadata_operation["value"]
                else:
                    metadata.pop(metadata_operation["key"], None)
            self.store.put(collection, record)
        return record

    def delete(self, collection: str, record_id: str) -> None:
        """Remove a record, or raise a 404 problem."""
        if not self.store.delete(collection, record_id):
            raise ApiProblem(404, f"no {collection[:-1]} record with id {record_id}")

    def _link_changes(self, collection: str, record: Dict[str, Any], link: Dict[str, str]) -> bool:
        """True when ``link`` must be set on ``record``; raise 409 when it may not be."""
        current = record.get("link")
        if current == link:
            return False
        if current:
            raise ApiProblem(
                409,
                f"{collection[:-1]} {record['id']} is already linked to {current.get('path')}; "
                "a linked record cannot be given a different link",
            )
        self._check_link_unique(collection, link, record["id"])
        return True

    def _check_link_unique(self, collection: str, link: Dict[str, str], record_id: Optional[str]) -> None:
        owner = self.store.owner_of_link(collection, link["path"], exclude_id=record_id)
        if owner is not None:
            raise ApiProblem(409, f"link {link['path']} already belongs to {collection[:-1]} {owner}")

    def _check_link_target(self, collection: str, link: Dict[str, str]) -> None:
        if collection == "images":
            self.links.check_image_manifest(link)
        elif collection == "recipes":
            self.links.check_recipe_object(link)


# --------------------------------------------------------------------------- HTTP


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
            return 200, API_VERSION
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


class ImsServer:
    """A local IMS server: records in ``data_dir``, link checks against an S3 endpoint.

    ``verify_token`` decides which bearer tokens are accepted (typically
    :meth:`TokenSigner.verify`). ``s3_verify`` is passed to boto3 as ``verify``.
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
    ) -> None:
        self.data_dir = Path(data_dir)
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
        self._api = ImsApi(RecordStore(self.data_dir), self._links)
        self._http.start()

    def stop(self) -> None:
        """Stop serving; safe to call twice. Records are already on disk."""
        self._http.stop()
        self._links.close()

    def __enter__(self) -> ImsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token_is_valid(self, token: str) -> bool:
        """Ask ``verify_token``; a checker that raises counts as a refusal."""
        try:
            return bool(self._verify_token(token))
        except Exception:
            log.debug("token check raised", exc_info=True)
            return False

    def log_request(self, method: str, path: str, status: int) -> None:
        """Append one line to the request log (never headers or bodies: they may hold secrets)."""
        line = f"{_utc_now()} {method} {path} {status}\n"
        with self._log_lock:
            try:
                with open(self.request_log, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError:
                log.debug("cannot write %s", self.request_log, exc_info=True)
