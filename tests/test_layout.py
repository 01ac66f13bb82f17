"""The package keeps its shape: rooms by purpose, imports flowing one way, small files, one door for settings.

Measured with radon (cyclomatic complexity) over every module of the client
package outside ``local/`` (the local stack has limits of its own), and with
``ast`` for the imports: every import counts, those inside functions and
under ``TYPE_CHECKING`` too, since a lazy import hides a circle rather than
removing it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from radon.complexity import cc_visit

PACKAGE = Path(__file__).resolve().parent.parent / "ims_python_helper"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 50
MAX_COMPLEXITY = 12
MAX_FACADE_LINES = 200
#: Modules at the package root besides the subpackages: the entries and what every room shares.
MAX_ROOT_MODULES = 14
#: Only the entries (and the option table itself) read the option table; the layers below take built objects.
CONFIG_READERS = {
    "cli.py",
    "config/__init__.py",
    "helper.py",
    "session.py",
    "fetch.py",
    "wait_for_kiwi_repos.py",
    "build_ca_rpm.py",
}
#: The one door for settings: only the option table and the CLI's ``Environment`` read the process environment.
ENVIRONMENT_READERS = {"cli.py", "config/__init__.py"}
CONFIG_IMPORT = re.compile(r"from \.config\b|from ims_python_helper\.config\b|import ims_python_helper\.config\b")


def client_modules() -> List[Path]:
    """Every module of the client package outside local/."""
    return sorted(path for path in PACKAGE.rglob("*.py") if "local" not in path.relative_to(PACKAGE).parts)


def module_name(path: Path) -> str:
    """The dotted name of a module file of the package (``ims_python_helper.pod.download``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: Set[str]) -> Set[str]:
    """The package's modules that ``path`` imports anywhere in its body (a package counts as its __init__)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # "from .pod import download" names the module pod.download; "from .errors import X" the module errors.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module_name(path):
                found.add(target)
    return found


def import_graph(paths: List[Path]) -> Dict[str, Set[str]]:
    known = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, known) for path in paths}


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


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
    assert {"helper.py", "images.py", "recipes.py", "checks.py", "cli.py", "options.py"} <= names


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


def test_only_the_entries_read_the_option_table():
    readers = sorted(
        str(path.relative_to(PACKAGE))
        for path in client_modules()
        if CONFIG_IMPORT.search(path.read_text(encoding="utf-8"))
    )
    assert set(readers) <= CONFIG_READERS, f"{readers} import config; pass them the objects the option table builds"


def reads_the_environment(source: str) -> bool:
    """True when ``source`` touches ``os.environ``/``os.getenv`` (or imports them from ``os``)."""
    names = {"environ", "environb", "getenv", "getenvb"}
    for node in ast.walk(ast.parse(source)):
        on_os = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
        if on_os and node.attr in names:  # type: ignore[attr-defined]
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & names:
            return True
    return False


def test_the_environment_checker_sees_every_way_in():
    assert reads_the_environment("import os\nx = os.environ.get('A')")
    assert reads_the_environment("import os\nx = os.getenv('A')")
    assert reads_the_environment("from os import getenv\nx = getenv('A')")
    assert not reads_the_environment("environ = {}\nx = environ.get('A')  # os.environ, in a comment")


def test_only_the_settings_module_and_the_cli_read_the_environment():
    readers = sorted(
        str(path.relative_to(PACKAGE))
        for path in client_modules()
        if reads_the_environment(path.read_text(encoding="utf-8"))
    )
    assert set(readers) <= ENVIRONMENT_READERS, (
        f"{readers} read the environment; add the setting to config.OPTIONS and take it from the settings object"
    )


def test_the_cli_imports_local_only_inside_functions():
    tree = ast.parse((PACKAGE / "cli.py").read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [getattr(node, "module", None) or "" for node in top_level]
    names += [alias.name for node in top_level for alias in node.names]
    assert not [name for name in names if "local" in name.split(".")], f"cli.py imports local/ at the top: {names}"


def test_the_root_holds_the_entries_and_the_shared_pieces_only():
    root = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the root: {root}; put them in their room"


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package_or_local():
    found = circles(import_graph(package_modules()))
    assert not found, f"import circles: {found}"
