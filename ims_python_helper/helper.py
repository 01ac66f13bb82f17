"""ImsHelper: the public facade existing callers construct and call.

It holds the connections (IMS session, S3 client, upload options) and hands
each call to the workflow that does the work: ``images`` (publish and its
undo), ``recipes`` (recipe load) and ``checks`` (input checks).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import requests
from requests.adapters import HTTPAdapter

from .admin.export import ImageExporter
from .admin.import_ import CheckedBundle, check_bundle, import_bundle
from .admin.verify import ImageVerifier
from .clients.deadline import Deadline
from .clients.ims import ImsClient, Record
from .clients.oauth import ClientCredentialsSession, build_retry, open_oauth_session
from .clients.storage import S3Settings, S3Storage
from .clients.transport import DEFAULT_TIMEOUT, parse_ssl_verify, s3_verify_with_ca
from .compat import LegacyCalls, legacy_s3_endpoint, platform_ca
from .config import HelperSettings, platform_ca_cert
from .progress import Progress
from .publish.checks import (  # noqa: F401  (check_name, check_uuid: callers import them from here)
    LocalArtifact,
    PathArg,
    check_name,
    check_publish,
    check_uuid,
    md5_of_file,
    resolve_artifacts,
)
from .publish.images import ImagePublisher, run_key_for, set_job_status  # noqa: F401  (run_key_for is imported from here)
from .publish.recipes import RecipeLoader, check_recipe
from .publish.transfer import TransferOptions
from .publish.workflow import Services
from .vocabulary import (  # noqa: F401  (JOB_STATUSES, RECIPE_DISTROS: callers import them from here)
    DEFAULT_IMAGE_BUCKET,
    DEFAULT_IMS_API_URL,
    JOB_STATUSES,
    MAX_NAME_LENGTH,
    RECIPE_DISTROS,
)

LOGGER = logging.getLogger(__name__)


class ImsHelper(LegacyCalls):
    """Publishes images and recipes into IMS and S3.

    The constructor keeps the keyword names earlier clients used; unknown
    keywords are accepted and ignored. ``session`` should already carry the
    bearer token (see ``ims_python_helper.session.create_oauth_session``).
    ``s3_settings``/``transfer_options`` (``from_settings`` passes them) replace the S3 and upload keywords.
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
        timeout: float = DEFAULT_TIMEOUT,
        deadline: Optional[Deadline] = None,
        part_size: int = TransferOptions.part_size,
        concurrency: int = TransferOptions.concurrency,
        sha256: bool = False,
        s3_checksum: str = S3Settings.checksum_mode,
        s3_addressing_style: str = S3Settings.addressing_style,
        progress: Optional[Progress] = None,
        s3_settings: Optional[S3Settings] = None,
        transfer_options: Optional[TransferOptions] = None,
        **_kwargs: Any,
    ) -> None:
        s3_endpoint = legacy_s3_endpoint(s3_endpoint, _kwargs)
        if _kwargs:
            LOGGER.debug("ImsHelper ignores unknown arguments: %s", ", ".join(sorted(_kwargs)))
        self._connect(ims_url, session, timeout, deadline)
        transfer = transfer_options or TransferOptions(part_size=part_size, concurrency=concurrency, sha256=sha256)
        s3 = s3_settings or S3Settings(
            endpoint=s3_endpoint,
            bucket=s3_bucket or DEFAULT_IMAGE_BUCKET,
            access_key=s3_access_key,
            secret_key=s3_secret_key,
            verify=s3_verify_with_ca(
                parse_ssl_verify(s3_ssl_verify, "s3_ssl_verify"), platform_ca(self.session, platform_ca_cert())
            ),
            checksum_mode=s3_checksum,
            addressing_style=s3_addressing_style,
            timeout=timeout,
            max_pool_connections=transfer.pool_connections,
        )
        self._attach(s3, transfer, progress)

    @classmethod
    def from_settings(cls, settings: HelperSettings, progress: Optional[Progress] = None) -> ImsHelper:
        """Build a helper from the settings the option table built: fetch the OAuth token and prepare S3."""
        deadline = Deadline(settings.deadline)
        session = open_oauth_session(settings.oauth, deadline=deadline)
        return cls(
            settings.ims_url,
            session,
            timeout=settings.timeout,
            deadline=deadline,
            progress=progress,
            s3_settings=settings.s3,
            transfer_options=settings.transfer,
        )

    def _connect(
        self, ims_url: str, session: Optional[requests.Session], timeout: float, deadline: Optional[Deadline]
    ) -> None:
        self.ims_url = (ims_url or DEFAULT_IMS_API_URL).rstrip("/")
        self.deadline = deadline or getattr(session, "deadline", None) or Deadline(None)
        self.session = session if session is not None else requests.Session()
        # Bounded retries for IMS (never for POST), a caller's own session's too, as before; their lines name IMS.
        retries = self.session.retries if isinstance(self.session, ClientCredentialsSession) else 5
        retry = build_retry(retries, deadline=self.deadline, service=f"IMS at {self.ims_url}")
        self.session.mount(self.ims_url, HTTPAdapter(max_retries=retry))
        self.ims = ImsClient(self.ims_url, self.session, timeout=timeout, deadline=self.deadline)

    def _attach(self, s3: S3Settings, transfer: TransferOptions, progress: Optional[Progress]) -> None:
        self.s3_settings = s3
        self.s3_bucket = s3.bucket
        self.storage = S3Storage(s3, deadline=self.deadline)
        self.s3_client = self.storage.client
        self.transfer = transfer
        self.progress = progress or Progress()
        self._services = Services(self.ims, self.storage, self.transfer, self.progress, self.deadline)
        self._images = ImagePublisher(self._services)

    def __repr__(self) -> str:
        return f"<ImsHelper ims_url={self.ims_url!r} s3={self.s3_settings.endpoint!r} bucket={self.s3_bucket!r}>"

    @staticmethod
    def _md5(filename: Union[str, os.PathLike]) -> str:
        """Hex md5 of a file (kept under this name because callers use it)."""
        return md5_of_file(os.fspath(filename))

    def get_image_manifest(self, record: Record) -> Optional[Dict[str, Any]]:
        """The parsed manifest an image record links to, or None when there is none or it cannot be read."""
        manifest = self._images.read_manifest(record)
        return manifest.to_dict() if manifest is not None else None

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
        manifest = self._images.read_manifest(record)
        if manifest is None:
            return False
        paths = {"rootfs": rootfs_path, "kernel": kernel_path, "initrd": initrd_path, "debug": debug_kernel}
        artifacts = resolve_artifacts(dict(paths, boot_parameters=boot_params))
        return self._images.manifest_matches(manifest, artifacts)

    def get_empty_image_record_for_name(
        self, image_name: str, skip_existing: bool, arch: Optional[str] = None
    ) -> Record:
        """An image record without artifacts for ``image_name``.

        With ``skip_existing``: raise ``ImsImagesExistWithName`` when images of that
        name with artifacts exist, else reuse one without a link. Otherwise (or when
        none exists) create a new record.
        """
        return self._images.empty_record_for_name(image_name, skip_existing, arch)

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
        paths = {"rootfs": rootfs, "kernel": kernel, "initrd": initrd, "debug": debug}
        job_id, artifacts = check_publish(image_name, ims_job_id, arch, dict(paths, boot_parameters=boot_parameters))
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
        return self._images.publish(image_name, artifacts, job_id, skip_existing, arch)

    def image_set_job_status(self, ims_job_id: str, job_status: str) -> Dict[str, Any]:
        """Set an IMS job's status; returns ``{"result": "success", "ims_job_record": {...}}``."""
        return set_job_status(self._services, ims_job_id, job_status)

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
        request = check_recipe(name, filepath, distro, template_dictionary, arch, require_dkms, self._services)
        return RecipeLoader(self._services).load(request)

    def image_verify(self, image_id: str, quick: bool = False) -> Dict[str, Any]:
        """Check an image's artifacts against its manifest (``quick``: no bodies read); ``result["ok"]`` if all hold."""
        return ImageVerifier(self._services).verify(image_id, quick)

    def image_export(self, image_id: str, directory: Union[str, os.PathLike]) -> Dict[str, Any]:
        """Download an image's manifest and artifacts into a bundle directory (resumes an interrupted export)."""
        return ImageExporter(self._services).export(image_id, os.fspath(directory))

    def image_import(self, directory: Union[str, os.PathLike, CheckedBundle], name: Optional[str] = None) -> dict:
        """Publish a bundle made by ``image_export``, every file checked first; ``name`` renames the image."""
        checked = directory if isinstance(directory, CheckedBundle) else check_bundle(os.fspath(directory), name)
        return import_bundle(self._services, checked)
