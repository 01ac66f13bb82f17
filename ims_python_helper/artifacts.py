"""The artifact kinds an IMS image is made of: one table, used everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

SQUASHFS_ARTIFACT_TYPE = "application/vnd.cray.image.rootfs.squashfs"
KERNEL_ARTIFACT_TYPE = "application/vnd.cray.image.kernel"
INITRD_ARTIFACT_TYPE = "application/vnd.cray.image.initrd"
DEBUG_KERNEL_ARTIFACT_TYPE = "application/vnd.cray.image.debug.kernel"
BOOT_PARAMS_ARTIFACT_TYPE = "application/vnd.cray.image.parameters.boot"
MANIFEST_TYPE = "application/json"
RECIPE_ARTIFACT_TYPE = "application/x-compressed-tar"

MANIFEST_KEY = "manifest.json"


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
