"""botocore's model loader, less two costs that creating this package's S3 client does not need.

Every command that touches S3 creates a client, and botocore reads the S3
model, its endpoint rules, the partitions and the SDK defaults from JSON to do
it. Its loader does two things more than that. It lists every service
directory it ships (some 450, each listed again for its API versions) only to
check that ``s3`` is one of them; and it parses the JSON into ``OrderedDict``
objects, where Python's own dict keeps the order of the file as well. The
loader here knows only the services this package asks for (their directories
are still looked up in the same places, ``AWS_DATA_PATH`` first) and parses
into plain dicts: the same files, the same data. Creating an S3 client in a
fresh process took 0.08 CPU s with it against 0.15 without (BENCHMARKS.md,
issue 20), and a job pod pays that in every command.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any, List, Optional

import botocore.loaders
import botocore.session

#: The services this package makes clients for.
SERVICES = ("s3",)
#: The forms botocore ships a model file in, tried in this order.
SUFFIXES = ((".json", open), (".json.gz", gzip.open))


class PlainJSONFileLoader(botocore.loaders.JSONFileLoader):
    """``NAME.json`` or ``NAME.json.gz`` into plain dicts."""

    def exists(self, file_path: str) -> bool:
        return any(os.path.isfile(file_path + suffix) for suffix, _ in SUFFIXES)

    def load_file(self, file_path: str) -> Optional[Any]:
        for suffix, opener in SUFFIXES:
            if os.path.isfile(file_path + suffix):
                with opener(file_path + suffix, "rb") as handle:  # type: ignore[operator]
                    return json.loads(handle.read().decode("utf-8"))
        return None


class ServiceLoader(botocore.loaders.Loader):
    """botocore's ``Loader`` for ``SERVICES`` only: no listing of every service it ships."""

    def list_available_services(self, type_name: str) -> List[str]:
        return list(SERVICES)


def botocore_session() -> botocore.session.Session:
    """A botocore session whose models come through ``ServiceLoader`` (boto3 takes it as ``botocore_session``)."""
    session = botocore.session.Session()
    data_path = session.get_config_variable("data_path")
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)] if data_path else []
    loader = ServiceLoader(extra_search_paths=paths, file_loader=PlainJSONFileLoader())
    session.register_component("data_loader", loader)
    return session
