"""A recipe is data: its templates render in Jinja2's sandbox, and one that reaches for more is refused whole.

The refused payloads are the classic ways out of a plain Jinja2 ``Environment``
(reading a file, importing ``os``, walking ``__class__``/``__subclasses__``,
function ``__globals__``); each must fail naming the file and line, with every
recipe file left as it was, and the pod's fetch must leave nothing and set the
job to ``error``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from ims_python_helper.pod.template import TemplateError, template_recipe
from tests.support import kiwi_config, make_recipe_tgz

FETCH = "ims_python_helper.fetch"
CANARY = "canary-client-secret-4f1e"

#: Template payloads that must be refused; ``SECRET`` is replaced by the path of a file holding ``CANARY``.
PAYLOADS: Dict[str, str] = {
    "open through self.__init__.__globals__": "{{ self.__init__.__globals__.__builtins__.open('SECRET').read() }}",
    "os through cycler's globals": "{{ cycler.__init__.__globals__.os.popen('cat SECRET').read() }}",
    "os through a function's __globals__": "{{ lipsum.__globals__['os'].popen('cat SECRET').read() }}",
    "__subclasses__ walk from a string": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "__subclasses__ through the attr filter": "{{ ()|attr('__class__')|attr('__base__')|attr('__subclasses__')() }}",
    "__import__ through joiner's builtins": (
        "{{ joiner.__init__.__globals__.__builtins__.__import__('os').popen('cat SECRET').read() }}"
    ),
    "__class__ through str.format": "{{ '{0.__class__.__mro__}'.format(name) }}",
    "include of a file": "{% include 'SECRET' %}",
    "import of a file": "{% import 'SECRET' as secret %}{{ secret }}",
    "changing a value": "{{ packages.append('evil') }}",
    "a string of a terabyte": "{{ 'x' * 10 ** 12 }}",
}

GOOD_TEMPLATE = (
    '<image name="{{ name }}">\n'
    '{% for package in packages %}  <package name="{{ package|lower }}"/>\n{% endfor %}'
    "{% if debug %}  <debug/>\n{% else %}  <quiet/>\n{% endif %}"
    "  <size>{{ size_gib * 1024 }}M {{ packages|length }} {{ name|replace('-', '_')|upper }}</size>\n"
    "</image>\n"
)
GOOD_RENDERED = (
    '<image name="sles15-compute">\n'
    '  <package name="kernel-default"/>\n  <package name="vim"/>\n'
    "  <quiet/>\n"
    "  <size>4096M 2 SLES15_COMPUTE</size>\n"
    "</image>\n"
)
VALUES = "name: sles15-compute\npackages: [Kernel-Default, VIM]\ndebug: false\nsize_gib: 4\n"
TEMPLATE_LIST = "template_files:\n  - a-script.sh\n  - config.xml\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file standing in for the mounted admin client secret."""
    path = tmp_path / "client-secret"
    path.write_text(CANARY + "\n")
    return path


def _evil_config(payload: str, secret: Path) -> str:
    return f"<image>\n  <name>{{{{ name }}}}</name>\n  {payload.replace('SECRET', str(secret))}\n</image>\n"


def _recipe(tmp_path: Path, config: str) -> Path:
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / ".ims_recipe_template.yaml").write_text(TEMPLATE_LIST)
    (recipe / "a-script.sh").write_text("echo {{ name }}\n")  # fine on its own, listed first
    (recipe / "config.xml").write_text(config)
    return recipe


@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_a_template_reaching_past_its_values_is_refused_and_no_file_changes(case, tmp_path, secret):
    config = _evil_config(PAYLOADS[case], secret)
    recipe = _recipe(tmp_path, config)
    values = tmp_path / "values.yaml"
    values.write_text(VALUES)

    with pytest.raises(TemplateError) as refused:
        template_recipe(recipe, values)

    message = str(refused.value)
    assert message.startswith("template config.xml line 3 "), message
    assert "\n" not in message and CANARY not in message
    assert (recipe / "config.xml").read_text() == config
    assert (recipe / "a-script.sh").read_text() == "echo {{ name }}\n"
    assert sorted(p.name for p in recipe.iterdir()) == [".ims_recipe_template.yaml", "a-script.sh", "config.xml"]


def test_variables_filters_loops_and_conditionals_render_as_before(tmp_path):
    recipe = _recipe(tmp_path, GOOD_TEMPLATE)
    values = tmp_path / "values.yaml"
    values.write_text(VALUES)

    rendered = template_recipe(recipe, values)

    assert [Path(p).name for p in rendered] == ["a-script.sh", "config.xml"]
    assert (recipe / "config.xml").read_text() == GOOD_RENDERED
    assert (recipe / "a-script.sh").read_text() == "echo sles15-compute\n"


def _pod_fetch(pod: Any, presign: Any, tmp_path: Path, config_xml: str) -> Tuple[Path, Any]:
    """The pods' recipe fetch of a recipe whose config.xml (and a-script.sh) are templates: (its directory, result)."""
    files = {"config.xml": config_xml, "a-script.sh": "echo {{ name }}\n", ".ims_recipe_template.yaml": TEMPLATE_LIST}
    recipe = make_recipe_tgz(tmp_path / "recipe.tgz", files)
    values = tmp_path / "template_dictionary"
    values.write_text(VALUES)
    work = tmp_path / "mnt-recipe"
    work.mkdir()
    env = {"TEMPLATE_DICTIONARY_PATH": str(values)}
    return work, pod.run(FETCH, "--recipe", "True", str(work), presign(recipe), env=env)


def test_the_pods_fetch_of_a_recipe_reading_the_secret_fails_the_job_and_leaves_nothing(
    pod, presign, ims_api, tmp_path, secret
):
    payload = PAYLOADS["open through self.__init__.__globals__"]
    work, result = _pod_fetch(pod, presign, tmp_path, _evil_config(payload, secret))

    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "template config.xml line 3 is refused" in errors[0], result.stderr
    assert CANARY not in result.stderr + result.stdout
    assert ims_api.get(f"/jobs/{pod.job_id}")["status"] == "error"
    assert list(work.iterdir()) == []


def test_the_pods_fetch_renders_a_recipe_using_values_filters_loops_and_conditionals(pod, presign, tmp_path):
    work, result = _pod_fetch(pod, presign, tmp_path, GOOD_TEMPLATE)

    assert result.code == 0, result.stderr
    assert (work / "config.xml").read_text() == GOOD_RENDERED


def test_kiwi_config_with_template_values_still_renders(tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / ".ims_recipe_template.yaml").write_text("template_files:\n  - config.xml\n")
    (recipe / "config.xml").write_text(kiwi_config("https://packages.local/repository/sles"))
    values = tmp_path / "values.yaml"
    values.write_text("image_name: compute\n")

    template_recipe(recipe, values)

    assert 'name="compute"' in (recipe / "config.xml").read_text()
