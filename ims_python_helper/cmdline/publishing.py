"""The publishing commands' arguments: ``image upload_artifacts``, ``image set_job_status``, ``recipe upload``.

Values IMS judges (arches, job statuses, distros) are not refused here: the
help lists the ones known today, and IMS answers for the rest.
"""

from __future__ import annotations

from typing import Any, Tuple

from ..vocabulary import ARCHES, ARTIFACT_KINDS, JOB_STATUSES, RECIPE_DISTROS
from .arguments import StoreOnce, SwitchOnce, uuid_argument


def known(values: Tuple[str, ...]) -> str:
    """Help text for a value IMS judges: the ones known today, without refusing others (a newer IMS may add some)."""
    return f"{', '.join(values)} or another your IMS accepts"


def upload_arguments(upload: Any) -> None:
    """``image upload_artifacts NAME [JOB_ID] -r FILE ...``."""
    upload.add_argument("image_name", help="name of the image record")
    upload.add_argument(
        "ims_job_id", nargs="?", type=uuid_argument, default=None, help="IMS job to update (default: IMS_JOB_ID)"
    )
    for kind in ARTIFACT_KINDS:
        upload.add_argument(
            *kind.flags,
            dest=kind.name,
            action="append",
            metavar="FILE",
            help=f"{kind.help} file, stored as IMAGE_ID/{kind.key}",
        )
    upload.add_argument(
        "--arch",
        action=StoreOnce,
        default=None,
        metavar="ARCH",
        help=f"architecture of the image: {known(ARCHES)} (IMS default: x86_64)",
    )
    upload.add_argument(
        "--skip-existing",
        action=SwitchOnce,
        default=None,
        help="return an image of this name that already holds these files instead of uploading",
    )
    upload.add_argument(
        "--set-job-error", action=SwitchOnce, default=None, help="when the publish fails, set the job's status to error"
    )


def status_arguments(status: Any) -> None:
    """``image set_job_status JOB_ID STATUS``."""
    status.add_argument("ims_job_id", type=uuid_argument, help="IMS job id")
    status.add_argument("job_status", metavar="STATUS", help=f"the job's new status: {known(JOB_STATUSES)}")


def recipe_upload_arguments(recipe_upload: Any) -> None:
    """``recipe upload NAME FILE --distro DISTRO ...``."""
    recipe_upload.add_argument("recipe_name", help="name of the recipe record")
    recipe_upload.add_argument("recipe_file", help="gzipped tar archive (.tar.gz)")
    recipe_upload.add_argument(
        "--distro",
        required=True,
        action=StoreOnce,
        default=None,
        metavar="DISTRO",
        help=f"Linux distribution of the recipe: {known(RECIPE_DISTROS)}",
    )
    recipe_upload.add_argument(
        "--template-dictionary",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a template value; repeat for several",
    )
    recipe_upload.add_argument(
        "--arch", action=StoreOnce, default=None, metavar="ARCH", help=f"architecture of the recipe: {known(ARCHES)}"
    )
    recipe_upload.add_argument("--require-dkms", action=SwitchOnce, default=None)
