"""The IMS REST client: one method per IMS call, each returning the decoded JSON record."""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import requests

from ..errors import DeadlineExceeded, ImsAnswerError, ImsApiError, ImsConnectionError, ImsHelperError, TransportError
from ..vocabulary import JOB_METADATA_KEY, RUN_METADATA_KEY  # noqa: F401  (callers import both from here)
from .deadline import Deadline
from .oauth import TRANSIENT_STATUSES
from .redact import redact
from .transport import DEFAULT_TIMEOUT, check_url, describe_request_error, tls_failure_message

LOGGER = logging.getLogger(__name__)

Record = Dict[str, Any]
#: Image metadata as IMS 3.16 and later keep it (string keys and values).
Metadata = Dict[str, str]


#: Largest IMS answer we are willing to decode.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: How many times a create is attempted when the network or a gateway fails.
CREATE_ATTEMPTS = 5


class ImsClient:
    """Calls the IMS REST API with a prepared session (token, TLS and retries are the session's business)."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: Optional[Deadline] = None,
    ) -> None:
        check_url(base_url, "IMS URL")
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.deadline = deadline or Deadline(None)
        #: Whether IMS keeps image ``metadata``: None until a create shows it, False for IMS before 3.16.
        self.image_metadata: Optional[bool] = None

    def __repr__(self) -> str:
        return f"<ImsClient {self.base_url}>"

    # -- plumbing ---------------------------------------------------------

    def _call(self, method: str, path: str, body: Optional[Record] = None, expect: type = dict) -> Any:
        url = f"{self.base_url}{path}"
        self.deadline.check(f"calling IMS {method} {path}")
        try:
            # Streamed, so an oversized answer is cut off at MAX_RESPONSE_BYTES instead of filling memory.
            response = self.session.request(
                method, url, json=body, timeout=self.deadline.cap(self.timeout), stream=True
            )
            read_body(response, f"IMS {method} {path}")
        except ImsHelperError:  # ours already (an oversized answer, the token endpoint): no second wrapping
            raise
        except requests.exceptions.SSLError as err:
            raise ImsConnectionError(tls_failure_message(url, getattr(self.session, "verify", True), err)) from None
        except requests.exceptions.RequestException as err:
            # Retries cut short by the run's deadline say so, rather than "connection failed".
            self.deadline.check(f"calling IMS {method} {path} at {self.base_url} ({describe_request_error(err)})")
            raise ImsConnectionError(
                f"cannot reach IMS at {self.base_url} ({method} {path}): {describe_request_error(err)}"
            ) from None
        if response.status_code >= 400:
            raise ImsApiError(method, path, response.status_code, problem_detail(response), response=response)
        if response.status_code == 204 or expect is type(None):
            return None
        return decode_json(response, f"IMS {method} {path}", expect)

    # -- service ------------------------------------------------------------

    def version(self) -> str:
        """IMS's version string (also proves IMS is reachable and the token is accepted)."""
        value = self._call("GET", "/version", expect=object)
        return value if isinstance(value, str) else json.dumps(value)

    # -- images ---------------------------------------------------------------

    def list_images(self) -> List[Record]:
        """Every image record."""
        return _records(self._call("GET", "/images", expect=list), "IMS GET /images")

    def get_image(self, image_id: str) -> Record:
        """One image record."""
        return dict(self._call("GET", f"/images/{image_id}"))

    def create_image(
        self, name: str, arch: Optional[str] = None, metadata: Optional[Metadata] = None, since: Optional[str] = None
    ) -> Record:
        """Create an image record.

        With ``metadata`` carrying a run key the create is safe to repeat: after a
        transient failure the records are searched for that key before trying again,
        so a POST that did land is not made twice. IMS before 3.16 refuses
        ``metadata`` with a 400 naming it; then the record is created without it
        (remembered for the rest of the run), and ``since`` (an IMS time) lets a
        repeat find the record instead: same name, no link, created since then.
        """
        body: Record = {"name": name}
        if arch:
            body["arch"] = arch
        if metadata and self.image_metadata is not False:
            body["metadata"] = dict(metadata)
        run_key = (metadata or {}).get(RUN_METADATA_KEY)
        try:
            return self._create_once("/images", body, lambda: self._find_created_image(body, run_key, since))
        except ImsApiError as err:
            if "metadata" not in body or not refuses_metadata(err):
                raise
        LOGGER.info("IMS refuses image metadata (IMS before 3.16); creating the record without it")
        self.image_metadata = False
        body.pop("metadata")
        return self._create_once("/images", body, lambda: self._find_created_image(body, run_key, since))

    def _find_created_image(self, body: Record, run_key: Optional[str], since: Optional[str]) -> Optional[Record]:
        """The record an earlier POST of ``body`` created (listing images: only after a lost answer)."""
        if "metadata" in body:
            return self.find_created_image(body["name"], run_key, None)
        return self.find_created_image(body["name"], None, since)

    def find_created_image(self, name: str, run_key: Optional[str], since: Optional[str]) -> Optional[Record]:
        """A record named ``name`` that a create whose answer was lost made.

        The record carrying ``run_key`` in its metadata; else (IMS before 3.16
        keeps no metadata) the newest one without metadata and link created at
        or after the IMS time ``since``. Lists every image: only for this rare case.
        """
        start = parse_time(since) if since else None
        unlinked: List[Record] = []
        for record in self.list_images():
            if record.get("name") != name:
                continue
            key = (record.get("metadata") or {}).get(RUN_METADATA_KEY)
            if run_key and key == run_key:
                return record
            if key is None and not record.get("link") and _created_since(record, start):
                unlinked.append(record)
        return unlinked[-1] if unlinked else None

    def _create_once(self, path: str, body: Record, find_existing: Any) -> Record:
        """POST ``body``; on a transient failure look for the record before posting again."""
        delay = 0.5
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                return dict(self._call("POST", path, body))
            except DeadlineExceeded:
                raise
            except (TransportError, ImsApiError) as err:
                transient = isinstance(err, TransportError) or err.status in TRANSIENT_STATUSES
                if not transient or attempt == CREATE_ATTEMPTS:
                    raise
                LOGGER.warning("POST %s failed (%s); checking whether it landed before trying again", path, err)
                time.sleep(min(delay * (1 + random.random()), max(self.deadline.remaining() or delay, 0)))
                delay *= 2
                try:
                    existing = find_existing()
                except (TransportError, ImsApiError):
                    existing = None
                if existing:
                    LOGGER.info("the earlier POST %s did create %s; using it", path, existing.get("id"))
                    return dict(existing)
        raise AssertionError("unreachable")

    def patch_image(self, image_id: str, data: Record) -> Record:
        """Patch an image record (link, arch or one metadata operation)."""
        return dict(self._call("PATCH", f"/images/{image_id}", data))

    def delete_image(self, image_id: str) -> None:
        """Delete an image record."""
        self._call("DELETE", f"/images/{image_id}", expect=type(None))

    # -- jobs -----------------------------------------------------------------

    def get_job(self, job_id: str) -> Record:
        """One job record."""
        return dict(self._call("GET", f"/jobs/{job_id}"))

    def patch_job(self, job_id: str, data: Record) -> Record:
        """Patch a job record (``status`` or ``resultant_image_id``)."""
        return dict(self._call("PATCH", f"/jobs/{job_id}", data))

    # -- recipes --------------------------------------------------------------

    def list_recipes(self) -> List[Record]:
        """Every recipe record."""
        return _records(self._call("GET", "/recipes", expect=list), "IMS GET /recipes")

    def get_recipe(self, recipe_id: str) -> Record:
        """One recipe record."""
        return dict(self._call("GET", f"/recipes/{recipe_id}"))

    def create_recipe(self, body: Record) -> Record:
        """Create a recipe record (not retried blindly: recipes carry no run key)."""
        return dict(self._call("POST", "/recipes", body))

    def patch_recipe(self, recipe_id: str, data: Record) -> Record:
        """Patch a recipe record."""
        return dict(self._call("PATCH", f"/recipes/{recipe_id}", data))

    def delete_recipe(self, recipe_id: str) -> None:
        """Delete a recipe record."""
        self._call("DELETE", f"/recipes/{recipe_id}", expect=type(None))


def refuses_metadata(err: ImsApiError) -> bool:
    """True for the 400 with which IMS before 3.16 refuses the image field ``metadata``."""
    return err.status == 400 and "metadata" in err.detail


def parse_time(text: str) -> Any:
    """An IMS time (``2026-12-01T10:00:00.123456Z`` or with ``+00:00``) as an aware datetime; None if unreadable."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _created_since(record: Record, start: Any) -> bool:
    """True when ``start`` is given and the record was created at or after it."""
    created = parse_time(str(record.get("created", "")))
    return start is not None and created is not None and created >= start


def _records(values: List[Any], what: str) -> List[Record]:
    """A JSON list that must hold only objects (records)."""
    for value in values:
        if not isinstance(value, dict):
            raise ImsAnswerError(f"{what} answered with a list holding a JSON {json_type(value)}, expected objects")
    return list(values)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (object, array, string, number, boolean, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((dict, "object"), (list, "array"), (str, "string"), ((int, float), "number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def read_body(response: requests.Response, what: str, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """Read a streamed answer whole, refusing one larger than ``limit`` bytes (after decompression).

    The body is kept on the response, so ``response.content`` works as usual afterwards.
    """
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        response.close()
        raise ImsAnswerError(f"{what} answered with {int(length)} bytes, more than the {limit} allowed")
    chunks = []
    total = 0
    for chunk in response.iter_content(1024 * 1024):
        total += len(chunk)
        if total > limit:
            response.close()
            raise ImsAnswerError(f"{what} answered with more than the {limit} bytes allowed")
        chunks.append(chunk)
    content = b"".join(chunks)
    response._content = content
    response._content_consumed = True  # type: ignore[attr-defined]
    return content


def decode_json(response: requests.Response, what: str, expect: type = object) -> Any:
    """Decode a JSON answer, turning HTML pages, truncated or oversized bodies and wrong types into one-line errors."""
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
        raise ImsAnswerError(f"{what} answered with {int(length)} bytes, more than the {MAX_RESPONSE_BYTES} allowed")
    content = response.content or b""
    if len(content) > MAX_RESPONSE_BYTES:
        raise ImsAnswerError(f"{what} answered with {len(content)} bytes, more than the {MAX_RESPONSE_BYTES} allowed")
    try:
        value = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        kind = response.headers.get("Content-Type", "unknown type")
        raise ImsAnswerError(
            f"{what} answered HTTP {response.status_code} with a body that is not JSON ({kind}: {excerpt(content)}); "
            "check that the URL points at the service"
        ) from None
    if expect is not object and not isinstance(value, expect):
        wanted = json_type(expect())
        raise ImsAnswerError(f"{what} answered with a JSON {json_type(value)}, expected an {wanted}")
    return value


def problem_detail(response: requests.Response) -> str:
    """The ``detail`` (or ``title``) of an RFC 7807 problem body, else a short excerpt of the body."""
    content = response.content or b""
    try:
        body = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return excerpt(content) or response.reason or "no detail"
    if isinstance(body, dict):
        for key in ("detail", "title", "message", "error_description", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return redact((body[key] + field_errors(body.get("errors"), body[key])).replace("\n", " ")[:500])
    return excerpt(content)


def field_errors(errors: Any, detail: str) -> str:
    """IMS's ``errors`` member (marshmallow's ``{"field": ["reason"]}``) when the detail does not name the fields.

    IMS's 422 detail is generic ("... for the fields indicated in the response");
    the fields and reasons are in ``errors``.
    """
    if not isinstance(errors, dict) or not errors or all(str(name) in detail for name in errors):
        return ""
    reasons = (f"{name}: {' '.join(map(str, why)) if isinstance(why, list) else why}" for name, why in errors.items())
    return " (" + "; ".join(reasons) + ")"


def excerpt(content: bytes, limit: int = 120) -> str:
    """A single-line, printable, secret-free prefix of a body."""
    text = content[: limit * 4].decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return redact(text)
