"""A run's claim on publishing one image for one job: a small object in the bucket.

Two runs of the same job can overlap (Kubernetes may start a Job's pod again
while the first still runs). The claim makes them take turns: the object
``.ims-python-helper/runs/RUNKEY.json`` is created with ``If-None-Match: *``
(only one creator wins) and replaced with ``If-Match: ETAG`` (only the holder
of the current version can renew it, or a newcomer take over a stale or
finished one). It holds the owner's random token, its host and pid, a heartbeat
time and, once created, the image record's id, so a re-run resumes the record
by a direct ``GET /images/ID`` instead of listing every image.

Every write is read back and its owner token compared, which also catches a
server that ignores the conditions. The holder renews the heartbeat in a
background thread while it uploads; a claim whose heartbeat is older than
``STALE_SECONDS``, or whose owner is a process on this host that no longer
exists, is taken over.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional, Tuple

import botocore.exceptions

from ..clients.deadline import Deadline
from ..clients.storage import S3Storage, describe_s3_error, s3_error_code
from ..errors import ImsHelperError, StorageError, s3_failure

LOGGER = logging.getLogger(__name__)

#: Where claims live in the image bucket (a prefix no image id can start with).
CLAIM_PREFIX = ".ims-python-helper/runs/"
#: How often the holder renews its heartbeat.
HEARTBEAT_SECONDS = 10.0
#: A claim not renewed for this long belongs to a run that is gone or stuck: it may be taken over.
STALE_SECONDS = 45.0
#: How long a run waits for a live claim of another run of the same job before giving up.
WAIT_SECONDS = 300.0
#: Pause between looks at a claim another run holds.
POLL_SECONDS = 0.5

RUNNING, RELEASED = "running", "released"
#: S3 error codes of a conditional write that did not hold, and of a claim that is not there.
REFUSED = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict")
ABSENT = ("404", "NoSuchKey", "NotFound")
JSON = "application/json"


class ClaimError(ImsHelperError):
    """Another run of the same job holds the claim, or this run lost it."""


def utc_iso(seconds: float) -> str:
    """``seconds`` since the epoch as IMS writes times (UTC, microseconds)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ClaimState:
    """What the claim object holds."""

    owner: str
    host: str
    pid: int
    heartbeat: float
    state: str = RUNNING
    image_id: str = ""
    #: When the holder began (or may have begun) creating the record, for finding one whose answer was lost.
    creating_since: str = ""
    job_id: str = ""
    image_name: str = ""

    def to_json(self) -> bytes:
        """The object's body."""
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> Optional[ClaimState]:
        """A state from an object's body; None for anything unreadable (treated as takeable)."""
        try:
            raw = json.loads(data.decode("utf-8"))
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def age(self, now: float) -> float:
        """Seconds since the last heartbeat."""
        return max(0.0, now - float(self.heartbeat))

    def owner_is_dead(self) -> bool:
        """True when the owner ran on this host and that process is gone (a killed run, re-run in place)."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(int(self.pid), 0)
        except ProcessLookupError:
            return True
        except (OSError, ValueError):
            return False
        return False

    def takeable(self, now: float) -> bool:
        """True when a newcomer may take this claim over."""
        return self.state != RUNNING or self.age(now) > STALE_SECONDS or self.owner_is_dead()

    def describe(self, now: float) -> str:
        """Who holds it, for messages."""
        return f"pid {self.pid} on {self.host}, heartbeat {self.age(now):.0f} s ago"


class RunClaim:
    """This run's claim on publishing ``image_name`` for ``job_id`` (see the module docstring)."""

    def __init__(
        self,
        storage: S3Storage,
        run_key: str,
        job_id: str,
        image_name: str,
        deadline: Optional[Deadline] = None,
        wait: float = WAIT_SECONDS,
    ) -> None:
        self.storage = storage
        self.key = f"{CLAIM_PREFIX}{run_key}.json"
        self.deadline = deadline or Deadline(None)
        self.wait = wait
        self.token = uuid.uuid4().hex
        host, pid = socket.gethostname(), os.getpid()
        self.state = ClaimState(self.token, host, pid, 0.0, job_id=job_id, image_name=image_name)
        self.etag = ""
        self.lost = False
        #: When (monotonic) a write of ours last landed: until STALE_SECONDS later nobody can take the claim over.
        self.confirmed = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        """The claim object's s3:// URL, for messages."""
        return f"s3://{self.storage.bucket}/{self.key}"

    # -- S3 -------------------------------------------------------------------------

    def _s3(self, action: str, call: Callable[[], Any], expected: Tuple[str, ...] = ()) -> Any:
        """Run one S3 call on the claim; None when S3 answers one of the ``expected`` error codes."""
        try:
            return call()
        except botocore.exceptions.ClientError as err:
            if s3_error_code(err) in expected:
                return None
            raise s3_failure(f"cannot {action} the run claim {self.url}: {describe_s3_error(err)}", err) from None
        except botocore.exceptions.BotoCoreError as err:
            raise s3_failure(f"cannot {action} the run claim {self.url}: {describe_s3_error(err)}", err) from None

    def _read(self) -> Tuple[Optional[ClaimState], str, bool]:
        """``(state, etag, exists)`` of the claim object as stored now."""
        client, bucket = self.storage.client, self.storage.bucket
        answer = self._s3("read", lambda: client.get_object(Bucket=bucket, Key=self.key), ABSENT)
        if answer is None:
            return None, "", False
        data = self._s3("read", answer["Body"].read)
        return ClaimState.parse(data), str(answer.get("ETag", "")).strip('"'), True

    def _write(self, state: ClaimState, condition: Callable[[], Any]) -> bool:
        """Write ``state`` under ``condition`` (``{"IfNoneMatch": "*"}`` or ``{"IfMatch": etag}``).

        True when the write landed and reading it back shows this run's token
        (a server that ignores the condition is caught by the read-back).
        """
        client, bucket, body = self.storage.client, self.storage.bucket, state.to_json()
        put = lambda: client.put_object(Bucket=bucket, Key=self.key, Body=body, ContentType=JSON, **condition())  # noqa: E731
        landed = self._s3("write", put, REFUSED) is not None
        stored, etag, _ = self._read()
        if stored is None or stored.owner != self.token:
            return False
        # A refused write still landed when botocore retried it after a lost or late answer: the first
        # attempt changed the ETag the retry's condition names. The stored claim is then exactly this one.
        if not landed and stored.to_json() != body:
            return False
        self.etag = etag
        self.confirmed = time.monotonic()
        return True

    def _put_ours(self, beat: bool = False, **changes: Any) -> bool:
        """Replace our own claim with changed fields; False when it is no longer ours."""
        with self._lock:
            if beat and self._stop.is_set():
                return True  # the run has ended: a late heartbeat must not bring the claim back
            if self.lost:
                return False
            updated = ClaimState(**{**asdict(self.state), **changes})
            # RGW compares If-Match with the bare ETag; moto accepts it too.
            if self._write(updated, lambda: {"IfMatch": self.etag}):
                self.state = updated
                return True
            self.lost = True
            return False

    # -- taking ---------------------------------------------------------------------

    def acquire(self) -> Optional[ClaimState]:
        """Take the claim; returns the state it had before (None when there was none).

        A live claim of another run is waited for (up to ``wait`` seconds and
        the run's deadline), then refused with ``ClaimError``.
        """
        give_up = time.monotonic() + self.wait
        announced = False
        while True:
            taken, previous = self._try_take()
            if taken:
                LOGGER.info("took the run claim %s", self.url)
                return previous
            if previous is None:
                continue  # the object changed between our read and write: look again
            now = time.time()
            if time.monotonic() >= give_up:
                raise ClaimError(
                    f"another run of job {self.state.job_id} is publishing image {self.state.image_name!r} "
                    f"({previous.describe(now)}; claim {self.url}); wait for it to finish or run again later"
                )
            if not announced:
                LOGGER.warning(
                    "another run of this job is publishing %r (%s); waiting up to %.0f s for it",
                    self.state.image_name,
                    previous.describe(now),
                    self.wait,
                )
                announced = True
            self.deadline.check("waiting for another run of this job to finish")
            time.sleep(POLL_SECONDS * (0.5 + random.random()))

    def _try_take(self) -> Tuple[bool, Optional[ClaimState]]:
        """One attempt: ``(True, previous)`` when taken, ``(False, live_holder)`` when not."""
        current, etag, exists = self._read()
        now = time.time()
        if current is not None and not current.takeable(now):
            return False, current
        mine = ClaimState(**{**asdict(self.state), "heartbeat": now, "state": RUNNING})
        if current is not None:
            mine.image_id = current.image_id
            orphan_possible = current.state == RUNNING and not current.image_id
            mine.creating_since = current.creating_since if orphan_possible else ""
        mine.creating_since = mine.creating_since or utc_iso(now)
        condition = (lambda: {"IfMatch": etag}) if exists else (lambda: {"IfNoneMatch": "*"})
        with self._lock:
            if self._write(mine, condition):
                self.state = mine
                return True, current
        return False, None

    # -- holding --------------------------------------------------------------------

    def record_image(self, image_id: str) -> None:
        """Name the record this run created, so a re-run resumes it; ``ClaimError`` if the claim was lost."""
        if not self._put_ours(image_id=image_id, heartbeat=time.time()):
            raise ClaimError(self.lost_message())

    def still_ours(self) -> bool:
        """True while the claim is this run's.

        Within half of ``STALE_SECONDS`` of our last landed write nobody can have
        taken it over (takeover needs an older heartbeat), so no request is made:
        cleanup stays fast when S3 hangs. Later the stored claim is read.
        """
        if self.lost:
            return False
        if time.monotonic() - self.confirmed < STALE_SECONDS / 2:
            return True
        try:
            stored, _, _ = self._read()
        except StorageError:
            return True  # S3 unreachable: nobody else can take it over either
        self.lost = stored is None or stored.owner != self.token
        return not self.lost

    def lost_message(self) -> str:
        """One line for a run whose claim another run took over."""
        return (
            f"another run of job {self.state.job_id} took over publishing {self.state.image_name!r} "
            f"(claim {self.url}); this run stops and leaves the image to it"
        )

    @contextmanager
    def heartbeat(self, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Renew the heartbeat every ``interval`` seconds while the body runs."""
        thread = threading.Thread(target=self._beat, args=(interval,), name="run-claim-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            # Not waiting long: a heartbeat stuck on a hung S3 must not hold the run's end (it is a daemon).
            thread.join(timeout=0.1)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not self._put_ours(beat=True, heartbeat=time.time()):
                    LOGGER.error("%s", self.lost_message())
                    return
            except ImsHelperError as err:
                LOGGER.warning("cannot renew the run claim: %s", err)

    def finish(self) -> None:
        """Remove the claim after a publish: the job record's ``resultant_image_id`` names the image now."""
        try:
            self._delete_ours()
        except ImsHelperError as err:
            LOGGER.warning("published, but cannot remove the run claim %s: %s", self.url, err)

    def release(self, keep_image: bool) -> None:
        """After a failure: let the next run take over at once.

        With ``keep_image`` (the record is still there) the claim stays, marked
        released, so the next run resumes that record; otherwise it is removed.
        """
        try:
            if keep_image:
                self._put_ours(state=RELEASED, heartbeat=time.time())
            else:
                self._delete_ours()
        except ImsHelperError as err:
            LOGGER.warning("cannot release the run claim %s: %s", self.url, err)

    def _delete_ours(self) -> None:
        """Delete the claim if it is still ours (``If-Match`` where honoured, checked just before anyway)."""
        self._stop.set()
        with self._lock:
            if self.lost or not self.still_ours():
                return
            client, bucket = self.storage.client, self.storage.bucket
            delete = lambda: client.delete_object(Bucket=bucket, Key=self.key, IfMatch=self.etag)  # noqa: E731
            self._s3("remove", delete, REFUSED + ABSENT)
