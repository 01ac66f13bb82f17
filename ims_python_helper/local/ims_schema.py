"""What the local IMS accepts in POST and PATCH bodies, per collection and per schema generation.

A refused body gets a problem that names the offending field. Today's IMS
answers 422; IMS before 3.16 (the ``legacy`` generation) knows no image
``metadata`` and refuses any field it does not know in an image body with
400, the way its marshmallow schema did.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Tuple

from ims_python_helper.local.errors import ApiProblem, unprocessable
from ims_python_helper.local.vocabulary import (
    ARCHES,
    CURRENT_SCHEMA,
    DEFAULT_ARCH,
    JOB_STATUSES,
    JOB_TYPES,
    LEGACY_SCHEMA,
    LINUX_DISTRIBUTIONS,
    METADATA_OPERATIONS,
    RECIPE_TYPES,
)

FieldCheck = Callable[[str, Any], Any]
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# --------------------------------------------------------------------------- field checks


def _string(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise unprocessable(f"field '{name}' must be a string")
    if not value:
        raise unprocessable(f"field '{name}' must not be empty")
    return value


def _choice(*choices: str) -> FieldCheck:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise unprocessable(f"field '{name}' must be one of {', '.join(choices)}; got {json.dumps(value)}")
        return value

    return check


def _boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise unprocessable(f"field '{name}' must be true or false")
    return value


def _uuid(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise unprocessable(f"field '{name}' must be a UUID string")
    return value


def _positive_int(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise unprocessable(f"field '{name}' must be an integer of at least 1")
    return value


def _members(name: str, value: Any, required: Tuple[str, ...], optional: Tuple[str, ...]) -> Dict[str, Any]:
    """An object with exactly the named members allowed, the ``required`` ones present."""
    if not isinstance(value, dict):
        raise unprocessable(f"field '{name}' must be an object")
    for key in value:
        if key not in required and key not in optional:
            raise unprocessable(f"unknown field '{name}.{key}'")
    for key in required:
        if key not in value:
            raise unprocessable(f"field '{name}' is missing '{key}'")
    return dict(value)


def _strings(name: str, value: Any, required: Tuple[str, ...], optional: Tuple[str, ...]) -> Dict[str, str]:
    """:func:`_members` whose members are all strings."""
    members = _members(name, value, required, optional)
    for key, member in members.items():
        if not isinstance(member, str):
            raise unprocessable(f"field '{name}.{key}' must be a string")
    return members


def _link(name: str, value: Any) -> Any:
    link = _strings(name, value, ("path", "type"), ("etag",))
    if not link["path"] or not link["type"]:
        raise unprocessable(f"field '{name}' needs a non-empty 'path' and 'type'")
    return link


def _string_map(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise unprocessable(f"field '{name}' must be an object of string values")
    return dict(value)


def _metadata_operation(name: str, value: Any) -> Any:
    operation = _strings(name, value, ("operation", "key"), ("value",))
    if operation["operation"] not in METADATA_OPERATIONS:
        raise unprocessable(f"field '{name}.operation' must be one of {', '.join(METADATA_OPERATIONS)}")
    if operation["operation"] == "set" and "value" not in operation:
        raise unprocessable(f"field '{name}' needs a 'value' for operation 'set'")
    return operation


def _list_of(check: Callable[[str, Any], Any]) -> FieldCheck:
    def check_list(name: str, value: Any) -> Any:
        if not isinstance(value, list):
            raise unprocessable(f"field '{name}' must be a list")
        return [check(f"{name}[{index}]", item) for index, item in enumerate(value)]

    return check_list


def _key_value(name: str, value: Any) -> Any:
    return _strings(name, value, ("key", "value"), ())


def _ssh_container(name: str, value: Any) -> Any:
    container = _members(name, value, (), ("name", "jail"))
    if not isinstance(container.get("name"), str) or not 1 <= len(container["name"]) <= 40:
        raise unprocessable(f"field '{name}.name' must be a string of 1 to 40 characters")
    if not isinstance(container.get("jail"), bool):
        raise unprocessable(f"field '{name}.jail' must be true or false")
    return container


# --------------------------------------------------------------------------- bodies


def _unknown_fields_422(names: List[str]) -> ApiProblem:
    return unprocessable(f"unknown field '{names[0]}'")


def _unknown_fields_400(names: List[str]) -> ApiProblem:
    """What IMS before 3.16 answered: marshmallow's error dict, which names every field, in a 400."""
    errors = {name: ["Unknown field."] for name in names}
    return ApiProblem(400, f"There was a problem validating the supplied image data: {errors}")


@dataclass(frozen=True)
class BodySchema:
    """What a POST or PATCH body may hold; ``unknown`` makes the problem for fields it does not know."""

    fields: Dict[str, FieldCheck]
    required: Tuple[str, ...] = ()
    read_only: Tuple[str, ...] = ("id", "created")
    defaults: Dict[str, Any] = field(default_factory=dict)
    unknown: Callable[[List[str]], ApiProblem] = _unknown_fields_422

    def validate(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Return the checked fields with defaults filled in, or raise the problem that names the first bad one."""
        for name in body:
            if name in self.read_only:
                raise unprocessable(f"field '{name}' is read-only")
        unknown = [name for name in body if name not in self.fields]
        if unknown:
            raise self.unknown(unknown)
        for name in self.required:
            if name not in body:
                raise unprocessable(f"missing required field '{name}'")
        checked = copy.deepcopy(self.defaults)
        for name, value in body.items():
            checked[name] = self.fields[name](name, value)
        return checked

    def without(self, names: Iterable[str], unknown: Callable[[List[str]], ApiProblem]) -> BodySchema:
        """This schema without the fields ``names`` and with another answer to unknown fields."""
        fields = {name: check for name, check in self.fields.items() if name not in names}
        return BodySchema(fields, self.required, self.read_only, dict(self.defaults), unknown)


_ARCH = _choice(*ARCHES)

IMAGE_CREATE = BodySchema(
    fields={"name": _string, "arch": _ARCH, "link": _link, "metadata": _string_map},
    required=("name",),
    defaults={"arch": DEFAULT_ARCH},
)
IMAGE_PATCH = BodySchema(fields={"link": _link, "arch": _ARCH, "metadata": _metadata_operation})
RECIPE_CREATE = BodySchema(
    fields={
        "name": _string,
        "recipe_type": _choice(*RECIPE_TYPES),
        "linux_distribution": _choice(*LINUX_DISTRIBUTIONS),
        "template_dictionary": _list_of(_key_value),
        "arch": _ARCH,
        "require_dkms": _boolean,
        "link": _link,
    },
    required=("name", "recipe_type", "linux_distribution"),
    defaults={"arch": DEFAULT_ARCH, "require_dkms": False, "template_dictionary": []},
)
RECIPE_PATCH = BodySchema(
    fields={"link": _link, "arch": _ARCH, "require_dkms": _boolean, "template_dictionary": _list_of(_key_value)}
)
JOB_CREATE = BodySchema(
    fields={
        "job_type": _choice(*JOB_TYPES),
        "artifact_id": _uuid,
        "public_key_id": _uuid,
        "image_root_archive_name": _string,
        "kernel_file_name": _string,
        "initrd_file_name": _string,
        "kernel_parameters_file_name": _string,
        "enable_debug": _boolean,
        "build_env_size": _positive_int,
        "require_dkms": _boolean,
        "ssh_containers": _list_of(_ssh_container),
    },
    required=("job_type", "artifact_id", "public_key_id", "image_root_archive_name"),
    read_only=(
        "id",
        "created",
        "status",
        "resultant_image_id",
        "arch",
        "kubernetes_job",
        "kubernetes_service",
        "kubernetes_configmap",
        "kubernetes_namespace",
    ),
    # The defaults the spec documents for a new job.
    defaults={
        "initrd_file_name": "initrd",
        "kernel_parameters_file_name": "kernel-parameters",
        "enable_debug": False,
        "build_env_size": 15,
        "kubernetes_namespace": "default",
    },
)
JOB_PATCH = BodySchema(fields={"resultant_image_id": _uuid, "status": _choice(*JOB_STATUSES)})

#: The body schemas by (collection, method), per schema generation.
SCHEMAS: Dict[str, Dict[Tuple[str, str], BodySchema]] = {
    CURRENT_SCHEMA: {
        ("images", "POST"): IMAGE_CREATE,
        ("images", "PATCH"): IMAGE_PATCH,
        ("recipes", "POST"): RECIPE_CREATE,
        ("recipes", "PATCH"): RECIPE_PATCH,
        ("jobs", "POST"): JOB_CREATE,
        ("jobs", "PATCH"): JOB_PATCH,
    },
}
SCHEMAS[LEGACY_SCHEMA] = {
    **SCHEMAS[CURRENT_SCHEMA],
    ("images", "POST"): IMAGE_CREATE.without(("metadata",), _unknown_fields_400),
    ("images", "PATCH"): IMAGE_PATCH.without(("metadata",), _unknown_fields_400),
}
