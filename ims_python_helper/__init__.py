"""ims_python_helper: publish boot images and recipes into the Cray Image Management Service (IMS).

from ims_python_helper import ImsHelper
from ims_python_helper.session import create_oauth_session, get_admin_client_auth

client_id, secret, token_url = get_admin_client_auth()
session = create_oauth_session(client_id, secret, "/etc/cray/ca/certificate_authority.crt", token_url, 60)
helper = ImsHelper(ims_url=..., session=session, s3_endpoint=..., s3_access_key=..., s3_secret_key=...,
                   s3_ssl_verify="true", s3_bucket="boot-images")
result = helper.image_upload_artifacts("my-image", job_id, rootfs=["rootfs.sqsh"], kernel=["vmlinuz"])
"""

#: The one source of the version (setup.py reads it; ``--version`` prints it). 3.3 is the API of the
#: earlier client this package replaces (the job pods install it under ``ims-python-helper>=3.3,<3.4``);
#: the third number counts this package's releases from 100, above the earlier client's 3.3.x.
__version__ = "3.3.100"

import logging
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    CleanupError,
    ConfigError,
    ImsApiError,
    ImsHelperError,
    ImsImagesExistWithName,
    InputError,
    StorageError,
    TransportError,
)
from .vocabulary import (
    BOOT_PARAMS_ARTIFACT_TYPE,
    DEBUG_KERNEL_ARTIFACT_TYPE,
    DEFAULT_IMS_API_URL,
    INITRD_ARTIFACT_TYPE,
    KERNEL_ARTIFACT_TYPE,
    SQUASHFS_ARTIFACT_TYPE,
)

#: The package's logger, under the name earlier clients used (``ims_python_helper.LOGGER``).
LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .helper import ImsHelper


def __getattr__(name: str) -> Any:
    # ImsHelper brings boto3 (about half a CPU second of imports): the job-pod toolkit
    # (fetch, download, wait_for_kiwi_repos) imports this package without needing it.
    if name == "ImsHelper":
        from .helper import ImsHelper

        return ImsHelper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "ImsHelper",
    "ImsImagesExistWithName",
    "ImsHelperError",
    "AuthError",
    "CleanupError",
    "ConfigError",
    "ImsApiError",
    "InputError",
    "StorageError",
    "TransportError",
    "DEFAULT_IMS_API_URL",
    "SQUASHFS_ARTIFACT_TYPE",
    "KERNEL_ARTIFACT_TYPE",
    "INITRD_ARTIFACT_TYPE",
    "DEBUG_KERNEL_ARTIFACT_TYPE",
    "BOOT_PARAMS_ARTIFACT_TYPE",
]
