"""The local IMS's records: images, recipes and jobs, persisted as one JSON file per collection."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

#: The record collections, as named in the API paths.
COLLECTIONS = ("images", "recipes", "jobs")


def utc_now() -> str:
    """The current time the way IMS writes ``created``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_atomically(path: Path, payload: str) -> None:
    """Write ``payload`` to ``path`` through a temp file and ``os.replace``: a crash leaves old or new, never half."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
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


class RecordStore:
    """The image, recipe and job records, one JSON file per collection in ``data_dir``.

    Every change rewrites its collection's file atomically, so a restarted
    server with the same ``data_dir`` has them all. ``lock`` serialises
    changes; hold it across a read-check-write.
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
        _write_atomically(self._path(collection), json.dumps(list(self._records[collection].values()), indent=1))

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

    def put_many(self, collection: str, records: List[Dict[str, Any]]) -> None:
        """Create or replace many records and persist the collection once (seeding a large catalogue)."""
        with self.lock:
            for record in records:
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
