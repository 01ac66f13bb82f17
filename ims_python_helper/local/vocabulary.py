"""The IMS vocabulary the local IMS enforces, copied from the IMS API description.

These tables are the server's own, taken from the enums of ``ims-openapi.yaml``
(``JobStatuses``, ``JobTypes``, the ``arch``, ``recipe_type`` and
``linux_distribution`` enums, the image metadata patch operations) and never
imported from the client: the local IMS exists to check the client, so it
must not share the client's tables and with them the client's mistakes.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

#: ``arch`` of images, recipes and jobs.
ARCHES: Tuple[str, ...] = ("aarch64", "x86_64")
#: ``arch`` a record gets when the request names none.
DEFAULT_ARCH = "x86_64"

#: Job states while the image is being made, in the order a job passes them.
_BUILD_STATES = ("creating", "fetching_image", "fetching_recipe", "waiting_for_repos", "building_image")
#: ``JobStatuses``, plus ``packaging_artifacts``: the server accepts it and job pods
#: set it (ims-facts.md lists it), though the published enum leaves it out.
JOB_STATUSES: Tuple[str, ...] = (*_BUILD_STATES, "packaging_artifacts", "waiting_on_user", "error", "success")
#: Status of a job the server has just created.
INITIAL_JOB_STATUS = "creating"
#: ``JobTypes``.
JOB_TYPES: Tuple[str, ...] = ("create", "customize")

#: ``recipe_type`` of a recipe.
RECIPE_TYPES: Tuple[str, ...] = ("kiwi-ng", "packer")
#: ``linux_distribution`` of a recipe.
LINUX_DISTRIBUTIONS: Tuple[str, ...] = ("sles12", "sles15", "centos7")

#: ``operation`` of an image metadata patch.
METADATA_OPERATIONS: Tuple[str, ...] = ("set", "remove")

#: The only link type IMS resolves.
S3_LINK_TYPE = "s3"
#: Manifest version IMS accepts when an image is linked.
MANIFEST_VERSION = "1.0"
#: MIME type of the rootfs artifact; a linked manifest must list exactly one.
ROOTFS_ARTIFACT_TYPE = "application/vnd.cray.image.rootfs.squashfs"

# --------------------------------------------------------------------------- schema generations

#: Today's IMS: images carry ``metadata``.
CURRENT_SCHEMA = "current"
#: IMS before 3.16 (CSM 1.5 and earlier): no image ``metadata``, unknown fields refused with 400.
LEGACY_SCHEMA = "legacy"
SCHEMAS: Tuple[str, ...] = (CURRENT_SCHEMA, LEGACY_SCHEMA)
#: Environment variable that picks the schema when the caller names none.
SCHEMA_ENV = "IMS_LOCAL_SCHEMA"

#: What ``GET /version`` answers, per schema generation.
API_VERSIONS = {CURRENT_SCHEMA: "3.20.0-local", LEGACY_SCHEMA: "3.15.3-local"}


def resolve_schema(schema: Optional[str] = None) -> str:
    """``schema`` when given, else ``IMS_LOCAL_SCHEMA``, else ``current``; ValueError for anything else."""
    source = "the IMS schema"
    if schema is None:
        schema = os.environ.get(SCHEMA_ENV, "").strip() or CURRENT_SCHEMA
        source = SCHEMA_ENV
    if schema not in SCHEMAS:
        raise ValueError(f"{source} must be one of {', '.join(SCHEMAS)}, not {schema!r}")
    return schema
