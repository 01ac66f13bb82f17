"""Loading recipes through the real CLI: idempotent, gzipped tarballs only, checked through S3 and the IMS API.

S3 traffic goes through a counting proxy (``faults/proxy.py``), so "uploads
nothing" is measured, not assumed. Run alone with ``pytest tests/test_recipes.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests.support import CliResult

RECIPE_FILES = {"config.xml": b"<image schemaversion='7.4' name='compute'/>\n", "root/etc/motd": b"welcome\n" * 64}
TEMPLATES = ("CSM_RELEASE_VERSION=1.5.0", "SLES_MIRROR=https://mirror.example/sles")


def make_recipe(path: Path, files: Optional[Dict[str, bytes]] = None) -> Path:
    """A gzipped tarball with fixed timestamps, so the same content gives the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in (files or RECIPE_FILES).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def change_gzip_header_byte(path: Path) -> None:
    """Change one byte of the tarball (the gzip header's timestamp): same size, still valid, another md5."""
    data = bytearray(path.read_bytes())
    data[4] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def load_recipe(run_cli, s3_proxy):
    """Run ``recipe upload`` with S3 through the proxy and no S3_BUCKET (so the default bucket ``ims``)."""

    def load(name: str, path: Path, *extra: str, env: Optional[Dict[str, Optional[str]]] = None) -> CliResult:
        s3_proxy.reset()
        environ: Dict[str, Optional[str]] = {"S3_ENDPOINT": s3_proxy.url, "S3_BUCKET": None}
        environ.update(env or {})
        return run_cli("recipe", "upload", name, str(path), "--distro", "sles15", *extra, env=environ)

    return load


def template_flags(*pairs: str) -> List[str]:
    flags: List[str] = []
    for pair in pairs:
        flags += ["--template-dictionary", pair]
    return flags


def recipes_named(ims_api: Any, name: str) -> List[Dict[str, Any]]:
    return [r for r in ims_api.get("/recipes") if r.get("name") == name]


def loaded(result: CliResult) -> Dict[str, Any]:
    assert result.code == 0, result.stderr
    assert result.json["result"] == "success"
    record: Dict[str, Any] = result.json["ims_recipe_record"]
    return record


# -- loading ----------------------------------------------------------------------------


def test_loading_a_recipe_stores_the_tarball_and_links_a_new_record(load_recipe, tmp_path, s3, ims_api):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")

    result = load_recipe("compute-sles15", tarball, *template_flags(*TEMPLATES))

    record = loaded(result)
    key = f"recipes/{record['id']}/recipe.tar.gz"
    head = s3.head_object(Bucket="ims", Key=key)
    assert head["ContentLength"] == tarball.stat().st_size
    assert head["Metadata"]["md5sum"] == hashlib.md5(tarball.read_bytes()).hexdigest()
    assert s3.get_object(Bucket="ims", Key=key)["Body"].read() == tarball.read_bytes()
    assert record == ims_api.get(f"/recipes/{record['id']}")
    assert record["link"] == {"path": f"s3://ims/{key}", "etag": head["ETag"].strip('"'), "type": "s3"}
    assert record["recipe_type"] == "kiwi-ng"
    assert record["linux_distribution"] == "sles15"
    assert record["template_dictionary"] == [
        {"key": "CSM_RELEASE_VERSION", "value": "1.5.0"},
        {"key": "SLES_MIRROR", "value": "https://mirror.example/sles"},
    ]
    assert result.stdout.startswith("{\n")


def test_arch_and_require_dkms_are_recorded(load_recipe, tmp_path):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")

    record = loaded(load_recipe("arm-dkms", tarball, "--arch", "aarch64", "--require-dkms"))

    assert record["arch"] == "aarch64"
    assert record["require_dkms"] is True


def test_s3_bucket_setting_chooses_the_recipe_bucket(load_recipe, tmp_path, s3):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")

    record = loaded(load_recipe("in-boot-images", tarball, env={"S3_BUCKET": "boot-images"}))

    assert record["link"]["path"] == f"s3://boot-images/recipes/{record['id']}/recipe.tar.gz"
    s3.head_object(Bucket="boot-images", Key=f"recipes/{record['id']}/recipe.tar.gz")


# -- idempotency -----------------------------------------------------------------------


def test_loading_the_same_recipe_twice_makes_one_recipe_and_uploads_nothing(
    load_recipe, s3_proxy, tmp_path, ims_api, stack
):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    first = loaded(load_recipe("twice", tarball, *template_flags(*TEMPLATES)))
    log = stack.ims.request_log
    log_size = log.stat().st_size

    second = loaded(load_recipe("twice", tarball, *template_flags(*TEMPLATES)))

    assert second == first
    assert [r["id"] for r in recipes_named(ims_api, "twice")] == [first["id"]]
    assert s3_proxy.bytes_sent == 0
    assert s3_proxy.writes() == []
    with open(log, encoding="utf-8") as handle:
        handle.seek(log_size)
        calls = [" ".join(line.split()[1:3]) for line in handle]
    assert all(call.startswith("GET ") for call in calls), calls


def test_a_recipe_without_templates_loaded_twice_is_one_recipe(load_recipe, tmp_path, ims_api, s3_proxy):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    first = loaded(load_recipe("no-templates", tarball))

    second = loaded(load_recipe("no-templates", tarball))

    assert second["id"] == first["id"]
    assert first["template_dictionary"] == []
    assert len(recipes_named(ims_api, "no-templates")) == 1
    assert s3_proxy.bytes_sent == 0


def test_the_order_of_template_values_does_not_make_a_new_recipe(load_recipe, tmp_path, ims_api):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    first = loaded(load_recipe("template-order", tarball, *template_flags(*TEMPLATES)))

    second = loaded(load_recipe("template-order", tarball, *template_flags(*reversed(TEMPLATES))))

    assert second["id"] == first["id"]
    assert len(recipes_named(ims_api, "template-order")) == 1


def _change_header_byte(tarball: Path, flags: List[str]) -> List[str]:
    change_gzip_header_byte(tarball)
    return flags


def _change_content(tarball: Path, flags: List[str]) -> List[str]:
    make_recipe(tarball, dict(RECIPE_FILES, **{"config.xml": b"<image schemaversion='7.4' name='compute2'/>\n"}))
    return flags


CHANGES = {
    "one-tarball-byte": _change_header_byte,
    "tarball-content": _change_content,
    "one-template-value": lambda tarball, flags: template_flags(TEMPLATES[0], "SLES_MIRROR=https://mirror.example/x"),
    "template-added": lambda tarball, flags: [*flags, "--template-dictionary", "EXTRA=1"],
    "template-removed": lambda tarball, flags: template_flags(TEMPLATES[0]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_tarball_or_template_makes_a_new_recipe_and_leaves_the_old_one(
    change, load_recipe, tmp_path, ims_api, s3, s3_proxy
):
    name = f"changed-{change}"
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    flags = template_flags(*TEMPLATES)
    old = loaded(load_recipe(name, tarball, *flags))
    old_object = s3.get_object(Bucket="ims", Key=f"recipes/{old['id']}/recipe.tar.gz")["Body"].read()
    size_before = tarball.stat().st_size

    new_flags = CHANGES[change](tarball, flags)
    new = loaded(load_recipe(name, tarball, *new_flags))

    if change == "one-tarball-byte":
        assert tarball.stat().st_size == size_before
    assert new["id"] != old["id"]
    assert {r["id"] for r in recipes_named(ims_api, name)} == {old["id"], new["id"]}
    assert ims_api.get(f"/recipes/{old['id']}") == old
    assert s3.get_object(Bucket="ims", Key=f"recipes/{old['id']}/recipe.tar.gz")["Body"].read() == old_object
    assert s3.get_object(Bucket="ims", Key=f"recipes/{new['id']}/recipe.tar.gz")["Body"].read() == tarball.read_bytes()
    assert s3_proxy.bytes_sent == tarball.stat().st_size
    # Loading the changed recipe again finds the new one.
    assert loaded(load_recipe(name, tarball, *new_flags))["id"] == new["id"]


def test_a_recipe_record_without_a_link_is_uploaded_into(load_recipe, tmp_path, ims_api):
    empty = ims_api.post("/recipes", {"name": "left-empty", "recipe_type": "kiwi-ng", "linux_distribution": "sles15"})
    tarball = make_recipe(tmp_path / "recipe.tar.gz")

    record = loaded(load_recipe("left-empty", tarball, *template_flags(*TEMPLATES)))

    assert record["id"] == empty["id"]
    assert record["link"]["path"] == f"s3://ims/recipes/{empty['id']}/recipe.tar.gz"
    assert {p["key"]: p["value"] for p in record["template_dictionary"]} == dict(t.split("=", 1) for t in TEMPLATES)
    assert [r["id"] for r in recipes_named(ims_api, "left-empty")] == [empty["id"]]
    # ... and is then the recipe a second load finds.
    assert loaded(load_recipe("left-empty", tarball, *template_flags(*TEMPLATES)))["id"] == empty["id"]


def test_a_record_without_a_link_is_given_the_templates_arch_and_dkms_asked_for(load_recipe, tmp_path, ims_api):
    empty = ims_api.post(
        "/recipes",
        {
            "name": "left-empty-other-settings",
            "recipe_type": "kiwi-ng",
            "linux_distribution": "sles15",
            "template_dictionary": [{"key": "FROM_AN_EARLIER_RUN", "value": "x"}],
        },
    )
    tarball = make_recipe(tmp_path / "recipe.tar.gz")

    record = loaded(load_recipe("left-empty-other-settings", tarball, "--arch", "aarch64", "--require-dkms"))

    assert record["id"] == empty["id"]
    assert (record["template_dictionary"], record["arch"], record["require_dkms"]) == ([], "aarch64", True)
    assert loaded(load_recipe("left-empty-other-settings", tarball))["id"] == empty["id"]


def test_a_recipe_whose_tarball_is_gone_is_not_reused(load_recipe, tmp_path, ims_api, s3):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    old = loaded(load_recipe("tarball-gone", tarball))
    s3.delete_object(Bucket="ims", Key=f"recipes/{old['id']}/recipe.tar.gz")

    new = loaded(load_recipe("tarball-gone", tarball))

    assert new["id"] != old["id"]
    s3.head_object(Bucket="ims", Key=f"recipes/{new['id']}/recipe.tar.gz")


def test_a_recipe_is_found_through_its_link_whatever_bucket_the_caller_names(load_recipe, tmp_path, s3_proxy):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    first = loaded(load_recipe("found-by-link", tarball))

    second = loaded(load_recipe("found-by-link", tarball, env={"S3_BUCKET": "boot-images"}))

    assert second["id"] == first["id"]
    assert s3_proxy.bytes_sent == 0


# -- refused input ------------------------------------------------------------------------


def _plain_tar(path: Path) -> None:
    path.write_bytes(gzip.decompress(make_recipe(path).read_bytes()))


def _truncated(path: Path) -> None:
    data = make_recipe(path, {"big": bytes(range(256)) * 4096}).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_checksum(path: Path) -> None:
    data = bytearray(make_recipe(path).read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32
    path.write_bytes(bytes(data))


REFUSED = {
    "plain-tar": (_plain_tar, "not gzip-compressed"),
    "gzipped-text": (lambda p: p.write_bytes(gzip.compress(b"just some text\n" * 40)), "not a readable gzipped tar"),
    "zip": (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 60), "not gzip-compressed"),
    "empty": (lambda p: p.write_bytes(b""), "not gzip-compressed"),
    "truncated": (_truncated, "not a readable gzipped tar"),
    "bad-checksum": (_bad_checksum, "not a readable gzipped tar"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_anything_but_a_gzipped_tarball_is_refused_before_anything_is_created(
    kind, load_recipe, tmp_path, snapshot, s3_proxy
):
    make_file, message = REFUSED[kind]
    path = tmp_path / "recipe.tar.gz"
    make_file(path)
    before = snapshot()

    result = load_recipe(f"refused-{kind}", path)

    assert result.code == 1
    assert message in result.stderr
    assert result.json["result"] == "failure"
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot() == before
    assert s3_proxy.exchanges == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--template-dictionary", "NO_EQUALS_SIGN"], "is not KEY=VALUE"),
        (["--template-dictionary", "A=1", "--template-dictionary", "A=2"], "given twice"),
    ],
    ids=["not-key-value", "key-twice"],
)
def test_malformed_recipe_arguments_are_usage_errors(argv, message, run_cli, tmp_path, snapshot):
    tarball = make_recipe(tmp_path / "recipe.tar.gz")
    before = snapshot()
    distro = [] if "--distro" in argv else ["--distro", "sles15"]

    result = run_cli("recipe", "upload", "malformed", str(tarball), *distro, *argv)

    assert result.code == 2
    assert message in result.stderr
    assert snapshot() == before
