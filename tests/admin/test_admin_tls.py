"""The admin tasks over HTTPS: IMS, the token endpoint and S3 (presigned ranged GETs included) verified against
the stack's CA; with a CA that did not sign S3's certificate the check fails in one line naming S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from tests.admin.conftest import bundle_files, manifest_md5s
from tests.support import Artifacts, CliRunner


def test_verify_export_and_import_over_https(
    run_cli: CliRunner, tls_env: Dict[str, Optional[str]], artifacts: Artifacts, s3: Any, tmp_path: Path
):
    published = run_cli("image", "upload_artifacts", "tls-admin", *artifacts.flags(), env=tls_env)
    assert published.code == 0, published.stderr
    record = published.json["ims_image_record"]

    verified = run_cli("image", "verify", record["id"], env=tls_env)
    assert verified.code == 0, verified.stderr
    bundle = tmp_path / "bundle"
    exported = run_cli("image", "export", record["id"], str(bundle), env=tls_env)
    assert exported.code == 0, exported.stderr
    imported = run_cli("image", "import", str(bundle), "--name", "tls-admin-copy", env=tls_env)
    assert imported.code == 0, imported.stderr
    copy = imported.json["ims_image_record"]
    assert copy["id"] != record["id"]
    assert manifest_md5s(s3, copy) == manifest_md5s(s3, record) == bundle_files(bundle)
    assert run_cli("image", "verify", copy["id"], env=tls_env).code == 0


def test_verify_with_a_wrong_s3_ca_fails_in_one_line(
    run_cli: CliRunner, tls_env: Dict[str, Optional[str]], small_artifacts: Artifacts, wrong_ca: str
):
    published = run_cli("image", "upload_artifacts", "tls-admin-ca", *small_artifacts.flags(), env=tls_env)
    assert published.code == 0, published.stderr
    result = run_cli(
        "image", "verify", published.json["ims_image_record"]["id"], env={**tls_env, "S3_SSL_VERIFY": wrong_ca}
    )
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ims_python_helper: error:")]
    assert len(errors) == 1 and "s3://" in errors[0] and "--s3-ssl-verify" in errors[0], result.stderr
