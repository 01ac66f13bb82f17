"""``image import``: a bundle (see ``bundle``) published into the IMS and S3 the settings point at.

The whole bundle is checked first, every md5 included, and an artifact type
the publisher does not know is refused: a bad bundle creates nothing. Then the
files go through the same publish path as ``image upload_artifacts``
(``publish.images.ImagePublisher``): uploads verified, manifest written, the
record linked last, undone on failure. A re-run reuses the record of that name
that already holds these files, or fills the one a killed run left empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..publish.checks import LocalArtifact, check_arch, check_name
from ..publish.images import ImagePublisher
from ..publish.workflow import Services
from ..vocabulary import ARTIFACT_KINDS, kind_for_type
from .bundle import Bundle, BundleError, check_files, read_bundle


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle whose every file matched its record: what to publish, under which name and arch."""

    bundle: Bundle
    name: str
    arch: Optional[str]
    artifacts: List[LocalArtifact]
    md5s: Dict[str, str]


def check_bundle(directory: str, name: Optional[str] = None) -> CheckedBundle:
    """Read and check a bundle before anything is contacted; ``name`` replaces the source image's name."""
    bundle = read_bundle(directory)
    kinds = []
    for artifact in bundle.artifacts:
        kind = kind_for_type(artifact.type)
        if kind is None:
            known = ", ".join(k.mime_type for k in ARTIFACT_KINDS)
            raise BundleError(
                f"bundle artifact {artifact.file} has type {artifact.type!r}, which this publisher does not know "
                f"(it publishes {known}); nothing was imported"
            )
        if kind in kinds:
            raise BundleError(f"bundle lists two {kind.name} artifacts; an image has one of each kind")
        kinds.append(kind)
    if not any(kind.name == "rootfs" for kind in kinds):
        raise BundleError("the bundle has no rootfs; IMS links only images with exactly one rootfs")
    chosen = check_name(name if name is not None else bundle.image.get("name"), "image name")
    arch = bundle.image.get("arch")
    check_arch(arch if isinstance(arch, str) else None)
    md5s = check_files(bundle)
    artifacts = [
        LocalArtifact(kind=kind, path=bundle.path(artifact), size=artifact.size)
        for kind, artifact in zip(kinds, bundle.artifacts)
    ]
    # The publisher takes the kinds in table order, as upload_artifacts does.
    artifacts.sort(key=lambda a: ARTIFACT_KINDS.index(a.kind))
    return CheckedBundle(bundle, chosen, arch if isinstance(arch, str) else None, artifacts, md5s)


def import_bundle(services: Services, checked: CheckedBundle) -> Dict[str, Any]:
    """Publish a checked bundle; the result of ``image upload_artifacts`` plus where it came from."""
    for path, md5 in checked.md5s.items():
        services.remember_md5(path, md5)  # a re-run compares against these, not another read of the files
    result = ImagePublisher(services).publish(checked.name, checked.artifacts, None, True, checked.arch)
    result["source_image_id"] = checked.bundle.image.get("id")
    return result
