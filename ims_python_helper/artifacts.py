"""Kept so that ``from ims_python_helper.artifacts import ...`` still works; the names live in ``vocabulary``."""

from __future__ import annotations

from .vocabulary import (  # noqa: F401  (re-exported)
    ARTIFACT_KINDS,
    BOOT_PARAMS_ARTIFACT_TYPE,
    DEBUG_KERNEL_ARTIFACT_TYPE,
    INITRD_ARTIFACT_TYPE,
    KERNEL_ARTIFACT_TYPE,
    KIND_BY_NAME,
    KIND_BY_TYPE,
    MANIFEST_KEY,
    MANIFEST_TYPE,
    RECIPE_ARTIFACT_TYPE,
    SQUASHFS_ARTIFACT_TYPE,
    ArtifactKind,
    kind_for_type,
)
