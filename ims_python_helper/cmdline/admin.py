"""The administrators' image commands' arguments and texts: ``image verify``, ``image export``, ``image import``."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .arguments import StoreOnce, SwitchOnce, uuid_argument

#: Help line and description of each admin command, keyed as the CLI registers them.
ADMIN_TEXTS: Dict[str, Tuple[str, Optional[str]]] = {
    "image verify": (
        "check an image's artifacts in S3 against its manifest (exit 1 naming what does not match)",
        "Read the image record and its manifest; for every artifact check that the object exists, that its "
        "ETag and md5sum metadata are the manifest's, and (unless --quick) the md5 of its bytes, read in "
        "parallel ranges into the hash only (nothing is written). Prints one entry per artifact.",
    ),
    "image export": (
        "download an image (manifest and artifacts, md5 checked) into a bundle directory",
        "Download the manifest and every artifact of IMAGE_ID into DIR in parallel ranges, each md5 checked "
        "from the network bytes, and write DIR/bundle.json (format ims-image-bundle, version 1) last. "
        "Run it again after an interruption: it fetches only what is missing.",
    ),
    "image import": (
        "publish an exported bundle into this IMS and S3 (every md5 checked first)",
        "Check every file of the bundle in DIR against its bundle.json (a bad bundle creates nothing), then "
        "publish it like image upload_artifacts: a new record linked last, or the one of that name that "
        "already holds these files.",
    ),
}


def verify_arguments(parser: Any) -> None:
    """``image verify IMAGE_ID [--quick]``."""
    parser.add_argument("image_id", type=uuid_argument, help="IMS image id")
    parser.add_argument(
        "--quick", action=SwitchOnce, default=None, help="only the checks that need no object body (no md5 of bytes)"
    )


def export_arguments(parser: Any) -> None:
    """``image export IMAGE_ID DIR``."""
    parser.add_argument("image_id", type=uuid_argument, help="IMS image id")
    parser.add_argument("directory", metavar="DIR", help="bundle directory (made when absent; must be empty)")


def import_arguments(parser: Any) -> None:
    """``image import DIR [--name NAME]``."""
    parser.add_argument("directory", metavar="DIR", help="bundle directory written by image export")
    parser.add_argument(
        "--name", action=StoreOnce, default=None, help="name of the new image (default: the source image's)"
    )
