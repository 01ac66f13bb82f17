"""build_ca_rpm() runs the real rpmbuild on a spec like the one IMS mounts, and the RPM holds the CA.

The spec IMS mounts has no ``BuildArch``; the image the RPM goes into may be
x86_64 or aarch64, whatever the pod's host is, so the header must say noarch
(``rpm -qp --qf '%{ARCH}'``), as the file name does.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from ims_python_helper import build_ca_rpm as module
from ims_python_helper.errors import ConfigError

SPEC = """Name: cray_ca_cert
Version: 1.0.1
Release: 1
Summary: The platform CA
License: MIT
Source0: %{name}-%{version}.tar.gz

%description
The platform certificate authority.

%prep
%setup -q

%build

%install
mkdir -p %{buildroot}/etc/cray/ca
install -m 0644 etc/cray/ca/certificate_authority.crt %{buildroot}/etc/cray/ca/

%files
/etc/cray/ca/certificate_authority.crt
"""

pytestmark = pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="rpmbuild not installed (apt-get install rpm)")


#: The mounted spec as IMS ships it (no BuildArch), and one that names noarch itself.
SPECS = {"no-buildarch": SPEC, "buildarch-noarch": SPEC.replace("License: MIT\n", "License: MIT\nBuildArch: noarch\n")}


@pytest.fixture(params=sorted(SPECS))
def mounts(tmp_path: Path, monkeypatch, request):
    spec = tmp_path / "specfile" / "cray_ca_cert.spec"
    spec.parent.mkdir()
    spec.write_text(SPECS[request.param])
    ca = tmp_path / "ca" / "certificate_authority.crt"
    ca.parent.mkdir()
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(module, "SPEC_FILE", str(spec))
    monkeypatch.setattr(module, "CA_FILE", str(ca))
    monkeypatch.setattr(module, "RPM_DIR", str(tmp_path / "ca-rpm"))
    return tmp_path


def test_builds_a_noarch_ca_rpm_with_the_ca_inside(mounts: Path):
    path = module.build_ca_rpm()
    assert path == str(mounts / "ca-rpm" / "cray_ca_cert-1.0.1-1.noarch.rpm")
    listing = subprocess.run(["rpm", "-qlp", path], capture_output=True, text=True, check=True).stdout.split()
    assert listing == ["/etc/cray/ca/certificate_authority.crt"]
    info = subprocess.run(
        ["rpm", "-qp", "--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The header's arch, not only the file name: an aarch64 image build refuses an x86_64 package.
    assert info == "cray_ca_cert 1.0.1 1 noarch"
    # The CA inside is the mounted one, byte for byte (rpm records each file's size and SHA-256).
    dump = subprocess.run(["rpm", "-qp", "--dump", path], capture_output=True, text=True, check=True).stdout.split()
    ca = (mounts / "ca" / "certificate_authority.crt").read_bytes()
    assert dump[0] == "/etc/cray/ca/certificate_authority.crt"
    assert int(dump[1]) == len(ca)
    assert dump[3] == hashlib.sha256(ca).hexdigest()


def test_missing_ca_is_one_line_error_and_no_rpm(mounts: Path):
    (mounts / "ca" / "certificate_authority.crt").unlink()
    with pytest.raises(ConfigError, match=r"platform CA .* is not there"):
        module.build_ca_rpm()
    assert not (mounts / "ca-rpm").exists()


def test_broken_spec_is_one_line_error_and_no_rpm(mounts: Path):
    (mounts / "specfile" / "cray_ca_cert.spec").write_text(SPEC.replace("%files\n", "%files\n/not/built\n"))
    with pytest.raises(module.RpmBuildError) as caught:
        module.build_ca_rpm()
    assert "\n" not in str(caught.value)
    assert list((mounts / "ca-rpm").iterdir()) == []
