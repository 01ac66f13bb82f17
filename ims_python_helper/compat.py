"""The names older callers of the earlier client still use, kept apart from the facade.

``ImsHelper`` inherits ``LegacyCalls``: the ``_ims_*`` methods (one IMS call
each, with the earlier client's argument shapes) and the lazily made
``s3_resource``. They go through the same IMS client and S3 client as the rest
of the library, so they get its timeouts, retries, deadline and one-line errors
(an IMS error status is an ``ImsApiError``, which is also a
``requests.exceptions.HTTPError``, as ``raise_for_status`` gave before).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Union

import boto3
import requests

from .clients.ims import ImsClient, Record
from .clients.storage import S3Settings, connection_arguments
from .publish.checks import check_uuid
from .publish.recipes import template_list

LOGGER = logging.getLogger(__name__)


def legacy_s3_endpoint(s3_endpoint: Optional[str], extra: Dict[str, Any]) -> Optional[str]:
    """The S3 endpoint, also when given under the earlier keyword ``s3_host`` (removed from ``extra``)."""
    s3_host = extra.pop("s3_host", None)
    return s3_endpoint or s3_host


def platform_ca(session: Optional[requests.Session], ca_cert: Optional[str] = None) -> Optional[str]:
    """The CA bundle a library caller trusts for the platform: its session's, else ``ca_cert`` when that is a file.

    ``ca_cert`` is ``CA_CERT`` as the entry (``ImsHelper``) read it through the option table. ``s3_ssl_verify``
    "true" (or not given) verifies S3 against the result, as the CLI does with --cert/CA_CERT.
    """
    verify = getattr(session, "verify", None)
    if isinstance(verify, str) and os.path.isfile(verify):
        return verify
    return ca_cert if ca_cert and os.path.isfile(ca_cert) else None


def make_s3_resource(settings: S3Settings, client: Any) -> Any:
    """A boto3 S3 resource for the same endpoint and keys, whose requests go through ``client``.

    Sharing the client keeps one connection pool and the client's settings
    (TLS verification, retries, checksum mode, the run's deadline).
    """
    resource = boto3.session.Session().resource("s3", **connection_arguments(settings))
    resource.meta.client = client
    return resource


class LegacyCalls:
    """IMS calls under the earlier client's private names, which older job scripts and services call."""

    ims: ImsClient
    s3_settings: S3Settings
    s3_client: Any
    _s3_resource: Any = None

    @property
    def s3_resource(self) -> Any:
        """A boto3 S3 resource on the helper's endpoint and credentials (made on first use)."""
        if self._s3_resource is None:
            self._s3_resource = make_s3_resource(self.s3_settings, self.s3_client)
        return self._s3_resource

    # -- jobs -------------------------------------------------------------------------

    def _ims_job_patch_job_status(self, ims_job_id: str, ims_job_status: str) -> Record:
        """PATCH a job's status; returns the job record."""
        LOGGER.info("PATCH job %s status=%s", ims_job_id, ims_job_status)
        return self.ims.patch_job(check_uuid(ims_job_id), {"status": ims_job_status})

    def _ims_job_patch_resultant_image_id(self, ims_job_id: str, result_id: str) -> Record:
        """PATCH a job's resultant_image_id; returns the job record."""
        LOGGER.info("PATCH job %s resultant_image_id=%s", ims_job_id, result_id)
        return self.ims.patch_job(check_uuid(ims_job_id), {"resultant_image_id": result_id})

    # -- images -----------------------------------------------------------------------

    def _ims_images_get(self) -> List[Record]:
        """Every image record."""
        return self.ims.list_images()

    def _ims_image_get(self, image_id: str) -> Record:
        """One image record."""
        return self.ims.get_image(check_uuid(image_id, "image id"))

    def _ims_image_create(self, name: str, arch: Optional[str] = None) -> Record:
        """Create an image record (no run key: the earlier client's create was a plain POST too)."""
        return self.ims.create_image(name, arch=arch)

    def _ims_image_patch(self, image_id: str, data: Record) -> Record:
        """PATCH an image record with ``data``."""
        return self.ims.patch_image(check_uuid(image_id, "image id"), data)

    def _ims_image_delete(self, image_id: str) -> None:
        """Delete an image record (returns None; the earlier client returned the raw response)."""
        self.ims.delete_image(check_uuid(image_id, "image id"))

    # -- recipes ----------------------------------------------------------------------

    def _ims_recipes_get(self) -> List[Record]:
        """Every recipe record."""
        return self.ims.list_recipes()

    def _ims_recipe_create(
        self,
        name: str,
        linux_distribution: Optional[str] = None,
        template_dictionary: Optional[Mapping[str, str]] = None,
        arch: Optional[str] = None,
        require_dkms: Optional[bool] = None,
    ) -> Record:
        """Create a kiwi-ng recipe record; ``template_dictionary`` is a plain mapping, as before."""
        body: Dict[str, Union[str, bool, list, None]] = {
            "recipe_type": "kiwi-ng",
            "linux_distribution": linux_distribution,
            "name": name,
        }
        if template_dictionary:
            body["template_dictionary"] = template_list(template_dictionary)
        if arch:
            body["arch"] = arch
        if require_dkms:
            body["require_dkms"] = bool(require_dkms)
        return self.ims.create_recipe(body)

    def _ims_recipe_patch(self, recipe_id: str, data: Record) -> Record:
        """PATCH a recipe record with ``data``."""
        return self.ims.patch_recipe(check_uuid(recipe_id, "recipe id"), data)

    def _ims_recipe_delete(self, ident: str) -> None:
        """Delete a recipe record (returns None; the earlier client returned the raw response)."""
        self.ims.delete_recipe(check_uuid(ident, "recipe id"))
