"""The command line: parse, resolve settings, call the library, print JSON. No business logic here.

Every command is a handler ``(args, env) -> int or result``: it writes only to
``env.stdout``/``env.stderr``, and ``main`` prints a result as JSON or returns an
int as the exit status. ``local`` commands are reached the same way.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple, Union

from . import __version__
from .admin.import_ import check_bundle
from .clients.redact import install_log_redaction, redact
from .cmdline import collector
from .cmdline.admin import ADMIN_TEXTS, export_arguments, import_arguments, verify_arguments
from .cmdline.arguments import ArgumentParser, StoreOnce, SwitchOnce, job_id_from
from .cmdline.publishing import recipe_upload_arguments, status_arguments, upload_arguments
from .cmdline.signals import SignalGuard, exit_process, write_final_line
from .cmdline.steps import (
    STEP_TEXTS,
    image_fetch,
    image_fetch_arguments,
    recipe_fetch,
    recipe_fetch_arguments,
    recipe_wait_for_repos,
    wait_arguments,
)
from .config import OPTIONS, Option, Settings, describe_source, file_dest, resolve_settings
from .errors import ExitStatus, ImsHelperError, Interrupted, UsageError  # noqa: F401  (Interrupted: its old place)
from .helper import ImsHelper
from .progress import make_progress
from .publish.checks import NO_ROOTFS, LocalArtifact, check_file, check_gzipped_tar, check_name, check_publish
from .vocabulary import ARTIFACT_KINDS, DEFAULT_RECIPE_BUCKET

PROG = "ims_python_helper"
#: The options the command line offers (the others are the job pods' own: their entry modules read them).
CLI_OPTIONS = tuple(option for option in OPTIONS if not option.pod_only)
LOGGER = logging.getLogger("ims_python_helper.cli")


@dataclass
class Environment:
    """What the CLI reads and writes, so tests can drive the real CLI in-process."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


#: A command: parsed arguments and the environment in, an exit status or a JSON-able result out.
Handler = Callable[[argparse.Namespace, Environment], Union[int, Dict[str, Any]]]


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """Global options are accepted before or after the sub-command, as earlier clients allowed."""
    group = parser.add_argument_group("global options (flag, then environment, then mounted file, then default)")
    for option in CLI_OPTIONS:
        if not option.flags:  # read from the environment only (IMS_JOB_ID: the commands take the job as an argument)
            continue
        _add_option(group, option)
        if option.file_flag:
            group.add_argument(
                option.file_flag,
                dest=file_dest(option),
                action=StoreOnce,
                default=argparse.SUPPRESS,
                metavar="PATH",
                help=f"read {option.flags[-1].lstrip('-').replace('-', ' ')} from this file",
            )


def _add_option(group: Any, option: Option) -> None:
    source = describe_source(option)
    text = f"{option.help} [{source}]" if source else option.help
    if option.is_switch:
        group.add_argument(*option.flags, dest=option.dest, action=SwitchOnce, default=argparse.SUPPRESS, help=text)
    else:
        group.add_argument(
            *option.flags,
            dest=option.dest,
            action=StoreOnce,
            default=argparse.SUPPRESS,
            metavar=option.metavar or ("{" + ",".join(option.choices) + "}" if option.choices else "VALUE"),
            help=text,
        )


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = ArgumentParser(
        prog=PROG,
        description="Publish boot images and recipes into the Cray Image Management Service (IMS) and its S3 store.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser)
    resources = parser.add_subparsers(
        title="commands", dest="resource", metavar="{image,recipe,local}", parser_class=ArgumentParser
    )
    resources.required = True
    _add_image_commands(resources)
    _add_recipe_commands(resources)
    # Imported here, not at the top: local/ is reached only through its handlers (heavy imports inside them).
    from .local import commands as local_commands

    local_commands.register(resources)
    return parser


def _command_group(resources: Any, name: str, help_text: str) -> Any:
    """``NAME COMMAND ...``: a resource whose commands are sub-parsers."""
    group = resources.add_parser(name, help=help_text)
    commands = group.add_subparsers(title=f"{name} commands", dest="command", parser_class=ArgumentParser)
    commands.required = True
    return commands


#: Help line and description of each library command.
COMMAND_TEXTS: Dict[str, Tuple[str, Optional[str]]] = {
    "upload_artifacts": (
        "upload artifacts, write the manifest and link a new image record",
        "Upload the artifacts of one image to S3, write its manifest, link the IMS image "
        "record to it, and (with a job id) set the job's resultant_image_id.",
    ),
    "set_job_status": ("set an IMS job's status", None),
    "upload": (
        "load a recipe tarball (idempotent)",
        "Create (or reuse) an IMS recipe record and store the gzipped tarball at "
        "recipes/RECIPE_ID/recipe.tar.gz (bucket default: ims).",
    ),
    **STEP_TEXTS,
    **ADMIN_TEXTS,
}


def _command(
    commands: Any, name: str, handler: Handler, add_arguments: Callable[[Any], None], key: Optional[str] = None
) -> None:
    """One command: its own arguments, then the global options; it calls ``handler``."""
    help_text, description = COMMAND_TEXTS[key or name]
    parser = commands.add_parser(name, help=help_text, description=description)
    add_arguments(parser)
    _add_global_options(parser)
    parser.set_defaults(handler=handler)


def _add_image_commands(resources: Any) -> None:
    image_commands = _command_group(resources, "image", "publish and fetch images, update jobs")
    _command(image_commands, "upload_artifacts", run_upload_artifacts, upload_arguments)
    _command(image_commands, "set_job_status", run_set_job_status, status_arguments)
    _command(image_commands, "fetch", run_image_fetch, image_fetch_arguments, "image fetch")
    _command(image_commands, "verify", run_image_verify, verify_arguments, "image verify")
    _command(image_commands, "export", run_image_export, export_arguments, "image export")
    _command(image_commands, "import", run_image_import, import_arguments, "image import")


def _add_recipe_commands(resources: Any) -> None:
    recipe_commands = _command_group(resources, "recipe", "load and fetch recipes, wait for their repositories")
    _command(recipe_commands, "upload", run_recipe_upload, recipe_upload_arguments)
    _command(recipe_commands, "fetch", run_recipe_fetch, recipe_fetch_arguments, "recipe fetch")
    _command(recipe_commands, "wait_for_repos", run_wait_for_repos, wait_arguments)


# -- handlers: each turns parsed arguments into one library call --------------------


def _resolve(args: argparse.Namespace, env: Environment) -> Settings:
    """Settings from the parsed global options and the environment."""
    raw = {o.dest: getattr(args, o.dest) for o in CLI_OPTIONS if o.flags and hasattr(args, o.dest)}
    for option in CLI_OPTIONS:
        dest = file_dest(option)
        if dest and hasattr(args, dest):
            raw[dest] = getattr(args, dest)
    return resolve_settings(raw, env.environ)


def client_command(run: Callable[[argparse.Namespace, Settings, Environment], Union[int, Dict[str, Any]]]) -> Handler:
    """Make a library command a handler: resolve settings, log to ``env.stderr``, clean up on signals."""

    @functools.wraps(run)
    def handler(args: argparse.Namespace, env: Environment) -> Union[int, Dict[str, Any]]:
        settings = _resolve(args, env)
        log_handler = _configure_logging(settings.log_level, env.stderr)
        try:
            for flag in settings.secrets_on_argv:
                LOGGER.warning(
                    "%s was given on the command line, where other users of this machine can read it; "
                    "use its file or environment variable instead",
                    flag,
                )
            with SignalGuard(lambda message: _report_failure(message, env, as_json=True)):
                return run(args, settings, env)
        except ImsHelperError:
            raise
        except Exception:
            LOGGER.debug("unexpected error", exc_info=True)
            raise
        finally:
            logging.getLogger().removeHandler(log_handler)

    return handler


def _helper(settings: Settings, env: Environment, bucket: Optional[str] = None, direction: str = "upload") -> ImsHelper:
    progress = make_progress(settings.progress, env.stderr, direction)
    return ImsHelper.from_settings(settings.helper_settings(bucket), progress=progress)


@client_command
def run_upload_artifacts(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``image upload_artifacts``."""
    job_id = job_id_from(args.ims_job_id, settings.ims_job_id)
    artifacts = _checked_artifacts(args)
    helper = _helper(settings, env)
    try:
        return helper.publish_image(
            args.image_name, artifacts, job_id=job_id, skip_existing=bool(args.skip_existing), arch=args.arch
        )
    except BaseException:
        if args.set_job_error and job_id:
            _mark_job_failed(helper, job_id)
        raise


def _checked_artifacts(args: argparse.Namespace) -> List[LocalArtifact]:
    """Every check that needs no server, made before the token is fetched: usage errors contact nothing."""
    for kind in ARTIFACT_KINDS:
        given = getattr(args, kind.name) or []
        if len(given) > 1:
            raise UsageError(f"{'/'.join(kind.flags)} was given {len(given)} times; an image has one {kind.name}")
    if not args.rootfs:
        raise UsageError(NO_ROOTFS)
    paths = {kind.name: getattr(args, kind.name) for kind in ARTIFACT_KINDS}
    return check_publish(args.image_name, None, args.arch, paths)[1]


def _mark_job_failed(helper: ImsHelper, job_id: str) -> None:
    """``--set-job-error``: a failed publish must not leave the job hanging in its previous state."""
    helper.deadline.allow_cleanup()
    try:
        helper.image_set_job_status(job_id, "error")
        LOGGER.info("set job %s to status error", job_id)
    except ImsHelperError as status_err:
        LOGGER.error("could not set job %s to error: %s", job_id, status_err)


@client_command
def run_set_job_status(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``image set_job_status``."""
    return _helper(settings, env).image_set_job_status(args.ims_job_id, args.job_status)


@client_command
def run_recipe_upload(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``recipe upload``: recipes live in the ``ims`` bucket unless a bucket is set explicitly."""
    templates: Dict[str, str] = {}
    for pair in args.template_dictionary or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--template-dictionary {pair!r} is not KEY=VALUE")
        if key in templates:
            raise UsageError(f"--template-dictionary key {key!r} was given twice")
        templates[key] = value
    check_name(args.recipe_name, "recipe name")  # the local checks first: nothing is contacted for bad input
    path, _size = check_file(args.recipe_file, "recipe")
    check_gzipped_tar(path)  # the library only warns (earlier clients uploaded any file); the CLI refuses
    explicit_bucket = "s3_bucket" in settings.given
    helper = _helper(settings, env, bucket=None if explicit_bucket else DEFAULT_RECIPE_BUCKET)
    record = helper.recipe_upload(
        args.recipe_name,
        args.recipe_file,
        args.distro,
        templates or None,
        arch=args.arch,
        require_dkms=args.require_dkms,
    )
    return {"result": "success", "ims_recipe_record": record}


@client_command
def run_image_fetch(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``image fetch``: a customization job's fetch step."""
    progress = make_progress(settings.progress, env.stderr, "download")
    return image_fetch(args, settings.step_settings(), progress)


@client_command
def run_recipe_fetch(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``recipe fetch``: an image-build job's fetch step."""
    progress = make_progress(settings.progress, env.stderr, "download")
    return recipe_fetch(args, settings.step_settings(), progress)


@client_command
def run_wait_for_repos(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``recipe wait_for_repos``: an image-build job's wait step."""
    return recipe_wait_for_repos(args, settings.step_settings())


@client_command
def run_image_verify(args: argparse.Namespace, settings: Settings, env: Environment) -> Union[int, Dict[str, Any]]:
    """``image verify``: the result JSON either way; exit 1 with one line naming what does not match."""
    result = _helper(settings, env, direction="download").image_verify(args.image_id, quick=bool(args.quick))
    if result["ok"]:
        return result
    _print_json(result, env.stdout)
    env.stderr.write(
        f"{PROG}: error: image {args.image_id} does not match its manifest: {_one_line(result['error'])}\n"
    )
    return int(ExitStatus.FAILURE)


@client_command
def run_image_export(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``image export``."""
    return _helper(settings, env, direction="download").image_export(args.image_id, args.directory)


@client_command
def run_image_import(args: argparse.Namespace, settings: Settings, env: Environment) -> Dict[str, Any]:
    """``image import``: the bundle is checked whole before anything is contacted."""
    checked = check_bundle(args.directory, args.name)
    return _helper(settings, env).image_import(checked)


# -- main -------------------------------------------------------------------------


def _configure_logging(level: str, stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_log_redaction(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_ims_python_helper", False):
            root.removeHandler(old)
    handler._ims_python_helper = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _print_json(data: Any, stream: TextIO) -> None:
    stream.write(redact(json.dumps(data, indent=4, sort_keys=True)) + "\n")
    stream.flush()


def _one_line(message: str) -> str:
    return " ".join(redact(message).split())


def _report_failure(message: str, env: Environment, as_json: bool) -> None:
    """The failure JSON (``as_json``) and the one-line error; after a signal only the first such report is written."""

    def write() -> None:
        if as_json:
            _print_json({"result": "failure", "error": message}, env.stdout)
        env.stderr.write(f"{PROG}: error: {message}\n")
        env.stderr.flush()

    write_final_line(write)


def main(argv: Optional[List[str]] = None, env: Optional[Environment] = None) -> int:
    """Run the CLI; returns the exit status (see ``ExitStatus``)."""
    env = env or Environment()
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # --help and --version
            return int(stop.code or 0)
        handler: Handler = args.handler
        result = handler(args, env)
        if isinstance(result, int):
            return int(result)
        _print_json(result, env.stdout)
        return int(ExitStatus.SUCCESS)
    except ImsHelperError as err:
        # Usage errors too: callers read the failure JSON on stdout.
        _report_failure(_one_line(str(err)), env, as_json=True)
        return int(err.exit_code)
    except Exception as err:  # a bug: still one line, still no secrets, still a failure JSON
        _report_failure(_one_line(f"unexpected {type(err).__name__}: {err}"), env, as_json=True)
        return int(ExitStatus.FAILURE)


def console_main() -> None:
    """Entry point of the ``ims-python-helper`` console script (the modules are loaded by now)."""
    collector.resume()
    exit_process(main())
