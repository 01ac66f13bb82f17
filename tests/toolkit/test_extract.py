"""Malicious recipe archives are refused whole: one line naming the member, nothing outside, nothing left."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Callable, List

import pytest

from ims_python_helper.errors import InputError
from ims_python_helper.pod.extract import UnsafeArchive, safe_extract
from ims_python_helper.pod.template import TemplateError, template_recipe


def _file(name: str, data: bytes = b"data\n", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info


def make_tar(path: Path, members: List[tarfile.TarInfo], data: bytes = b"data\n") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


BAD: List[tuple] = [
    ("dotdot", lambda: [_file("config.xml"), _file("../evil")], "'..'"),
    ("dotdot_nested", lambda: [_file("config.xml"), _file("root/../../evil")], "'..'"),
    ("absolute", lambda: [_file("config.xml"), _file("/tmp/evil-absolute")], "absolute path"),
    ("symlink_escape", lambda: [_file("config.xml"), _link("escape", "../outside", tarfile.SYMTYPE)], "symlink"),
    ("symlink_absolute", lambda: [_file("config.xml"), _link("etc", "/etc", tarfile.SYMTYPE)], "symlink"),
    (
        "symlink_then_write_through",
        lambda: [_link("sub", ".", tarfile.SYMTYPE), _link("sub/up", "..", tarfile.SYMTYPE), _file("sub/up/evil")],
        "outside",
    ),
    ("hardlink_escape", lambda: [_file("config.xml"), _link("hard", "../outside/secret", tarfile.LNKTYPE)], "'..'"),
    ("hardlink_absolute", lambda: [_file("config.xml"), _link("hard", "/etc/passwd", tarfile.LNKTYPE)], "absolute"),
    ("device", lambda: [_file("config.xml"), _device("null")], "device file"),
    ("fifo", lambda: [_file("config.xml"), _fifo("pipe")], "fifo"),
]


@pytest.fixture(params=["with-tar-filters", "without-tar-filters"])
def tar_filters(request, monkeypatch):
    """Python 3.12+ tar filters present, and absent as on 3.9: the refusals must not depend on them."""
    if request.param == "without-tar-filters":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


@pytest.mark.parametrize("members,reason", [pytest.param(m, r, id=i) for i, m, r in BAD])
def test_malicious_member_is_refused_and_nothing_is_left(tmp_path: Path, members: Callable, reason: str, tar_filters):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep me\n")
    dest = tmp_path / "recipe"
    dest.mkdir()
    archive = make_tar(tmp_path / "recipe.tgz", members())
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    with pytest.raises(UnsafeArchive) as caught:
        safe_extract(archive, dest)

    message = str(caught.value)
    assert "\n" not in message and "refused member" in message and reason in message
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written anywhere, nothing left
    assert (outside / "secret").read_text() == "keep me\n"
    assert not Path("/tmp/evil-absolute").exists()


def test_good_archive_with_inside_links_extracts_with_modes(tmp_path: Path):
    dest = tmp_path / "recipe"
    dest.mkdir()
    (dest / "recipe.tgz").write_bytes(b"")  # what the fetch leaves beside it
    members = [
        _file("config.xml"),
        _file("root/script.sh", mode=0o755),
        _link("root/link", "../config.xml", tarfile.SYMTYPE),
        _link("hard", "config.xml", tarfile.LNKTYPE),
    ]
    names = safe_extract(make_tar(tmp_path / "good.tgz", members), dest)
    assert names == ["config.xml", "hard", "root"]
    assert (dest / "root" / "link").read_bytes() == b"data\n"
    assert os.stat(dest / "root" / "script.sh").st_mode & 0o777 == 0o755
    assert os.path.samefile(dest / "hard", dest / "config.xml")
    assert sorted(os.listdir(dest)) == ["config.xml", "hard", "recipe.tgz", "root"]


def test_truncated_archive_is_one_line_error_and_leaves_nothing(tmp_path: Path):
    dest = tmp_path / "recipe"
    dest.mkdir()
    archive = make_tar(tmp_path / "r.tgz", [_file("a", b"x" * 100000), _file("b", b"y" * 100000)], b"x" * 100000)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as caught:
        safe_extract(archive, dest)
    assert "\n" not in str(caught.value)
    assert os.listdir(dest) == []


def _recipe(tmp_path: Path, template_list: str) -> Path:
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "config.xml").write_text("<image name='{{ name }}'/>\n")
    os.chmod(recipe / "config.xml", 0o640)
    (recipe / ".ims_recipe_template.yaml").write_text(template_list)
    return recipe


def test_template_path_outside_by_prefix_trick_is_refused(tmp_path: Path):
    recipe = _recipe(tmp_path, "template_files:\n  - ../recipe-evil/config.xml\n")
    evil = tmp_path / "recipe-evil"
    evil.mkdir()
    (evil / "config.xml").write_text("{{ name }}\n")
    values = tmp_path / "values.yaml"
    values.write_text("name: x\n")
    with pytest.raises(TemplateError, match="outside the recipe"):
        template_recipe(recipe, values)
    assert (evil / "config.xml").read_text() == "{{ name }}\n"
    assert (recipe / "config.xml").read_text() == "<image name='{{ name }}'/>\n"


def test_template_renders_in_place_keeping_mode(tmp_path: Path):
    recipe = _recipe(tmp_path, "template_files:\n  - config.xml\n")
    values = tmp_path / "values.yaml"
    values.write_text("name: sles15-compute\n")
    assert template_recipe(recipe, values) == [str((recipe / "config.xml").resolve())]
    assert (recipe / "config.xml").read_text() == "<image name='sles15-compute'/>\n"
    assert os.stat(recipe / "config.xml").st_mode & 0o777 == 0o640


def test_template_list_without_values_fails(tmp_path: Path):
    recipe = _recipe(tmp_path, "template_files:\n  - config.xml\n")
    values = tmp_path / "values.yaml"
    values.write_text("{}\n")
    with pytest.raises(TemplateError, match="no values"):
        template_recipe(recipe, values)


def test_no_dictionary_file_warns_and_leaves_recipe(tmp_path: Path, caplog):
    recipe = _recipe(tmp_path, "template_files:\n  - config.xml\n")
    assert template_recipe(recipe, tmp_path / "missing.yaml") == []
    assert "no template dictionary" in caplog.text
    assert "{{ name }}" in (recipe / "config.xml").read_text()


def test_undefined_value_fails_before_any_file_changes(tmp_path: Path):
    recipe = _recipe(tmp_path, "template_files:\n  - config.xml\n")
    values = tmp_path / "values.yaml"
    values.write_text("other: 1\n")
    with pytest.raises(TemplateError, match="'name' is undefined"):
        template_recipe(recipe, values)
    assert "{{ name }}" in (recipe / "config.xml").read_text()
