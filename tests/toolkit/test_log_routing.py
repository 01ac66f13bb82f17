"""Log lines written while progress bars are shown go around the bars; a missing template extra is named."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from ims_python_helper.errors import ConfigError
from ims_python_helper.pod.template import template_recipe
from ims_python_helper.progress import BarProgress


def test_log_line_during_bars_is_written_whole_between_bar_redraws():
    pytest.importorskip("tqdm")
    screen = io.StringIO()
    handler = logging.StreamHandler(screen)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bars = BarProgress(screen)
        bars.start("rootfs", 1000)
        bars.advance("rootfs", 500)
        logging.getLogger("t").warning("a log line while the bars are drawn")
        bars.advance("rootfs", 500)
        bars.finish("rootfs")
        bars.close(True)
        assert handler.stream is screen  # restored after the bars are gone
    finally:
        root.removeHandler(handler)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", screen.getvalue())  # cursor movements of the redraw
    # tqdm clears the bar line before the record and draws again after it: the record stands on a line of its own.
    line = next(part for part in text.replace("\r", "\n").split("\n") if "a log line" in part)
    assert line.strip() == "a log line while the bars are drawn"


def test_missing_template_extra_is_named(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / ".ims_recipe_template.yaml").write_text("template_files: [config.xml]\n")
    (recipe / "config.xml").write_text("{{ x }}\n")
    values = tmp_path / "values"
    values.write_text("x: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ConfigError, match=r"ims-python-helper\[template\]"):
        template_recipe(recipe, values)
