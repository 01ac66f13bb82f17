"""Publishing an image: upload the artifacts, write the manifest, link the record, update the job.

Publishing is all or nothing: the image record is linked only after every
artifact and the manifest are stored and verified, the job is patched only
after the link, and a failure removes what the run created before the error is
reported.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

from ..clients.ims import Record
from ..errors import CleanupError, ImsApiError, ImsImagesExistWithName, StorageError, TransportError
from ..vocabulary import JOB_METADATA_KEY, MANIFEST_KEY, MANIFEST_TYPE, RUN_METADATA_KEY, kind_for_type
from .checks import LocalArtifact, check_arch, check_job_status, check_name, check_uuid
from .claims import RUNNING, ClaimError, ClaimState, RunClaim
from .manifest import ArtifactLink, Manifest, ManifestEntry, ManifestError
from .transfer import ArtifactUpload, UploadedObject
from .workflow import Cleanup, Services, find_reusable

LOGGER = logging.getLogger(__name__)
Artifacts = Sequence[LocalArtifact]


def header_value(text: str) -> str:
    """S3 metadata travels in HTTP headers: keep ASCII as is, percent-encode the rest."""
    return text if text.isascii() else quote(text, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")


def run_key_for(job_id: str, image_name: str) -> str:
    """A stable key for 'this job publishing this image', recorded on the image record."""
    return hashlib.sha256(f"{job_id}\n{image_name}".encode()).hexdigest()[:32]


def require_job(services: Services, job_id: str, change: Optional[Dict[str, Any]] = None) -> Record:
    """The job (patched with ``change`` when given); IMS's refusal stays an ``ImsApiError`` (an ``HTTPError``)."""
    try:
        return services.ims.patch_job(job_id, change) if change else services.ims.get_job(job_id)
    except ImsApiError as err:
        if err.status != 404:
            raise
        # Same status and answer, with what to do: earlier callers catch it as an HTTPError.
        hint = f"IMS has no job {job_id}; check the job id (or IMS_JOB_ID)"
        raise ImsApiError(err.method, err.path, err.status, hint, response=err.response) from None


def set_job_status(services: Services, ims_job_id: str, job_status: str) -> Dict[str, Any]:
    """Set an IMS job's status; returns ``{"result": "success", "ims_job_record": {...}}``."""
    job_id = check_uuid(ims_job_id)
    check_job_status(job_status)
    return {"result": "success", "ims_job_record": require_job(services, job_id, {"status": job_status})}


class ImagePublisher:
    """The publish workflow and the manifest reads it needs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        #: The run claim of the publish in progress (with a job id).
        self._claim: Optional[RunClaim] = None

    # -- manifests ----------------------------------------------------------------

    def read_manifest(self, record: Record) -> Optional[Manifest]:
        """The manifest ``record`` links to; None when there is none or it cannot be read."""
        link = record.get("link")
        if not isinstance(link, dict) or not isinstance(link.get("path"), str):
            return None
        location = ArtifactLink(path=link["path"])
        if not location.bucket or not location.key:
            return None
        try:
            data = self.services.storage.get_bytes(location.key, bucket=location.bucket)
            return Manifest.parse(data) if data is not None else None
        except StorageError as err:
            LOGGER.warning("cannot read the manifest of image %s: %s", record.get("id"), err)
        except ManifestError as err:
            LOGGER.warning("image %s has an unreadable manifest: %s", record.get("id"), err)
        return None

    def manifest_matches(self, manifest: Manifest, artifacts: Sequence[LocalArtifact]) -> bool:
        """True when the manifest holds exactly these artifact kinds with these md5s.

        Cheap first: kinds, then object sizes from S3; local files are hashed only
        when everything else already agrees, and at most once per run. Entries of
        types that are not image artifact kinds are ignored, as earlier clients did.
        """
        by_type = {entry.type: entry for entry in manifest.artifacts if kind_for_type(entry.type) is not None}
        if set(by_type) != {a.kind.mime_type for a in artifacts}:
            return False
        for artifact in artifacts:
            entry = by_type[artifact.kind.mime_type]
            info = self.services.storage.head(entry.link.key, bucket=entry.link.bucket or None)
            if info is None or info.size != artifact.size:
                return False
            # An object rewritten since the manifest was made says so in its own md5sum.
            if info.metadata.get("md5sum", entry.md5) != entry.md5:
                return False
        return all(self.services.local_md5(a.path) == by_type[a.kind.mime_type].md5 for a in artifacts)

    def matching_manifest(self, record: Record, artifacts: Sequence[LocalArtifact]) -> Optional[Manifest]:
        """The record's manifest when it lists exactly these files, else None."""
        manifest = self.read_manifest(record)
        return manifest if manifest is not None and self.manifest_matches(manifest, artifacts) else None

    # -- records --------------------------------------------------------------------

    def empty_record_for_name(self, image_name: str, skip_existing: bool, arch: Optional[str] = None) -> Record:
        """See ``ImsHelper.get_empty_image_record_for_name``."""
        check_name(image_name)
        if skip_existing:
            same_name = [r for r in self.services.ims.list_images() if r.get("name") == image_name]
            linked = [r for r in same_name if r.get("link")]
            if linked:
                raise ImsImagesExistWithName(image_name, linked)
            if same_name:
                LOGGER.info("reusing image %s, which has no artifacts yet", same_name[-1].get("id"))
                return same_name[-1]
        return self.services.ims.create_image(image_name, arch=check_arch(arch))

    # -- publishing -----------------------------------------------------------------

    def publish(
        self, image_name: str, artifacts: Artifacts, job_id: Optional[str], skip_existing: bool, arch: Optional[str]
    ) -> Dict[str, Any]:
        """Publish checked artifacts (see ``ImsHelper.image_upload_artifacts``).

        With a job id the run first takes the job's run claim (``claims``): a
        record an earlier run of the job created is found through it by a direct
        read, and an overlapping run of the same job waits or fails instead of
        touching this run's work. Images are listed only for ``skip_existing``.
        """
        # Everything cheap is checked before the first byte goes up.
        job = require_job(self.services, job_id) if job_id else None
        self.services.storage.check_bucket()
        if not job_id or job is None:
            result = self._reuse_by_name(image_name, artifacts, None) if skip_existing else None
            return result if result is not None else self._publish_new(image_name, artifacts, None, arch)
        services = self.services
        claim = RunClaim(services.storage, run_key_for(job_id, image_name), job_id, image_name, services.deadline)
        previous = claim.acquire()
        self._claim = claim
        try:
            with claim.heartbeat():
                # Read again now that the claim is ours: a run we waited for may have finished the job meanwhile.
                job = require_job(self.services, job_id)
                result = self._resume(previous, job_id, job, image_name, artifacts)
                if result is None and skip_existing:
                    result = self._reuse_by_name(image_name, artifacts, job_id)
                if result is None:
                    result = self._publish_new(image_name, artifacts, job_id, arch)
        except CleanupError:
            # S3 or IMS is failing (what is left is named in the error): no more waiting on them for the claim.
            LOGGER.warning("leaving the run claim %s; a re-run of the job takes it over", claim.url)
            raise
        except BaseException:
            claim.release(keep_image=self._record_left(claim.state.image_id))
            raise
        finally:
            self._claim = None
        claim.finish()
        return result

    def _resume(
        self, previous: Optional[ClaimState], job_id: str, job: Record, image_name: str, artifacts: Artifacts
    ) -> Optional[Dict[str, Any]]:
        """Finish or fill the record an earlier run of this job made; None when there is none.

        The claim names an unfinished one; a finished one is the job's
        ``resultant_image_id``. Both are read directly: no image list.
        """
        record = self._record_of(previous, image_name, run_key_for(job_id, image_name))
        if record is None and isinstance(job.get("resultant_image_id"), str) and job["resultant_image_id"]:
            record = self._image_named(job["resultant_image_id"], image_name)
        if record is None:
            return None
        done = "image %s was already published by this job; finishing"
        empty = "resuming into image %s, created by an earlier run of this job"
        return self._reuse([record], artifacts, job_id, done, empty)

    def _image_named(self, image_id: str, image_name: str) -> Optional[Record]:
        """The record ``image_id`` when it exists and is named ``image_name`` (a direct GET)."""
        try:
            record = self.services.ims.get_image(image_id)
        except ImsApiError as err:
            if err.status in (400, 404):
                return None
            raise
        return record if record.get("name") == image_name else None

    def _record_left(self, image_id: str) -> bool:
        """True when the record ``image_id`` still exists (or IMS cannot say) after a failed run."""
        if not image_id:
            return False
        try:
            self.services.ims.get_image(image_id)
        except ImsApiError as err:
            return err.status != 404
        except Exception:  # IMS cannot say: keep naming the record, the next run reads it again
            return True
        return True

    def _record_of(self, previous: Optional[ClaimState], image_name: str, run_key: str) -> Optional[Record]:
        """The record a previous claim names, or the one its holder created before it died."""
        if previous is None:
            return None
        if previous.image_id:
            return self._image_named(previous.image_id, image_name)
        if previous.state == RUNNING and previous.creating_since:
            # The earlier run died between its create and naming the record in the claim: look for it.
            LOGGER.info("an earlier run of this job may have created a record; looking for it")
            return self.services.ims.find_created_image(image_name, run_key, previous.creating_since)
        return None

    def _reuse_by_name(self, image_name: str, artifacts: Artifacts, job_id: Optional[str]) -> Optional[Dict[str, Any]]:
        """``--skip-existing``: a same-name record that already holds these files, or one without any."""
        same_name = [r for r in self.services.ims.list_images() if r.get("name") == image_name]
        done = "image %s already holds these artifacts; nothing to upload"
        empty = "reusing image %s, which has no artifacts yet"
        return self._reuse(same_name, artifacts, job_id, done, empty)

    def _reuse(
        self, records: List[Record], artifacts: Sequence[LocalArtifact], job_id: Optional[str], done: str, empty: str
    ) -> Optional[Dict[str, Any]]:
        """Finish a record that already holds these files, or upload into one without any; None if neither."""
        record, manifest, blank = find_reusable(records, lambda r: self.matching_manifest(r, artifacts))
        if record is not None:
            LOGGER.info(done, record["id"])
            return self._finish_existing(record, manifest, job_id)
        if blank is not None:
            LOGGER.info(empty, blank["id"])
            return self._publish_into(blank, created=False, artifacts=artifacts, job_id=job_id)
        return None

    def _publish_new(
        self, image_name: str, artifacts: Sequence[LocalArtifact], job_id: Optional[str], arch: Optional[str]
    ) -> Dict[str, Any]:
        if job_id:
            metadata = {JOB_METADATA_KEY: job_id, RUN_METADATA_KEY: run_key_for(job_id, image_name)}
        else:
            # A key of this run's own, so a create whose answer was lost is found, not made twice.
            metadata = {RUN_METADATA_KEY: uuid.uuid4().hex}
        since = self._claim.state.creating_since if self._claim is not None else None
        record = self.services.ims.create_image(image_name, arch=arch, metadata=metadata, since=since)
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise TransportError("IMS created an image record without an id")
        LOGGER.info("created image record %s for %r", record["id"], image_name)
        return self._publish_into(record, created=True, artifacts=artifacts, job_id=job_id)

    def _owned(self) -> bool:
        """True unless another run of the job has taken this run's claim over (checked in S3)."""
        return self._claim is None or self._claim.still_ours()

    def _check_claim(self, image_id: str) -> None:
        """Name the record in the claim (once) and make sure the claim is still this run's."""
        claim = self._claim
        if claim is None:
            return
        if claim.state.image_id != image_id:
            claim.record_image(image_id)
        elif not claim.still_ours():
            raise ClaimError(claim.lost_message())

    def _result(
        self, record: Record, image_id: str, entries: List[ManifestEntry], job_id: Optional[str]
    ) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            "result": "success",
            "ims_image_record": record,
            "ims_image_artifacts": [entry.to_dict() for entry in entries],
        }
        if job_id:
            result["ims_job_record"] = self.services.ims.patch_job(job_id, {"resultant_image_id": image_id})
        return result

    def _finish_existing(self, record: Record, manifest: Manifest, job_id: Optional[str]) -> Dict[str, Any]:
        link = record["link"]
        manifest_entry = ManifestEntry(ArtifactLink(path=link["path"], etag=link.get("etag", "")), MANIFEST_TYPE, "")
        info = self.services.storage.head(manifest_entry.link.key, bucket=manifest_entry.link.bucket)
        if info is not None:
            manifest_entry = ManifestEntry(manifest_entry.link, MANIFEST_TYPE, info.metadata.get("md5sum", ""))
        return self._result(record, record["id"], [*list(manifest.artifacts), manifest_entry], job_id)

    def _publish_into(
        self, record: Record, created: bool, artifacts: Sequence[LocalArtifact], job_id: Optional[str]
    ) -> Dict[str, Any]:
        image_id = check_uuid(record["id"], "image id returned by IMS")
        prefix = f"{image_id}/"
        cleanup = Cleanup(self.services, "publish", owned=self._owned)
        cleanup.objects(prefix, [prefix + a.kind.key for a in artifacts] + [prefix + MANIFEST_KEY])
        if created:
            # A record that carries the job's run key is kept when S3 fails: a re-run of the job finishes it.
            delete = lambda: self.services.ims.delete_image(image_id)  # noqa: E731
            cleanup.record(f"IMS image record {image_id}", delete, keep_if_s3_fails=bool(job_id))
        try:
            self._check_claim(image_id)
            if not created:
                # A killed run may have left parts behind; they are ours to clear.
                for key in self.services.storage.abort_multipart_uploads(prefix):
                    LOGGER.info("aborted an unfinished upload of %s left by an earlier run", key)
            entries = self._upload(image_id, str(record.get("name", "")), prefix, artifacts, job_id)
            manifest_entry = self._store_manifest(prefix + MANIFEST_KEY, Manifest(artifacts=entries))
            self._check_claim(image_id)
            linked = self._link_image(image_id, manifest_entry.link)
            return self._result(linked, image_id, [*entries, manifest_entry], job_id)
        except BaseException as err:
            cleanup.undo(err)
            raise

    def _upload(
        self, image_id: str, image_name: str, prefix: str, artifacts: Sequence[LocalArtifact], job_id: Optional[str]
    ) -> List[ManifestEntry]:
        metadata = {"x-shasta-ims-image-name": header_value(image_name), "x-shasta-ims-image-id": image_id}
        if job_id:
            metadata["x-shasta-ims-job-id"] = job_id
        uploads = [
            ArtifactUpload(a.kind.name, a.path, prefix + a.kind.key, a.kind.mime_type, a.size, dict(metadata))
            for a in artifacts
        ]
        stored = self.services.upload(uploads)
        # Every upload under the prefix is finished now; one still open is an orphan of a multipart
        # create that S3 carried out but whose answer was lost (botocore then created another).
        for key in self.services.storage.abort_multipart_uploads(prefix):
            LOGGER.info("aborted an abandoned multipart upload of %s", key)
        return [self._entry(obj) for obj in stored]

    def _entry(self, stored: UploadedObject) -> ManifestEntry:
        link = ArtifactLink.s3(self.services.bucket, stored.upload.key, stored.etag)
        return ManifestEntry(link, stored.upload.content_type, stored.md5)

    def _store_manifest(self, key: str, manifest: Manifest) -> ManifestEntry:
        data = manifest.to_json()
        md5 = hashlib.md5(data).hexdigest()
        self.services.deadline.check("writing the manifest")
        etag = self.services.storage.put_bytes(key, data, MANIFEST_TYPE, {"md5sum": md5})
        info = self.services.storage.head(key)
        if info is None or info.size != len(data):
            raise StorageError(f"s3://{self.services.bucket}/{key} did not store correctly")
        return ManifestEntry(ArtifactLink.s3(self.services.bucket, key, info.etag or etag), MANIFEST_TYPE, md5)

    def _link_image(self, image_id: str, link: ArtifactLink) -> Record:
        """Link the record to its manifest; a repeat of a link that already landed counts as success."""
        try:
            return self.services.ims.patch_image(image_id, {"link": link.to_dict()})
        except ImsApiError as err:
            if err.status not in (409, 422):
                raise
            current = self.services.ims.get_image(image_id)
            if (current.get("link") or {}).get("path") == link.path:
                LOGGER.info("image %s already carries this link", image_id)
                return current
            raise
