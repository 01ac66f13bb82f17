"""Package the platform CA as an RPM for the image being built (the pod that prepares the build environment).

``build_ca_rpm()`` takes no arguments, as the pods call it: the spec IMS mounts
(``SPEC_FILE``), the CA (``CA_FILE``) and the output (``RPM_PATH``) are module
constants (tests point them elsewhere). The CA goes into a source archive
``cray_ca_cert-1.0.1.tar.gz`` holding ``cray_ca_cert-1.0.1/etc/cray/ca/certificate_authority.crt``
(the spec's ``Source0``); ``rpmbuild -bb --target noarch`` runs in a temporary
top directory and the RPM is moved into place only when it was built. The
mounted spec has no ``BuildArch``, and without ``--target`` rpmbuild stamps the
build host's arch into the header: an image of the other arch would refuse it.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile

from .errors import ConfigError, ImsHelperError, InputError

LOGGER = logging.getLogger(__name__)

RPM_NAME = "cray_ca_cert"
RPM_VERSION = "1.0.1"
RPM_RELEASE = "1"
RPM_ARCH = "noarch"
#: Where the CA is installed by the RPM (relative to /).
CA_INSTALL_DIR = "etc/cray/ca"
CA_NAME = "certificate_authority.crt"

SPEC_FILE = "/mnt/specfile/cray_ca_cert.spec"
CA_FILE = "/etc/cray/ca/certificate_authority.crt"
RPM_DIR = "/mnt/ca-rpm"
RPM_FILE_NAME = f"{RPM_NAME}-{RPM_VERSION}-{RPM_RELEASE}.{RPM_ARCH}.rpm"


class RpmBuildError(ImsHelperError):
    """rpmbuild failed or did not produce the expected package."""


def _source_archive(sources: str) -> str:
    """The spec's Source0: the CA under ``NAME-VERSION/etc/cray/ca/``."""
    top = f"{RPM_NAME}-{RPM_VERSION}"
    path = os.path.join(sources, f"{top}.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        info = tar.gettarinfo(CA_FILE, arcname=f"{top}/{CA_INSTALL_DIR}/{CA_NAME}")
        info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "root", "root"
        with open(CA_FILE, "rb") as handle:
            tar.addfile(info, handle)
    return path


def _rpmbuild_command(top: str) -> list[str]:
    """rpmbuild of ``SPEC_FILE`` in the top directory ``top``, for every arch."""
    return [
        "rpmbuild",
        "-bb",
        # A CA file fits every arch; the header must say so whatever the pod's host is.
        "--target",
        RPM_ARCH,
        "--define",
        f"_topdir {top}",
        "--define",
        f"_tmppath {os.path.join(top, 'tmp')}",
        "--define",
        f"ca_cert_file {CA_FILE}",
        SPEC_FILE,
    ]


def build_ca_rpm() -> str:
    """Build ``RPM_DIR/cray_ca_cert-1.0.1-1.noarch.rpm`` from ``SPEC_FILE`` and ``CA_FILE``; returns its path.

    Raises ``ConfigError`` when rpmbuild, the spec or the CA is missing and
    ``RpmBuildError`` (with rpmbuild's last error line) when the build fails.
    """
    if shutil.which("rpmbuild") is None:
        raise ConfigError("rpmbuild is not installed; install rpm-build (rpm)")
    for path, what in ((SPEC_FILE, "RPM spec"), (CA_FILE, "platform CA")):
        if not os.path.isfile(path):
            raise ConfigError(f"the {what} {path} is not there; is it mounted into the pod?")
    os.makedirs(RPM_DIR, exist_ok=True)
    target = os.path.join(RPM_DIR, RPM_FILE_NAME)
    with tempfile.TemporaryDirectory(prefix="ca-rpm-") as top:
        for sub in ("BUILD", "BUILDROOT", "RPMS", "SOURCES", "SPECS", "SRPMS"):
            os.mkdir(os.path.join(top, sub))
        try:
            _source_archive(os.path.join(top, "SOURCES"))
        except OSError as err:
            raise InputError(f"cannot read the platform CA {CA_FILE}: {err.strerror}") from None
        LOGGER.info("building %s with %s", RPM_FILE_NAME, SPEC_FILE)
        done = subprocess.run(_rpmbuild_command(top), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or done.stdout.splitlines()
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise RpmBuildError(f"rpmbuild of {SPEC_FILE} failed: {reason}")
        built = glob.glob(os.path.join(top, "RPMS", RPM_ARCH, f"{RPM_NAME}-{RPM_VERSION}-*.rpm"))
        if len(built) != 1:
            raise RpmBuildError(
                f"rpmbuild of {SPEC_FILE} made {len(built)} {RPM_ARCH} {RPM_NAME}-{RPM_VERSION} packages, "
                f"expected one; check the spec's Name, Version and BuildArch"
            )
        staged = target + ".tmp"
        shutil.copyfile(built[0], staged)
        os.replace(staged, target)
    LOGGER.info("built %s", target)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build_ca_rpm()
