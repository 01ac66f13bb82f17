"""The README stays true to the code: its option table is the one --help is made from."""

from __future__ import annotations

import re
from pathlib import Path

from ims_python_helper.config import OPTIONS, options_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_readme_option_table_is_generated_from_the_settings_table():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- options:start -->\n", 1)[1].split("<!-- options:end -->", 1)[0]

    assert table.strip() == options_markdown().strip(), "regenerate the README table from config.options_markdown()"


def test_every_option_and_env_var_is_documented():
    readme = (ROOT / "README.md").read_text()
    for option in OPTIONS:
        for flag in option.flags:
            assert f"`{flag}`" in readme
        for name in option.env:
            assert f"`{name}`" in readme


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"run the linters and the whole test suite \| `([^`]+)`", readme)

    assert command is not None
    assert command.group(1) == "make test"
    assert ci.strip().splitlines()[-1] == command.group(1)
