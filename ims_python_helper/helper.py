"""ImsHelper: the workflows (publish an image, set a job's status, load a recipe).

Publishing is all or nothing: the image record is linked only after every
artifact and the manifest are stored and verified, the job is patched only
after the link, and a failure removes what the run created before the error is
reported.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from .artifacts import (
    ARTIFACT_KINDS,
    MANIFEST_KEY,
    MANIFEST_TYPE,
    RECIPE_ARTIFACT_TYPE,
    ArtifactKind,
    kind_for_type,
)
from .config import ARCHES, DEFAULT_IMS_API_URL, Settings, parse_ssl_verify
from .errors import (
    CleanupError,
    ImsApiError,
    ImsHelperError,
    ImsImagesExistWithName,
    InputError,
    StorageError,
    TransportError,
)
from .ims import JOB_METADATA_KEY, RUN_METADATA_KEY, ImsClient, Record
from .manifest import ArtifactLink, Manifest, ManifestEntry, ManifestError
from .progress import Progress
from .session import ClientCredentialsSession, Deadline, build_retry, create_oauth_session
from .storage import ObjectInfo, S3Settings, S3Storage
from .transfer import ArtifactUpload, ArtifactUploader, HashingReader, TransferOptions, UploadedObject

LOGGER = logging.getLogger(__name__)

#: IMS job states a job can be set to.
JOB_STATUSES = (
    "creating",
    "fetching_image",
    "fetching_recipe",
    "waiting_for_repos",
    "building_image",
    "packaging_artifacts",
    "waiting_on_user",
    "error",
    "success",
)
MAX_NAME_LENGTH = 256
RECIPE_KEY = "recipes/{recipe_id}/recipe.tar.gz"
RECIPE_DISTROS = ("sles12", "sles15", "centos7")
HASH_BLOCK = 1024 * 1024

PathArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None]


@dataclass(frozen=True)
class LocalArtifact:
    """An artifact file given by the caller, checked to be a readable regular file."""

    kind: ArtifactKind
    path: str
    size: int


# -- input checks ---------------------------------------------------------------


def check_name(name: Any, what: str = "image name") -> str:
    """A name must be a printable string of 1 to 256 characters."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"the {what} is empty; give a descriptive name")
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(f"the {what} is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if not name.isprintable():
        raise InputError(f"the {what} {name!r} contains control characters; use printable characters only")
    return name


def check_uuid(value: Any, what: str = "job id") -> str:
    """An IMS id must be a UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InputError(f"the {what} {str(value)[:80]!r} is not a UUID (like 0e6d4c2a-...-5f1b)") from None


def check_arch(arch: Optional[str]) -> Optional[str]:
    """``None`` or one of the IMS architectures."""
    if arch is not None and arch not in ARCHES:
        raise InputError(f"architecture {arch!r} is not one of {', '.join(ARCHES)}")
    return arch


def check_file(path: Any, what: str) -> Tuple[str, int]:
    """Resolve ``path`` and check it is a readable regular file; returns the real path and size."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise InputError(f"{what} was given {len(path)} times; give exactly one file")
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what} must be a file path, not a {type(path).__name__}")
    given = os.fspath(path)
    if not given:
        raise InputError(f"{what} path is empty; give a file path")
    if "\x00" in str(given):
        raise InputError(f"{what} path contains a NUL character")
    real = os.path.realpath(given)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise InputError(f"{what} file {given!r} does not exist; check the path") from None
    except OSError as err:
        raise InputError(f"{what} file {given!r} cannot be read: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what} path {given!r} is a directory; give the file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} path {given!r} is not a regular file (device, pipe or socket)")
    try:
        with open(real, "rb"):
            pass
    except OSError as err:
        raise InputError(f"{what} file {given!r} is not readable: {err.strerror}") from None
    if real != os.path.abspath(given):
        LOGGER.info("%s %s is a link to %s", what, given, real)
    return real, info.st_size


def resolve_artifacts(paths: Mapping[str, PathArg]) -> List[LocalArtifact]:
    """Check the artifact files given per kind name (``rootfs`` ...), in table order."""
    artifacts = []
    for kind in ARTIFACT_KINDS:
        value = paths.get(kind.name)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        real, size = check_file(value, f"{kind.name} ({kind.flags[0]})")
        artifacts.append(LocalArtifact(kind=kind, path=real, size=size))
    return artifacts


def md5_of_file(path: str) -> str:
    """Hex md5 of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _header_value(text: str) -> str:
    """S3 metadata travels in HTTP headers: keep ASCII as is, percent-encode the rest."""
    return text if text.isascii() else quote(text, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")


def run_key_for(job_id: str, image_name: str) -> str:
    """A stable key for 'this job publishing this image', recorded on the image record."""
    return hashlib.sha256(f"{job_id}\n{image_name}".encode()).hexdigest()[:32]


# -- the helper -------------------------------------------------------------------


class ImsHelper:
    """Publishes images and recipes into IMS and S3.

    The constructor keeps the keyword names earlier clients used; unknown
    keywords are accepted and ignored. ``session`` should already carry the
    bearer token (see ``ims_python_helper.session.create_oauth_session``).
    """

    def __init__(
        self,
        ims_url: str = DEFAULT_IMS_API_URL,
        session: Optional[requests.Session] = None,
        s3_access_key: Optional[str] = None,
        s3_secret_key: Optional[str] = None,
        s3_endpoint: Optional[str] = None,
        s3_bucket: Optional[str] = None,
        s3_ssl_verify: Union[str, bool, None] = None,
        *,
        timeout: float = 60.0,
        deadline: Optional[Deadline] = None,
        part_size: int = 8 * 1024 * 1024,
        concurrency: int = 8,
        sha256: bool = False,
        s3_checksum: str = "when_required",
        s3_addressing_style: str = "path",
        progress: Optional[Progress] = None,
        **_kwargs: Any,
    ) -> None:
        if _kwargs:
            LOGGER.debug("ImsHelper ignores unknown arguments: %s", ", ".join(sorted(_kwargs)))
        self.ims_url = (ims_url or DEFAULT_IMS_API_URL).rstrip("/")
        self.deadline = deadline or getattr(session, "deadline", None) or Deadline(None)
        self.session = session if session is not None else requests.Session()
        if not isinstance(self.session, ClientCredentialsSession):
            # A caller's own session gets the same bounded retries for IMS (never for POST), as before.
            self.session.mount(self.ims_url, HTTPAdapter(max_retries=build_retry(deadline=self.deadline)))
        self.s3_bucket = s3_bucket or "boot-images"
        self.ims = ImsClient(self.ims_url, self.session, timeout=timeout, deadline=self.deadline)
        self.s3_settings = S3Settings(
            endpoint=s3_endpoint,
            bucket=self.s3_bucket,
            access_key=s3_access_key,
            secret_key=s3_secret_key,
            verify=parse_ssl_verify(s3_ssl_verify),
            checksum_mode=s3_checksum,
            addressing_style=s3_addressing_style,
            timeout=timeout,
            max_pool_connections=max(10, concurrency + 4),
        )
        self.storage = S3Storage(self.s3_settings, deadline=self.deadline)
        self.s3_client = self.storage.client
        self.transfer = TransferOptions(part_size=part_size, concurrency=concurrency, sha256=sha256)
        self.progress = progress or Progress()
        self._md5_cache: Dict[Tuple[str, int, int], str] = {}

    def __repr__(self) -> str:
        return f"<ImsHelper ims_url={self.ims_url!r} s3={self.s3_settings.endpoint!r} bucket={self.s3_bucket!r}>"

    @classmethod
    def from_settings(
        cls, settings: Settings, progress: Optional[Progress] = None, bucket: Optional[str] = None
    ) -> ImsHelper:
        """Build a helper from resolved settings: fetch the OAuth token and prepare S3."""
        deadline = Deadline(settings.deadline)
        session = create_oauth_session(
            settings.oauth_client_id,
            settings.oauth_client_secret,
            settings.cert,
            settings.token_url,
            settings.timeout,
            deadline=deadline,
        )
        return cls(
            ims_url=settings.ims_url,
            session=session,
            s3_access_key=settings.s3_access_key,
            s3_secret_key=settings.s3_secret_key,
            s3_endpoint=settings.s3_endpoint,
            s3_bucket=bucket or settings.s3_bucket,
            s3_ssl_verify=settings.s3_ssl_verify,
            timeout=settings.timeout,
            deadline=deadline,
            part_size=settings.part_size,
            concurrency=settings.concurrency,
            sha256=settings.sha256,
            s3_checksum=settings.s3_checksum,
            s3_addressing_style=settings.s3_addressing_style,
            progress=progress,
        )

    # -- hashing ------------------------------------------------------------------

    @staticmethod
    def _md5(filename: Union[str, os.PathLike]) -> str:
        """Hex md5 of a file (kept under this name because callers use it)."""
        return md5_of_file(os.fspath(filename))

    def _local_md5(self, path: str) -> str:
        """md5 of a local file, computed at most once per run (keyed by path, size and mtime)."""
        info = os.stat(path)
        key = (path, info.st_size, info.st_mtime_ns)
        if key not in self._md5_cache:
            self._md5_cache[key] = md5_of_file(path)
        return self._md5_cache[key]

    # -- manifests ----------------------------------------------------------------

    def _read_manifest(self, record: Record) -> Optional[Manifest]:
        link = record.get("link")
        if not isinstance(link, dict) or not isinstance(link.get("path"), str):
            return None
        location = ArtifactLink(path=link["path"])
        if not location.bucket or not location.key:
            return None
        try:
            data = self.storage.get_bytes(location.key, bucket=location.bucket)
        except StorageError as err:
            LOGGER.warning("cannot read the manifest of image %s: %s", record.get("id"), err)
            return None
        if data is None:
            return None
        try:
            return Manifest.parse(data)
        except ManifestError as err:
            LOGGER.warning("image %s has an unreadable manifest: %s", record.get("id"), err)
            return None

    def get_image_manifest(self, record: Record) -> Optional[Dict[str, Any]]:
        """The parsed manifest an image record links to, or None when there is none or it cannot be read."""
        manifest = self._read_manifest(record)
        return manifest.to_dict() if manifest is not None else None

    def _manifest_matches(self, manifest: Manifest, artifacts: Sequence[LocalArtifact]) -> bool:
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
            info = self.storage.head(entry.link.key, bucket=entry.link.bucket or None)
            if info is None or info.size != artifact.size:
                return False
            # An object rewritten since the manifest was made says so in its own md5sum.
            if info.metadata.get("md5sum", entry.md5) != entry.md5:
                return False
        return all(self._local_md5(a.path) == by_type[a.kind.mime_type].md5 for a in artifacts)

    def artifacts_match_image_record(
        self,
        record: Record,
        name: str,
        rootfs_path: Optional[str] = None,
        kernel_path: Optional[str] = None,
        initrd_path: Optional[str] = None,
        debug_kernel: Optional[str] = None,
        boot_params: Optional[str] = None,
    ) -> bool:
        """True when ``record`` is named ``name`` and its manifest lists exactly these files (by md5)."""
        if record.get("name") != name:
            return False
        manifest = self._read_manifest(record)
        if manifest is None:
            return False
        artifacts = resolve_artifacts(
            {
                "rootfs": rootfs_path,
                "kernel": kernel_path,
                "initrd": initrd_path,
                "debug": debug_kernel,
                "boot_parameters": boot_params,
            }
        )
        return self._manifest_matches(manifest, artifacts)

    # -- image records ------------------------------------------------------------

    def get_empty_image_record_for_name(
        self, image_name: str, skip_existing: bool, arch: Optional[str] = None
    ) -> Record:
        """An image record without artifacts for ``image_name``.

        With ``skip_existing``: raise ``ImsImagesExistWithName`` when images of that
        name with artifacts exist, else reuse one without a link. Otherwise (or when
        none exists) create a new record.
        """
        check_name(image_name)
        if skip_existing:
            same_name = [r for r in self.ims.list_images() if r.get("name") == image_name]
            linked = [r for r in same_name if r.get("link")]
            if linked:
                raise ImsImagesExistWithName(image_name, linked)
            if same_name:
                LOGGER.info("reusing image %s, which has no artifacts yet", same_name[-1].get("id"))
                return same_name[-1]
        return self.ims.create_image(image_name, arch=check_arch(arch))

    # -- publishing ---------------------------------------------------------------

    def image_upload_artifacts(
        self,
        image_name: str,
        ims_job_id: Optional[str] = None,
        rootfs: PathArg = None,
        kernel: PathArg = None,
        initrd: PathArg = None,
        debug: PathArg = None,
        boot_parameters: PathArg = None,
        skip_existing: bool = False,
        arch: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Publish an image: upload the artifacts, write the manifest, link the record, update the job.

        Each artifact argument is a path or a one-element list of paths. Returns
        ``{"result": "success", "ims_image_record", "ims_image_artifacts", "ims_job_record"}``
        (the last only with a job id).
        """
        check_name(image_name)
        job_id = check_uuid(ims_job_id) if ims_job_id else None
        check_arch(arch)
        artifacts = resolve_artifacts(
            {"rootfs": rootfs, "kernel": kernel, "initrd": initrd, "debug": debug, "boot_parameters": boot_parameters}
        )
        if not any(a.kind.name == "rootfs" for a in artifacts):
            raise InputError("no rootfs given (-r/--rootfs); IMS links only images with exactly one rootfs")
        return self.publish_image(image_name, artifacts, job_id=job_id, skip_existing=skip_existing, arch=arch)

    def publish_image(
        self,
        image_name: str,
        artifacts: Sequence[LocalArtifact],
        job_id: Optional[str] = None,
        skip_existing: bool = False,
        arch: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Publish checked artifacts (see ``image_upload_artifacts``)."""
        # Everything cheap is checked before the first byte goes up.
        if job_id:
            self._require_job(job_id)
        self.storage.check_bucket()
        images = self.ims.list_images()
        same_name = [r for r in images if r.get("name") == image_name]

        run_key = run_key_for(job_id, image_name) if job_id else None
        if run_key:
            ours = [r for r in same_name if (r.get("metadata") or {}).get(RUN_METADATA_KEY) == run_key]
            for record in ours:
                if record.get("link"):
                    manifest = self._read_manifest(record)
                    if manifest is not None and self._manifest_matches(manifest, artifacts):
                        LOGGER.info("image %s was already published by this job; finishing", record["id"])
                        return self._finish_existing(record, manifest, job_id)
            unlinked = [r for r in ours if not r.get("link")]
            if unlinked:
                LOGGER.info("resuming into image %s, created by an earlier run of this job", unlinked[-1]["id"])
                return self._publish_into(unlinked[-1], created=False, artifacts=artifacts, job_id=job_id)

        if skip_existing:
            for record in same_name:
                if record.get("link"):
                    manifest = self._read_manifest(record)
                    if manifest is not None and self._manifest_matches(manifest, artifacts):
                        LOGGER.info("image %s already holds these artifacts; nothing to upload", record["id"])
                        return self._finish_existing(record, manifest, job_id)
            empty = [r for r in same_name if not r.get("link")]
            if empty:
                LOGGER.info("reusing image %s, which has no artifacts yet", empty[-1]["id"])
                return self._publish_into(empty[-1], created=False, artifacts=artifacts, job_id=job_id)

        if job_id and run_key:
            metadata = {JOB_METADATA_KEY: job_id, RUN_METADATA_KEY: run_key}
        else:
            # A key of this run's own, so a create whose answer was lost is found, not made twice.
            metadata = {RUN_METADATA_KEY: uuid.uuid4().hex}
        record = self.ims.create_image(image_name, arch=arch, metadata=metadata)
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise TransportError("IMS created an image record without an id")
        LOGGER.info("created image record %s for %r", record["id"], image_name)
        return self._publish_into(record, created=True, artifacts=artifacts, job_id=job_id)

    def _require_job(self, job_id: str) -> Record:
        try:
            return self.ims.get_job(job_id)
        except ImsApiError as err:
            if err.status == 404:
                raise InputError(f"IMS has no job {job_id}; check the job id (or IMS_JOB_ID)") from None
            raise

    def _finish_existing(self, record: Record, manifest: Manifest, job_id: Optional[str]) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            "result": "success",
            "ims_image_record": record,
            "ims_image_artifacts": [entry.to_dict() for entry in manifest.artifacts],
        }
        link = record["link"]
        manifest_entry = ManifestEntry(ArtifactLink(path=link["path"], etag=link.get("etag", "")), MANIFEST_TYPE, "")
        info = self.storage.head(manifest_entry.link.key, bucket=manifest_entry.link.bucket)
        if info is not None:
            manifest_entry = ManifestEntry(manifest_entry.link, MANIFEST_TYPE, info.metadata.get("md5sum", ""))
        result["ims_image_artifacts"].append(manifest_entry.to_dict())
        if job_id:
            result["ims_job_record"] = self.ims.patch_job(job_id, {"resultant_image_id": record["id"]})
        return result

    def _publish_into(
        self, record: Record, created: bool, artifacts: Sequence[LocalArtifact], job_id: Optional[str]
    ) -> Dict[str, Any]:
        image_id = check_uuid(record["id"], "image id returned by IMS")
        image_name = str(record.get("name", ""))
        prefix = f"{image_id}/"
        planned_keys = [prefix + a.kind.key for a in artifacts] + [prefix + MANIFEST_KEY]
        try:
            if not created:
                # A killed run may have left parts behind; they are ours to clear.
                for key in self.storage.abort_multipart_uploads(prefix):
                    LOGGER.info("aborted an unfinished upload of %s left by an earlier run", key)
            metadata = {"x-shasta-ims-image-name": _header_value(image_name), "x-shasta-ims-image-id": image_id}
            if job_id:
                metadata["x-shasta-ims-job-id"] = job_id
            uploads = [
                ArtifactUpload(a.kind.name, a.path, prefix + a.kind.key, a.kind.mime_type, a.size, dict(metadata))
                for a in artifacts
            ]
            uploader = ArtifactUploader(self.storage, self.transfer, self.progress, self.deadline)
            stored = uploader.upload_all(uploads)
            # Every upload under the prefix is finished now; one still open is an orphan of a multipart
            # create that S3 carried out but whose answer was lost (botocore then created another).
            for key in self.storage.abort_multipart_uploads(prefix):
                LOGGER.info("aborted an abandoned multipart upload of %s", key)
            entries = [self._entry(obj) for obj in stored]
            manifest = Manifest(artifacts=entries)
            manifest_entry = self._store_manifest(prefix + MANIFEST_KEY, manifest)
            linked = self._link_image(image_id, manifest_entry.link)
            result: Dict[str, Any] = {
                "result": "success",
                "ims_image_record": linked,
                "ims_image_artifacts": [e.to_dict() for e in entries] + [manifest_entry.to_dict()],
            }
            if job_id:
                result["ims_job_record"] = self.ims.patch_job(job_id, {"resultant_image_id": image_id})
            return result
        except BaseException as err:
            self._undo(err, image_id if created else None, prefix, planned_keys, resumable=bool(job_id))
            raise

    def _entry(self, stored: UploadedObject) -> ManifestEntry:
        return ManifestEntry(
            ArtifactLink.s3(self.s3_bucket, stored.upload.key, stored.etag), stored.upload.content_type, stored.md5
        )

    def _store_manifest(self, key: str, manifest: Manifest) -> ManifestEntry:
        data = manifest.to_json()
        md5 = hashlib.md5(data).hexdigest()
        self.deadline.check("writing the manifest")
        etag = self.storage.put_bytes(key, data, MANIFEST_TYPE, {"md5sum": md5})
        info = self.storage.head(key)
        if info is None or info.size != len(data):
            raise StorageError(f"s3://{self.s3_bucket}/{key} did not store correctly")
        return ManifestEntry(ArtifactLink.s3(self.s3_bucket, key, info.etag or etag), MANIFEST_TYPE, md5)

    def _link_image(self, image_id: str, link: ArtifactLink) -> Record:
        """Link the record to its manifest; a repeat of a link that already landed counts as success."""
        try:
            return self.ims.patch_image(image_id, {"link": link.to_dict()})
        except ImsApiError as err:
            if err.status not in (409, 422):
                raise
            current = self.ims.get_image(image_id)
            if (current.get("link") or {}).get("path") == link.path:
                LOGGER.info("image %s already carries this link", image_id)
                return current
            raise

    def _undo(
        self,
        original: BaseException,
        created_image_id: Optional[str],
        prefix: str,
        keys: List[str],
        resumable: bool = False,
    ) -> None:
        """Remove what a failed run created; raise ``CleanupError`` naming whatever is left.

        After the first S3 failure the other S3 deletes are not tried (S3 is down or
        refusing; each would wait through its own retries) but named as leftovers.
        The record this run created is then kept when it is ``resumable`` (it carries
        the job's run key): a re-run of the job finds it, clears its prefix and
        finishes it, whereas deleting it would orphan what is left in S3.
        """
        LOGGER.warning("publish failed (%s); removing what this run created", type(original).__name__)
        self.deadline.allow_cleanup()
        leftovers: List[str] = []
        s3_failed = False
        try:
            self.storage.abort_multipart_uploads(prefix)
        except ImsHelperError as err:
            LOGGER.warning("cleanup: %s", err)
            leftovers.append(f"multipart uploads under s3://{self.s3_bucket}/{prefix}")
            s3_failed = True
        for key in keys:
            if s3_failed:
                leftovers.append(f"s3://{self.s3_bucket}/{key}")
                continue
            try:
                self.storage.delete(key)
            except ImsHelperError as err:
                LOGGER.warning("cleanup: %s", err)
                leftovers.append(f"s3://{self.s3_bucket}/{key}")
                s3_failed = True
        if created_image_id and s3_failed and resumable:
            leftovers.append(f"IMS image record {created_image_id} (kept: a re-run of this job finishes it)")
        elif created_image_id:
            try:
                self.ims.delete_image(created_image_id)
            except ImsApiError as err:
                if err.status != 404:
                    leftovers.append(f"IMS image record {created_image_id}")
            except ImsHelperError:
                leftovers.append(f"IMS image record {created_image_id}")
        if leftovers:
            raise CleanupError(original, leftovers) from original

    # -- jobs -----------------------------------------------------------------------

    def image_set_job_status(self, ims_job_id: str, job_status: str) -> Dict[str, Any]:
        """Set an IMS job's status; returns ``{"result": "success", "ims_job_record": {...}}``."""
        job_id = check_uuid(ims_job_id)
        if job_status not in JOB_STATUSES:
            raise InputError(f"job status {job_status!r} is not one of {', '.join(JOB_STATUSES)}")
        try:
            record = self.ims.patch_job(job_id, {"status": job_status})
        except ImsApiError as err:
            if err.status == 404:
                raise InputError(f"IMS has no job {job_id}; check the job id (or IMS_JOB_ID)") from None
            raise
        return {"result": "success", "ims_job_record": record}

    # -- recipes --------------------------------------------------------------------

    def recipe_upload(
        self,
        name: str,
        filepath: Union[str, os.PathLike],
        distro: str,
        template_dictionary: Optional[Mapping[str, str]] = None,
        arch: Optional[str] = None,
        require_dkms: Optional[bool] = None,
    ) -> Record:
        """Load a recipe (a gzipped tarball) into IMS and S3, idempotently; returns the recipe record.

        A recipe of that name whose object md5 and template dictionary match is
        returned as is; one without a link is uploaded into; otherwise a new
        record is created, the tarball stored at ``recipes/ID/recipe.tar.gz`` and
        the record linked.
        """
        check_name(name, "recipe name")
        if distro not in RECIPE_DISTROS:
            raise InputError(f"distro {distro!r} is not one of {', '.join(RECIPE_DISTROS)}")
        check_arch(arch)
        path, size = check_file(filepath, "recipe")
        # The archive check reads the whole file anyway; its md5 saves hashing it again below.
        stat_now = os.stat(path)
        self._md5_cache[(path, stat_now.st_size, stat_now.st_mtime_ns)] = check_gzipped_tar(path)
        templates = dict(template_dictionary or {})
        for key, value in templates.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise InputError("template dictionary keys and values must be non-empty strings")
        self.storage.check_bucket()

        same_name = [r for r in self.ims.list_recipes() if r.get("name") == name]
        empty = None
        for recipe in same_name:
            if not recipe.get("link"):
                empty = recipe
                continue
            if _template_dict(recipe) != templates:
                continue
            info = self._linked_object(recipe)
            if info is not None and info.size == size and info.metadata.get("md5sum") == self._local_md5(path):
                LOGGER.info("recipe %r is already loaded as %s; nothing to do", name, recipe.get("id"))
                return recipe

        if empty is not None:
            recipe, created = empty, False
            LOGGER.info("recipe %r exists as %s without a tarball; uploading into it", name, recipe.get("id"))
        else:
            body: Dict[str, Any] = {"recipe_type": "kiwi-ng", "linux_distribution": distro, "name": name}
            if templates:
                body["template_dictionary"] = [{"key": k, "value": v} for k, v in templates.items()]
            if arch:
                body["arch"] = arch
            if require_dkms is not None:
                body["require_dkms"] = bool(require_dkms)
            recipe, created = self.ims.create_recipe(body), True
        recipe_id = check_uuid(recipe.get("id"), "recipe id returned by IMS")
        key = RECIPE_KEY.format(recipe_id=recipe_id)
        try:
            upload = ArtifactUpload("recipe", path, key, RECIPE_ARTIFACT_TYPE, size, {})
            stored = ArtifactUploader(self.storage, self.transfer, self.progress, self.deadline).upload_all([upload])
            # A CreateMultipartUpload whose answer was lost leaves an upload nobody completes; sweep it.
            self.storage.abort_multipart_uploads(key)
            patch: Dict[str, Any] = {"link": ArtifactLink.s3(self.s3_bucket, key, stored[0].etag).to_dict()}
            if not created:
                # A record left by an earlier run gets what this run asked for, so the next run finds it.
                if _template_dict(recipe) != templates:
                    patch["template_dictionary"] = [{"key": k, "value": v} for k, v in templates.items()]
                if arch and recipe.get("arch") != arch:
                    patch["arch"] = arch
                if require_dkms is not None and recipe.get("require_dkms") != bool(require_dkms):
                    patch["require_dkms"] = bool(require_dkms)
            return self.ims.patch_recipe(recipe_id, patch)
        except BaseException as err:
            self._undo_recipe(err, recipe_id if created else None, key)
            raise

    def _linked_object(self, recipe: Record) -> Optional[ObjectInfo]:
        """HEAD of the object a recipe links to (in whatever bucket); None when it is missing or unreadable."""
        link = ArtifactLink(path=str((recipe.get("link") or {}).get("path", "")))
        if not link.bucket or not link.key:
            return None
        try:
            return self.storage.head(link.key, bucket=link.bucket)
        except StorageError as err:
            LOGGER.warning("cannot read the tarball of recipe %s: %s", recipe.get("id"), err)
            return None

    def _undo_recipe(self, original: BaseException, created_id: Optional[str], key: str) -> None:
        self.deadline.allow_cleanup()
        leftovers: List[str] = []
        try:
            self.storage.abort_multipart_uploads(key)
            self.storage.delete(key)
        except ImsHelperError:
            leftovers.append(f"s3://{self.s3_bucket}/{key}")
        if created_id:
            try:
                self.ims.delete_recipe(created_id)
            except ImsHelperError:
                leftovers.append(f"IMS recipe record {created_id}")
        if leftovers:
            raise CleanupError(original, leftovers) from original


def _template_dict(recipe: Record) -> Dict[str, str]:
    pairs = recipe.get("template_dictionary") or []
    return {str(p.get("key")): str(p.get("value")) for p in pairs if isinstance(p, dict)}


def check_gzipped_tar(path: str) -> str:
    """Refuse anything but a complete gzip-compressed tar archive; returns the file's hex md5.

    The file is read once, to its end: every tar header is walked and gzip checks
    its CRC and length, so a truncated or corrupted archive is refused too; the
    md5 is taken from the same bytes.
    """
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise InputError(f"recipe {path!r} is not gzip-compressed; give a .tar.gz archive")
        handle.seek(0)
        reader = HashingReader(handle)
        try:
            with gzip.GzipFile(fileobj=reader, mode="rb") as unzipped:  # type: ignore[call-overload]  # reading needs no seek
                with tarfile.open(fileobj=unzipped, mode="r|") as archive:
                    for _member in archive:
                        pass
                while unzipped.read(HASH_BLOCK):  # to the end, where gzip checks CRC and length
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise InputError(f"recipe {path!r} is not a readable gzipped tar archive ({type(err).__name__})") from None
        while reader.read(HASH_BLOCK):  # whatever gzip did not need still belongs to the md5
            pass
    return reader.md5
