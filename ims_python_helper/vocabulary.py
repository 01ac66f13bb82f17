"""The IMS vocabulary the client speaks, stated once: arches, job states, distros, artifact kinds, keys.

Every other client module takes these names from here. (The local IMS in
``local/`` keeps its own copy, taken from the IMS API description, so that it
can catch a mistake in this one.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: Where IMS answers on a Cray system management network.
DEFAULT_IMS_API_URL = "https://api-gw-service-nmn.local/apis/ims"
#: Bucket of image artifacts and manifests.
DEFAULT_IMAGE_BUCKET = "boot-images"
#: Bucket of recipe tarballs.
DEFAULT_RECIPE_BUCKET = "ims"

#: Architectures IMS accepts for images and recipes.
ARCHES = ("x86_64", "aarch64")
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
#: Linux distributions IMS accepts for a recipe.
RECIPE_DISTROS = ("sles12", "sles15", "centos7")
#: Longest image or recipe name accepted.
MAX_NAME_LENGTH = 256

SQUASHFS_ARTIFACT_TYPE = "application/vnd.cray.image.rootfs.squashfs"
KERNEL_ARTIFACT_TYPE = "application/vnd.cray.image.kernel"
INITRD_ARTIFACT_TYPE = "application/vnd.cray.image.initrd"
DEBUG_KERNEL_ARTIFACT_TYPE = "application/vnd.cray.image.debug.kernel"
BOOT_PARAMS_ARTIFACT_TYPE = "application/vnd.cray.image.parameters.boot"
MANIFEST_TYPE = "application/json"
RECIPE_ARTIFACT_TYPE = "application/x-compressed-tar"

#: Object name of an image's manifest under ``IMAGE_ID/``.
MANIFEST_KEY = "manifest.json"
#: Where a recipe's tarball is stored in its bucket.
RECIPE_KEY = "recipes/{recipe_id}/recipe.tar.gz"

#: Image metadata keys through which a run finds the record it created after a crash.
JOB_METADATA_KEY = "ims-python-helper-job-id"
RUN_METADATA_KEY = "ims-python-helper-run-key"


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of image artifact: how callers name it and where it is stored."""

    #: Keyword/attribute name used by the library and the CLI (``rootfs``).
    name: str
    #: Short and long CLI flags.
    flags: Tuple[str, str]
    #: Object name under ``IMAGE_ID/`` in the bucket.
    key: str
    #: MIME type recorded on the object and in the manifest.
    mime_type: str
    #: One-line description for ``--help``.
    help: str


ARTIFACT_KINDS: Tuple[ArtifactKind, ...] = (
    ArtifactKind("rootfs", ("-r", "--rootfs"), "rootfs", SQUASHFS_ARTIFACT_TYPE, "root filesystem (squashfs)"),
    ArtifactKind("kernel", ("-k", "--kernel"), "kernel", KERNEL_ARTIFACT_TYPE, "kernel"),
    ArtifactKind("initrd", ("-i", "--initrd"), "initrd", INITRD_ARTIFACT_TYPE, "initrd"),
    ArtifactKind("debug", ("-d", "--debug"), "debug_kernel", DEBUG_KERNEL_ARTIFACT_TYPE, "debug kernel"),
    ArtifactKind(
        "boot_parameters",
        ("-p", "--boot-parameters"),
        "boot_parameters",
        BOOT_PARAMS_ARTIFACT_TYPE,
        "boot parameters file",
    ),
)

KIND_BY_NAME: Dict[str, ArtifactKind] = {kind.name: kind for kind in ARTIFACT_KINDS}
KIND_BY_TYPE: Dict[str, ArtifactKind] = {kind.mime_type: kind for kind in ARTIFACT_KINDS}


def kind_for_type(mime_type: str) -> Optional[ArtifactKind]:
    """Return the artifact kind recorded with ``mime_type``, if it is one of ours."""
    return KIND_BY_TYPE.get(mime_type)
