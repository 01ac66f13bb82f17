"""The client package keeps the shape issue 10 gave it: small files, short simple functions, one way to settings.

Measured with radon (cyclomatic complexity) over every module of the client
package outside ``local/`` (the local stack has limits of its own).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from radon.complexity import cc_visit

PACKAGE = Path(__file__).resolve().parent.parent / "ims_python_helper"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 50
MAX_COMPLEXITY = 12
MAX_FACADE_LINES = 200
#: Only the CLI (and the option table itself) may read the option table; the layers take built objects.
CONFIG_READERS = {"cli.py", "config.py"}
CONFIG_IMPORT = re.compile(r"from \.config\b|from ims_python_helper\.config\b|import ims_python_helper\.config\b")


def client_modules() -> List[Path]:
    """Every module of the client package outside local/."""
    return sorted(path for path in PACKAGE.glob("*.py"))


def package_modules() -> List[Path]:
    """Every module of the package, local/ included (the file-length limit holds for all of them)."""
    return sorted(PACKAGE.rglob("*.py"))


def functions(blocks: list) -> Iterator[Tuple[str, int, int, int]]:
    """(name, first line, last line, complexity) of every function, method and closure radon found."""
    for block in blocks:
        for method in getattr(block, "methods", []):
            yield from functions([method])
        if hasattr(block, "methods"):
            continue
        yield block.fullname, block.lineno, block.endline, block.complexity
        yield from functions(block.closures)


def test_the_client_package_is_what_the_layout_test_measures():
    names = {path.name for path in client_modules()}
    assert {"helper.py", "images.py", "recipes.py", "checks.py", "cli.py", "config.py"} <= names


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_file_is_too_long(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{path.name} has {lines} lines; split it (at most {MAX_FILE_LINES})"


@pytest.mark.parametrize("path", client_modules(), ids=lambda p: p.name)
def test_no_client_function_is_too_long_or_too_branchy(path: Path):
    too_big = []
    for name, first, last, complexity in functions(cc_visit(path.read_text(encoding="utf-8"))):
        length = last - first + 1
        if length > MAX_FUNCTION_LINES or complexity > MAX_COMPLEXITY:
            too_big.append(f"{path.name}:{first} {name}: {length} lines, complexity {complexity}")
    assert not too_big, f"over {MAX_FUNCTION_LINES} lines or complexity {MAX_COMPLEXITY}: {too_big}"


def test_the_facade_stays_a_facade():
    tree = ast.parse((PACKAGE / "helper.py").read_text(encoding="utf-8"))
    facade = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ImsHelper")
    assert facade.end_lineno is not None
    length = facade.end_lineno - facade.lineno + 1
    assert length <= MAX_FACADE_LINES, f"ImsHelper is {length} lines; move work into the workflow modules"


def test_only_the_cli_reads_the_option_table():
    readers = sorted(path.name for path in client_modules() if CONFIG_IMPORT.search(path.read_text(encoding="utf-8")))
    assert set(readers) <= CONFIG_READERS, f"{readers} import config; pass them the objects the option table builds"


def test_the_cli_imports_local_only_inside_functions():
    tree = ast.parse((PACKAGE / "cli.py").read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [getattr(node, "module", None) or "" for node in top_level]
    names += [alias.name for node in top_level for alias in node.names]
    assert not [name for name in names if "local" in name.split(".")], f"cli.py imports local/ at the top: {names}"
