"""Settings: every option, its environment variable, mounted file and default, in one table.

Precedence, resolved once per run: command-line flag, then environment
variable, then a file in the mounted OAuth directory, then the default.
``--help`` and the README's option table are both generated from ``OPTIONS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .clients.defaults import (
    DEFAULT_ADDRESSING_STYLE,
    DEFAULT_CHECKSUM_MODE,
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    MIB,
)
from .clients.oauth import DEFAULT_OAUTH_CONFIG_DIR, OAuthSettings
from .clients.transport import DEFAULT_TIMEOUT, parse_ssl_verify, s3_verify_with_ca
from .cmdline import parsers
from .errors import ConfigError, UsageError
from .pod.job import DEFAULT_CA_CERT, DEFAULT_REPO_POLL_INTERVAL, DEFAULT_REPO_TIMEOUT, StepSettings
from .pod.template import DEFAULT_DICTIONARY_PATH
from .vocabulary import ARCHES, DEFAULT_IMAGE_BUCKET, DEFAULT_IMS_API_URL  # noqa: F401  (ARCHES: the local IMS, for now)

if TYPE_CHECKING:  # boto3 comes with these: the pod entries read this table without loading it
    from .clients.storage import S3Settings
    from .publish.transfer import TransferOptions

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CHECKSUM_MODES = ("when_required", "when_supported")
ADDRESSING_STYLES = ("path", "virtual", "auto")
PROGRESS_MODES = ("auto", "bar", "log", "none")
#: Largest secret file read; a credential is a few hundred bytes, /dev/zero is endless.
MAX_SECRET_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Option:
    """One setting: where it can come from and how it is read."""

    dest: str
    flags: Tuple[str, ...]
    help: str
    env: Tuple[str, ...] = ()
    #: File name inside the mounted OAuth directory (``OAUTH_CONFIG_DIR``).
    mounted_file: Optional[str] = None
    default: Any = None
    parse: Callable[[str], Any] = parsers.text
    metavar: Optional[str] = None
    choices: Optional[Sequence[str]] = None
    #: True for credentials: never logged, never echoed, warned about on argv.
    secret: bool = False
    #: Flag that names a file holding this value (``--oauth-client-secret-file``).
    file_flag: Optional[str] = None
    #: Environment variable that names such a file.
    file_env: Optional[str] = None
    #: Option is a switch without a value.
    is_switch: bool = False
    #: Read by the job-pod entry modules only (``fetch``, ``wait_for_kiwi_repos``): no flag, and the CLI ignores it.
    pod_only: bool = False


# A table read as rows: one option per entry, formatted by hand (ruff would put every argument on its own line).
# fmt: off
OPTIONS: Tuple[Option, ...] = (
    Option("log_level", ("-l", "--log-level"), "log level for messages on stderr", ("LOG_LEVEL",),
           default="INFO", parse=parsers.choice(LOG_LEVELS, upper=True), choices=LOG_LEVELS),
    Option("timeout", ("-t", "--timeout"), "seconds each single request may take", ("IMS_REQUEST_TIMEOUT",),
           default=DEFAULT_TIMEOUT, parse=parsers.positive_float, metavar="SECONDS"),
    Option("deadline", ("--deadline",), "seconds the whole run may take, retries included", ("IMS_DEADLINE",),
           default=4 * 3600.0, parse=parsers.positive_float, metavar="SECONDS"),
    Option("ims_url", ("--ims-url",), "base URL of IMS", ("IMS_URL",), default=DEFAULT_IMS_API_URL, metavar="URL"),
    Option("cert", ("--cert",), "CA bundle for IMS and the token endpoint (default: the system store)",
           ("CA_CERT",), metavar="PATH"),
    Option("oauth_config_dir", ("--oauth-config-dir",),
           "directory with mounted client-id, client-secret and endpoint files", ("OAUTH_CONFIG_DIR",),
           default=DEFAULT_OAUTH_CONFIG_DIR, metavar="DIR"),
    Option("oauth_client_id", ("--oauth-client-id",), "OAuth2 client id", ("OAUTH_CLIENT_ID",),
           mounted_file="client-id", metavar="ID"),
    Option("oauth_client_secret", ("--oauth-client-secret",),
           "OAuth2 client secret (prefer the file or env var: argv is visible to other users)",
           ("OAUTH_CLIENT_SECRET",), mounted_file="client-secret", metavar="SECRET", secret=True,
           file_flag="--oauth-client-secret-file", file_env="OAUTH_CLIENT_SECRET_FILE"),
    Option("token_url", ("--token-url",), "OAuth2 token endpoint URL", ("OAUTH_CLIENT_ENDPOINT",),
           mounted_file="endpoint", metavar="URL"),
    Option("s3_endpoint", ("--s3-endpoint",), "S3 endpoint URL", ("S3_ENDPOINT", "S3_HOST"), metavar="URL"),
    Option("s3_access_key", ("--s3-access-key",), "S3 access key id", ("S3_ACCESS_KEY",), metavar="KEY",
           secret=True, file_flag="--s3-access-key-file", file_env="S3_ACCESS_KEY_FILE"),
    Option("s3_secret_key", ("--s3-secret-key",), "S3 secret key (prefer the file or env var)", ("S3_SECRET_KEY",),
           metavar="KEY", secret=True, file_flag="--s3-secret-key-file", file_env="S3_SECRET_KEY_FILE"),
    Option("s3_ssl_verify", ("--s3-ssl-verify",),
           "S3 TLS verification: true (against CA_CERT when set, else the system store), false/off/no/f/0, "
           "or a CA bundle path", ("S3_SSL_VERIFY", "S3_SSL_VALIDATE"), default="true", metavar="VALUE"),
    Option("s3_bucket", ("--s3-bucket",), "S3 bucket for image artifacts", ("S3_BUCKET",),
           default=DEFAULT_IMAGE_BUCKET, metavar="BUCKET"),
    Option("s3_checksum", ("--s3-checksum",),
           "botocore request/response checksum mode; when_required suits Ceph RGW", ("S3_CHECKSUM_MODE",),
           default=DEFAULT_CHECKSUM_MODE, parse=parsers.choice(CHECKSUM_MODES), choices=CHECKSUM_MODES),
    Option("s3_addressing_style", ("--s3-addressing-style",), "S3 bucket addressing style", ("S3_ADDRESSING_STYLE",),
           default=DEFAULT_ADDRESSING_STYLE, parse=parsers.choice(ADDRESSING_STYLES), choices=ADDRESSING_STYLES),
    Option("part_size_mb", ("--part-size",), "multipart part size in MiB (5-5120)", ("IMS_PART_SIZE_MB",),
           default=DEFAULT_PART_SIZE // MIB, parse=parsers.part_size_mib, metavar="MIB"),
    Option("concurrency", ("--concurrency",), "parallel S3 requests across all artifacts", ("IMS_UPLOAD_CONCURRENCY",),
           default=DEFAULT_CONCURRENCY, parse=parsers.concurrency, metavar="N"),
    Option("sha256", ("--sha256",), "also compute SHA-256 while uploading and record it in object metadata",
           ("IMS_SHA256",), default=False, parse=parsers.boolean, is_switch=True),
    Option("progress", ("--progress",), "progress display: bars on a terminal, periodic log lines otherwise",
           ("IMS_PROGRESS",), default="auto", parse=parsers.choice(PROGRESS_MODES), choices=PROGRESS_MODES),
    Option("download_md5", ("--md5",), "image/recipe fetch: md5 the downloaded file must have",
           ("DOWNLOAD_MD5SUM",), parse=parsers.md5_hex, metavar="MD5"),
    Option("template_dictionary_file", ("--template-dictionary-file",),
           "recipe fetch: YAML mapping of the recipe's template values", ("TEMPLATE_DICTIONARY_PATH",),
           default=DEFAULT_DICTIONARY_PATH, metavar="PATH"),
    Option("repo_timeout", ("--repo-timeout",), "recipe wait_for_repos: seconds to wait for the repositories",
           ("IMS_REPO_TIMEOUT",), default=DEFAULT_REPO_TIMEOUT, parse=parsers.positive_float, metavar="SECONDS"),
    Option("repo_poll_interval", ("--repo-poll-interval",), "recipe wait_for_repos: seconds between polls",
           ("REPO_POLL_INTERVAL",), default=DEFAULT_REPO_POLL_INTERVAL, parse=parsers.positive_float,
           metavar="SECONDS"),
    Option("ims_job_id", (), "the IMS job to report to when a command names none (the job pods' job)",
           ("IMS_JOB_ID",)),
    Option("recipe_root", (), "job pods (wait_for_kiwi_repos): directory of the fetched recipe",
           ("RECIPE_ROOT_PARENT",), pod_only=True),
    Option("pod_repo_timeout", (), "job pods (wait_for_kiwi_repos): seconds to wait for the repositories",
           ("TIMEOUT",), default=DEFAULT_REPO_TIMEOUT, parse=parsers.positive_float, pod_only=True),
)
# fmt: on


def _default(dest: str) -> Any:
    """The option table's default for ``dest`` (so ``Settings`` restates none)."""
    return next(option.default for option in OPTIONS if option.dest == dest)


@dataclass(frozen=True)
class HelperSettings:
    """Everything ``ImsHelper.from_settings`` needs, as the option table builds it."""

    ims_url: str
    timeout: float
    #: Seconds the whole run may take, or None for no limit.
    deadline: Optional[float]
    oauth: OAuthSettings
    s3: S3Settings
    transfer: TransferOptions


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, resolved once. Secrets are left out of ``repr``."""

    log_level: str = _default("log_level")
    timeout: float = _default("timeout")
    deadline: float = _default("deadline")
    ims_url: str = _default("ims_url")
    cert: Optional[str] = None
    oauth_config_dir: str = _default("oauth_config_dir")
    oauth_client_id: Optional[str] = None
    oauth_client_secret: Optional[str] = field(default=None, repr=False)
    token_url: Optional[str] = None
    s3_endpoint: Optional[str] = None
    s3_access_key: Optional[str] = field(default=None, repr=False)
    s3_secret_key: Optional[str] = field(default=None, repr=False)
    s3_ssl_verify: Union[bool, str] = True
    s3_bucket: str = _default("s3_bucket")
    s3_checksum: str = _default("s3_checksum")
    s3_addressing_style: str = _default("s3_addressing_style")
    part_size_mb: int = _default("part_size_mb")
    concurrency: int = _default("concurrency")
    sha256: bool = False
    progress: str = _default("progress")
    download_md5: Optional[str] = None
    template_dictionary_file: str = _default("template_dictionary_file")
    repo_timeout: float = _default("repo_timeout")
    repo_poll_interval: float = _default("repo_poll_interval")
    #: ``IMS_JOB_ID``: the job of a command that names none.
    ims_job_id: Optional[str] = None
    #: Names of secrets that were given on the command line (for the warning).
    secrets_on_argv: Tuple[str, ...] = ()
    #: The settings given by a flag, variable or file rather than left at their default.
    given: Tuple[str, ...] = ()

    @property
    def part_size(self) -> int:
        """Multipart part size in bytes."""
        return self.part_size_mb * MIB

    def step_settings(self) -> StepSettings:
        """What the job-pod step commands take; downloads trust ``--s3-ssl-verify`` when set, else ``--cert``."""
        oauth = OAuthSettings(self.oauth_client_id, self.oauth_client_secret, self.token_url, self.cert, self.timeout)
        verify = self.s3_ssl_verify if self.s3_ssl_verify is not True else (self.cert or True)
        return StepSettings(
            self.ims_url,
            self.timeout,
            self.deadline,
            oauth,
            download_verify=verify,
            download_md5=self.download_md5,
            template_dictionary=self.template_dictionary_file,
            repo_timeout=self.repo_timeout,
            repo_poll_interval=self.repo_poll_interval,
            ims_job_id=self.ims_job_id,
        )

    def helper_settings(self, bucket: Optional[str] = None) -> HelperSettings:
        """The objects the layers below take (OAuth, S3, transfer), with another bucket when given."""
        from .clients.storage import S3Settings
        from .publish.transfer import TransferOptions

        transfer = TransferOptions(part_size=self.part_size, concurrency=self.concurrency, sha256=self.sha256)
        oauth = OAuthSettings(self.oauth_client_id, self.oauth_client_secret, self.token_url, self.cert, self.timeout)
        s3 = S3Settings(
            endpoint=self.s3_endpoint,
            bucket=bucket or self.s3_bucket,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
            verify=self.s3_ssl_verify,
            checksum_mode=self.s3_checksum,
            addressing_style=self.s3_addressing_style,
            timeout=self.timeout,
            max_pool_connections=transfer.pool_connections,
        )
        return HelperSettings(self.ims_url, self.timeout, self.deadline, oauth, s3, transfer)


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read {what} from {path!r}: {err.strerror or err}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"cannot read {what} from {path!r}: the path contains a NUL character") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(
            f"{what} {path!r} holds more than {MAX_SECRET_FILE_BYTES} bytes; a secret file holds just the secret"
        )
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path!r} is not UTF-8 text") from None


def _from_environment(option: Option, env: Mapping[str, str], config_dir: str) -> Tuple[Any, str]:
    """An option's raw value and its source from the environment or the mounted directory (None, '' if absent)."""
    for name in option.env:
        if env.get(name):
            return env[name], name
    if option.file_env and env.get(option.file_env):
        return _read_secret_file(env[option.file_env], option.file_env), option.file_env
    if option.mounted_file:
        path = os.path.join(config_dir, option.mounted_file)
        if os.path.isfile(path):
            return _read_secret_file(path, option.mounted_file), path
    return None, ""


def _raw_value(option: Option, flags: Mapping[str, Any], env: Mapping[str, str], config_dir: str) -> Tuple[Any, str]:
    """An option's raw value and where it came from, by precedence: flag, file flag, environment, mounted file."""
    if flags.get(option.dest) is not None:
        return flags[option.dest], option.flags[-1] if option.flags else option.dest
    dest = file_dest(option)
    if dest and flags.get(dest):
        return _read_secret_file(flags[dest], option.file_flag or ""), option.file_flag or ""
    return _from_environment(option, env, config_dir)


def _parsed(option: Option, raw: Any, source: str) -> Any:
    if raw is None:
        return option.default
    if isinstance(raw, bool):
        return raw
    try:
        return option.parse(str(raw))
    except ValueError as err:
        raise UsageError(f"{source}: {err}") from None


def _config_dir(flags: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The mounted OAuth directory, which is itself an option read before the others."""
    return str(flags.get("oauth_config_dir") or env.get("OAUTH_CONFIG_DIR") or DEFAULT_OAUTH_CONFIG_DIR)


def _secrets_on_argv(flags: Mapping[str, Any]) -> Tuple[str, ...]:
    """The flags of secrets given on the command line, for the warning."""
    return tuple(o.flags[-1] for o in OPTIONS if o.secret and flags.get(o.dest) is not None)


def _resolve(
    options: Sequence[Option], flags: Mapping[str, Any], env: Mapping[str, str]
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The parsed value of each option, and where each value that was given came from."""
    config_dir = _config_dir(flags, env)
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for option in options:
        raw, source = _raw_value(option, flags, env, config_dir)
        values[option.dest] = _parsed(option, raw, source)
        if raw is not None:
            sources[option.dest] = source
    return values, sources


def _check_cert(cert: Optional[str], source: str) -> None:
    if cert and not os.path.isfile(cert):
        raise ConfigError(f"CA bundle {cert!r} (from {source}) is not a readable file; mount the CA or fix {source}")


def _s3_verify(values: Mapping[str, Any], sources: Mapping[str, str]) -> Union[bool, str]:
    """S3 (and download) TLS verification: the off words, CA paths and CA_CERT rule of ``parse_ssl_verify``."""
    verify = parse_ssl_verify(values["s3_ssl_verify"], sources.get("s3_ssl_verify", "S3_SSL_VERIFY"))
    return s3_verify_with_ca(verify, values["cert"])


def resolve_settings(flags: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Build ``Settings`` from parsed flags (dest to raw string; absent when not given) and the environment.

    Raises ``UsageError`` when a value has the wrong shape.
    """
    env = os.environ if environ is None else environ
    values, sources = _resolve([o for o in OPTIONS if not o.pod_only], flags, env)
    _check_cert(values["cert"], sources.get("cert", "--cert/CA_CERT"))
    values["s3_ssl_verify"] = _s3_verify(values, sources)
    values["secrets_on_argv"] = _secrets_on_argv(flags)
    values["given"] = tuple(sources)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


# -- the job pods: their environment and mounted files, through the same table -----------

#: What the pod entries read; the credentials and ``CA_CERT`` alone suffice to report a failure.
POD_JOB_OPTIONS = ("ims_job_id", "ims_url", "cert", "oauth_client_id", "oauth_client_secret", "token_url")
POD_STEP_OPTIONS = ("log_level", "s3_ssl_verify", "progress", "download_md5", "template_dictionary_file")
POD_OPTIONS = (*POD_JOB_OPTIONS, *POD_STEP_OPTIONS, "recipe_root", "pod_repo_timeout", "repo_poll_interval")


@dataclass(frozen=True)
class PodSettings:
    """What a job pod's steps need, resolved once from its environment and mounted files."""

    ims_job_id: str
    ims_url: str
    #: CA bundle for IMS and the token endpoint: ``CA_CERT``, else the platform CA when mounted, else None.
    ca_cert: Optional[str]
    oauth: OAuthSettings
    #: Where the credentials were looked for, for the error that says what is missing.
    oauth_config_dir: str
    #: TLS verification of the download: ``S3_SSL_VERIFY`` (an off word, a CA path), else as IMS.
    download_verify: Union[bool, str]
    download_md5: Optional[str]
    template_dictionary: str
    progress: str
    recipe_root: str
    repo_timeout: float
    repo_poll_interval: float


def _options(names: Sequence[str]) -> Tuple[Option, ...]:
    return tuple(option for option in OPTIONS if option.dest in names)


def resolve_pod_settings(
    environ: Optional[Mapping[str, str]] = None, names: Sequence[str] = POD_OPTIONS
) -> PodSettings:
    """The pod's settings (``names``: the options to read, the others keep their defaults); errors name the variable."""
    env = os.environ if environ is None else environ
    values, sources = _resolve(_options(names), {}, env)
    values = {**{option.dest: option.default for option in OPTIONS}, **values}
    _check_cert(values["cert"], "CA_CERT")
    values["cert"] = values["cert"] or (DEFAULT_CA_CERT if os.path.isfile(DEFAULT_CA_CERT) else None)
    oauth = OAuthSettings(values["oauth_client_id"], values["oauth_client_secret"], values["token_url"])
    return PodSettings(
        values["ims_job_id"] or "",
        values["ims_url"],
        values["cert"],
        oauth,
        _config_dir({}, env),
        _s3_verify(values, sources),
        values["download_md5"],
        values["template_dictionary_file"],
        values["progress"],
        values["recipe_root"] or "",
        values["pod_repo_timeout"],
        values["repo_poll_interval"],
    )


def _env_value(dest: str, environ: Optional[Mapping[str, str]]) -> Any:
    return _resolve(_options((dest,)), {}, os.environ if environ is None else environ)[0][dest]


def pod_log_level(environ: Optional[Mapping[str, str]] = None) -> str:
    """The pod's ``LOG_LEVEL``; INFO when it is not a level (resolving the settings then says what is wrong)."""
    try:
        return str(_env_value("log_level", environ))
    except UsageError:
        return "INFO"


def admin_client_auth(environ: Optional[Mapping[str, str]] = None) -> Tuple[OAuthSettings, str]:
    """The admin client's credentials (env vars, else files in ``OAUTH_CONFIG_DIR``) and that directory."""
    pod = resolve_pod_settings(environ, ("oauth_client_id", "oauth_client_secret", "token_url"))
    return pod.oauth, pod.oauth_config_dir


def platform_ca_cert(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """``CA_CERT`` when it names a file (the library's S3 "true" verifies against it), else None."""
    cert = _env_value("cert", environ)
    return cert if cert and os.path.isfile(cert) else None


def file_dest(option: Option) -> Optional[str]:
    """The argparse destination of an option's file flag (``oauth_client_secret_file``), if it has one."""
    if not option.file_flag:
        return None
    return option.file_flag.lstrip("-").replace("-", "_")


def describe_source(option: Option) -> str:
    """Where an option's value may come from, for ``--help`` and the README."""
    parts = []
    if option.env:
        parts.append("env " + " or ".join(option.env))
    if option.file_env:
        parts.append(f"env {option.file_env} (a file)")
    if option.mounted_file:
        parts.append(f"file $OAUTH_CONFIG_DIR/{option.mounted_file}")
    if option.default not in (None, "", False):
        parts.append(f"default {option.default}")
    return "; ".join(parts)


def options_markdown() -> str:
    """The README's table of global options, made from ``OPTIONS``."""
    lines = ["| flag | environment | mounted file | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for option in OPTIONS:
        flag = ", ".join(f"`{f}`" for f in option.flags)
        if option.file_flag:
            flag += f", `{option.file_flag} PATH`"
        env = ", ".join(f"`{e}`" for e in option.env)
        if option.file_env:
            env += f", `{option.file_env}` (path)"
        mounted = f"`{option.mounted_file}`" if option.mounted_file else ""
        default = "" if option.default in (None, "", False) else f"`{option.default}`"
        lines.append(f"| {flag} | {env} | {mounted} | {default} | {option.help} |")
    return "\n".join(lines)
