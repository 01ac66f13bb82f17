"""The local IMS's operations on records, independent of HTTP."""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ims_python_helper.local.errors import ApiProblem
from ims_python_helper.local.ims_links import S3LinkChecker
from ims_python_helper.local.ims_schema import SCHEMAS, BodySchema
from ims_python_helper.local.ims_store import RecordStore, utc_now
from ims_python_helper.local.vocabulary import CURRENT_SCHEMA, DEFAULT_ARCH, INITIAL_JOB_STATUS


class ImsApi:
    """List, get, create, update and delete records, with IMS's checks.

    Each method returns a JSON-ready result or raises :class:`ApiProblem`.
    ``schemas`` maps (collection, method) to the body schema; by default
    today's IMS.
    """

    def __init__(
        self,
        store: RecordStore,
        links: S3LinkChecker,
        schemas: Optional[Mapping[Tuple[str, str], BodySchema]] = None,
    ) -> None:
        self.store = store
        self.links = links
        self.schemas = dict(schemas if schemas is not None else SCHEMAS[CURRENT_SCHEMA])

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
        fields = self.schemas[(collection, "POST")].validate(body)
        link = fields.get("link")
        if link is not None:
            self._check_link_unique(collection, link, None)
            self._check_link_target(collection, link)
        record: Dict[str, Any] = {"id": str(uuid.uuid4()), "created": utc_now()}
        if collection == "jobs":
            record.update({"status": INITIAL_JOB_STATUS, "arch": DEFAULT_ARCH})
        record.update(fields)
        with self.store.lock:
            if link is not None:
                # Checked again under the lock: another request may have taken the link meanwhile.
                self._check_link_unique(collection, link, None)
            self.store.put(collection, record)
        return record

    def update(self, collection: str, record_id: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Apply a PATCH body to a record and return the result."""
        self.get(collection, record_id)  # as IMS does: an unknown id is a 404 before the body is looked at
        changes = self.schemas[(collection, "PATCH")].validate(body)
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
                _apply_metadata_operation(record.setdefault("metadata", {}), metadata_operation)
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


def _apply_metadata_operation(metadata: Dict[str, str], operation: Dict[str, str]) -> None:
    """Set or remove one key of an image's metadata."""
    if operation["operation"] == "set":
        metadata[operation["key"]] = operation["value"]
    else:
        metadata.pop(operation["key"], None)
