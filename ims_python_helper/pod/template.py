"""Recipe templating: render the files a recipe lists with the values IMS mounts into the job pod.

A recipe lists its templates in ``.ims_recipe_template.yaml``::

    template_files:
      - config.xml

and the values come from a YAML mapping mounted at ``/etc/cray/template_dictionary``
(the recipe record's ``template_dictionary``). Each listed file is rendered in
place with Jinja2's sandbox, keeping its mode: a recipe is data, so a template
may use its values, filters, ``for`` and ``if``, and a template that reaches
for more (attributes such as ``__class__``, includes, methods that change a
value) is refused with its file and line. Every template is rendered to memory
before any file is replaced, so a refused one leaves every file as it was.
Jinja2 and PyYAML are imported only when a recipe needs them (the ``template`` extra).

    no dictionary file   -> warn, leave the recipe untemplated
    list, no values      -> fail
    values, no list      -> warn, nothing to render
    neither              -> nothing to do
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict, List, Optional, Union

from ..errors import ConfigError, InputError

LOGGER = logging.getLogger(__name__)

#: The file in a recipe that lists its templates.
TEMPLATE_LIST_NAME = ".ims_recipe_template.yaml"
#: Where IMS mounts the recipe's template values in the job pod.
DEFAULT_DICTIONARY_PATH = "/etc/cray/template_dictionary"
EXTRA_HINT = "pip install 'ims-python-helper[template]'"


class TemplateError(InputError):
    """The recipe's template list or values cannot be used, or a template does not render."""


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"this recipe needs templating, which needs PyYAML and Jinja2: {EXTRA_HINT}") from None
    return yaml


def _jinja2() -> Any:
    try:
        import jinja2
    except ImportError:
        raise ConfigError(f"this recipe needs templating, which needs Jinja2 and PyYAML: {EXTRA_HINT}") from None
    return jinja2


def _load_yaml(path: str, what: str) -> Any:
    yaml = _yaml()
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError) as err:
        raise TemplateError(f"cannot read {what} {path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TemplateError(f"{what} {path} is not valid YAML{where}; fix the file") from None


def load_values(path: str) -> Dict[str, Any]:
    """The template values: a YAML mapping (or IMS's list of ``{key, value}`` pairs)."""
    data = _load_yaml(path, "template dictionary")
    if data is None:
        return {}
    if isinstance(data, list) and all(isinstance(item, dict) and "key" in item for item in data):
        return {str(item["key"]): item.get("value") for item in data}
    if not isinstance(data, dict):
        raise TemplateError(f"template dictionary {path} must be a YAML mapping of names to values")
    return {str(key): value for key, value in data.items()}


def template_files(recipe_root: str) -> List[str]:
    """The real paths of the files the recipe's template list names, each checked to be inside the recipe."""
    root = os.path.realpath(recipe_root)
    list_path = os.path.join(root, TEMPLATE_LIST_NAME)
    data = _load_yaml(list_path, "template list")
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("template_files", []), list):
        raise TemplateError(f"{TEMPLATE_LIST_NAME} must be a mapping with a list 'template_files'")
    paths = []
    for entry in data.get("template_files") or []:
        if not isinstance(entry, str) or not entry.strip():
            raise TemplateError(f"{TEMPLATE_LIST_NAME}: template entry {entry!r} is not a file path")
        resolved = os.path.realpath(os.path.join(root, entry))
        # Components, not a string prefix: /recipe-evil is not inside /recipe.
        if os.path.commonpath([root, resolved]) != root:
            raise TemplateError(
                f"{TEMPLATE_LIST_NAME}: template {entry!r} is outside the recipe; list recipe files only"
            )
        if not os.path.isfile(resolved):
            raise TemplateError(f"{TEMPLATE_LIST_NAME}: template {entry!r} is not a file in the recipe")
        paths.append(resolved)
    return paths


#: Largest text one template may render to, and the largest string or list one ``*`` may make on the way.
MAX_RENDERED_CHARS = 16 * 1024 * 1024
#: Largest exponent of ``**`` in a template (a recipe needs arithmetic for sizes, not huge numbers).
MAX_EXPONENT = 1024


def _sandbox() -> Any:
    """A Jinja2 environment in which a template can read values, filter, loop and branch, and nothing else.

    ``ImmutableSandboxedEnvironment`` refuses underscore attributes (``__class__``,
    ``__globals__``, ...), unsafe function attributes, and methods that change a
    value; its loader refuses every name, so ``include``/``import``/``extends`` fail too. The
    two operators that can exhaust memory with one expression are bounded.
    """
    jinja2 = _jinja2()
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class NoTemplates(jinja2.BaseLoader):  # type: ignore[misc, name-defined]
        def get_source(self, environment: Any, template: str) -> Any:
            raise SecurityError(f"{template!r} cannot be included, imported or extended (a template stands alone)")

    class RecipeSandbox(ImmutableSandboxedEnvironment):  # type: ignore[misc, valid-type]
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"an exponent above {MAX_EXPONENT}")
            if operator == "*" and _repeats_too_much(left, right):
                raise SecurityError(f"a string or list repeated beyond {MAX_RENDERED_CHARS} items")
            return super().call_binop(context, operator, left, right)

    # Not HTML: recipe files (kiwi XML, scripts) must get the values verbatim.
    return RecipeSandbox(
        loader=NoTemplates(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


def _repeats_too_much(left: Any, right: Any) -> bool:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, (str, bytes, list, tuple)) and isinstance(count, int):
            return len(sequence) * count > MAX_RENDERED_CHARS
    return False


def _template_line(err: BaseException) -> Optional[int]:
    """The template line of an error: Jinja2 sets it on syntax errors and rewrites the traceback of the rest."""
    line = getattr(err, "lineno", None)
    frame = err.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == "<template>":
            line = frame.tb_lineno
        frame = frame.tb_next
    return line


def _render(path: str, root: str, values: Dict[str, Any]) -> str:
    """Render one template in the sandbox, to memory; raises ``TemplateError`` naming the file and line."""
    shown = os.path.relpath(path, root)
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except UnicodeDecodeError:
        raise TemplateError(f"template {shown} is not UTF-8 text") from None
    jinja2 = _jinja2()
    size = 0
    parts = []
    try:
        for part in _sandbox().from_string(source).generate(**values):
            size += len(part)
            if size > MAX_RENDERED_CHARS:
                raise TemplateError(f"template {shown} renders to more than {MAX_RENDERED_CHARS} characters; refused")
            parts.append(part)
    except TemplateError:
        raise
    except Exception as err:  # a template can raise anything; each is one line naming file and line
        line = _template_line(err)
        where = f" line {line}" if line else ""
        message = (str(getattr(err, "message", None) or err).splitlines() or [type(err).__name__])[0].rstrip(".")
        if isinstance(err, jinja2.sandbox.SecurityError):
            raise TemplateError(
                f"template {shown}{where} is refused: {message} "
                "(a recipe template may use its values, filters, for and if, nothing more)"
            ) from None
        raise TemplateError(f"template {shown}{where} does not render: {message}") from None
    return "".join(parts)


def _replace(path: str, text: str) -> None:
    """Write ``text`` over ``path`` atomically, keeping the file's mode."""
    mode = os.stat(path).st_mode & 0o7777
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise


def template_recipe(
    recipe_root: Union[str, os.PathLike],
    dictionary_path: Optional[Union[str, os.PathLike]] = None,
    logger: Optional[logging.Logger] = None,
) -> List[str]:
    """Render the recipe's listed templates in place; returns the files rendered.

    Raises ``TemplateError`` for a bad list, a path outside the recipe or a
    template that does not render (before any file is changed), and
    ``ConfigError`` naming the ``template`` extra when Jinja2/PyYAML are missing.
    """
    log = logger or LOGGER
    root = os.fspath(recipe_root)
    values_path = os.fspath(dictionary_path) if dictionary_path is not None else DEFAULT_DICTIONARY_PATH
    has_list = os.path.isfile(os.path.join(root, TEMPLATE_LIST_NAME))
    has_values_file = os.path.isfile(values_path)
    if not has_list and not has_values_file:
        log.debug("recipe has no template list and there is no template dictionary: nothing to template")
        return []
    if not has_values_file:
        log.warning("recipe lists templates but there is no template dictionary at %s; left untemplated", values_path)
        return []
    values = load_values(values_path)
    if not has_list:
        if values:
            log.warning("template values given but the recipe has no %s; nothing to render", TEMPLATE_LIST_NAME)
        return []
    files = template_files(root)
    if files and not values:
        raise TemplateError(
            f"the recipe lists {len(files)} template(s) but the template dictionary {values_path} has no values; "
            "set template_dictionary on the recipe record"
        )
    # Render all first, so a template that fails leaves every file as it was.
    real_root = os.path.realpath(root)
    rendered = [(path, _render(path, real_root, values)) for path in files]
    for path, text in rendered:
        _replace(path, text)
        log.info("rendered template %s", os.path.relpath(path, real_root))
    return files
