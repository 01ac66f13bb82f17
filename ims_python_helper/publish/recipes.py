"""Loading a recipe: a gzipped tarball stored at ``recipes/ID/recipe.tar.gz`` and a linked IMS recipe record."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

from ..clients.ims import Record
from ..clients.storage import ObjectInfo
from ..errors import StorageError
from ..vocabulary import RECIPE_ARTIFACT_TYPE, RECIPE_KEY
from .checks import check_arch, check_distro, check_file, check_name, check_templates, check_uuid, recipe_md5
from .manifest import ArtifactLink
from .transfer import ArtifactUpload
from .workflow import Cleanup, Services, find_reusable

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipeRequest:
    """A checked recipe to load: the record's fields and the local tarball."""

    name: str
    distro: str
    templates: Dict[str, str]
    arch: Optional[str]
    require_dkms: Optional[bool]
    path: str
    size: int

    def create_body(self) -> Dict[str, Any]:
        """The body of a new recipe record."""
        body: Dict[str, Any] = {"recipe_type": "kiwi-ng", "linux_distribution": self.distro, "name": self.name}
        if self.templates:
            body["template_dictionary"] = template_list(self.templates)
        if self.arch:
            body["arch"] = self.arch
        if self.require_dkms is not None:
            body["require_dkms"] = bool(self.require_dkms)
        return body

    def missing_from(self, recipe: Record) -> Dict[str, Any]:
        """What a record left by an earlier run lacks of this request, so the next run finds it."""
        patch: Dict[str, Any] = {}
        if template_dict(recipe) != self.templates:
            patch["template_dictionary"] = template_list(self.templates)
        if self.arch and recipe.get("arch") != self.arch:
            patch["arch"] = self.arch
        if self.require_dkms is not None and recipe.get("require_dkms") != bool(self.require_dkms):
            patch["require_dkms"] = bool(self.require_dkms)
        return patch


def template_dict(recipe: Record) -> Dict[str, str]:
    """A record's template dictionary as a plain dict."""
    pairs = recipe.get("template_dictionary") or []
    return {str(p.get("key")): str(p.get("value")) for p in pairs if isinstance(p, dict)}


def template_list(templates: Mapping[str, str]) -> list:
    """A template dictionary in IMS's key/value list form."""
    return [{"key": k, "value": v} for k, v in templates.items()]


def check_recipe(
    name: str,
    filepath: Union[str, os.PathLike],
    distro: str,
    template_dictionary: Optional[Mapping[str, str]],
    arch: Optional[str],
    require_dkms: Optional[bool],
    services: Services,
) -> RecipeRequest:
    """Check every argument and the archive; the archive's md5 is remembered so it is not hashed twice."""
    check_name(name, "recipe name")
    check_distro(distro)
    check_arch(arch)
    path, size = check_file(filepath, "recipe")
    # The archive check reads the whole file anyway; its md5 saves hashing it again below.
    services.remember_md5(path, recipe_md5(path))
    templates = check_templates(template_dictionary)
    return RecipeRequest(name, distro, templates, arch, require_dkms, path, size)


class RecipeLoader:
    """Loads recipes idempotently (see ``ImsHelper.recipe_upload``)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def load(self, request: RecipeRequest) -> Record:
        """Return a matching recipe as is, upload into one without a link, or create, upload and link one."""
        self.services.storage.check_bucket()
        same_name = [r for r in self.services.ims.list_recipes() if r.get("name") == request.name]
        done, _, empty = find_reusable(same_name, lambda r: self._holds(r, request))
        if done is not None:
            LOGGER.info("recipe %r is already loaded as %s; nothing to do", request.name, done.get("id"))
            return done
        if empty is not None:
            LOGGER.info("recipe %r exists as %s without a tarball; uploading into it", request.name, empty.get("id"))
            return self._upload_into(empty, False, request)
        return self._upload_into(self.services.ims.create_recipe(request.create_body()), True, request)

    def _holds(self, recipe: Record, request: RecipeRequest) -> bool:
        if template_dict(recipe) != request.templates:
            return False
        info = self._linked_object(recipe)
        return (
            info is not None
            and info.size == request.size
            and info.metadata.get("md5sum") == self.services.local_md5(request.path)
        )

    def _upload_into(self, recipe: Record, created: bool, request: RecipeRequest) -> Record:
        recipe_id = check_uuid(recipe.get("id"), "recipe id returned by IMS")
        key = RECIPE_KEY.format(recipe_id=recipe_id)
        cleanup = Cleanup(self.services, "recipe upload")
        cleanup.objects(key, [key])
        if created:
            cleanup.record(f"IMS recipe record {recipe_id}", lambda: self.services.ims.delete_recipe(recipe_id))
        try:
            upload = ArtifactUpload("recipe", request.path, key, RECIPE_ARTIFACT_TYPE, request.size, {})
            stored = self.services.upload([upload])
            # A CreateMultipartUpload whose answer was lost leaves an upload nobody completes; sweep it.
            self.services.storage.abort_multipart_uploads(key)
            patch: Dict[str, Any] = {"link": ArtifactLink.s3(self.services.bucket, key, stored[0].etag).to_dict()}
            if not created:
                patch.update(request.missing_from(recipe))
            return self.services.ims.patch_recipe(recipe_id, patch)
        except BaseException as err:
            cleanup.undo(err)
            raise

    def _linked_object(self, recipe: Record) -> Optional[ObjectInfo]:
        """HEAD of the object a recipe links to (in whatever bucket); None when it is missing or unreadable."""
        link = ArtifactLink(path=str((recipe.get("link") or {}).get("path", "")))
        if not link.bucket or not link.key:
            return None
        try:
            return self.services.storage.head(link.key, bucket=link.bucket)
        except StorageError as err:
            LOGGER.warning("cannot read the tarball of recipe %s: %s", recipe.get("id"), err)
            return None
