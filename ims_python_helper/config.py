"""Settings: every option, its environment variable, mounted file and default, in one table.

Precedence, resolved once per run: command-line flag, then environment
variable, then a file in the mounted OAuth directory, then the default.
``--help`` and the README's option table are both generated from ``OPTIONS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .clients.oauth import DEFAULT_OAUTH_CONFIG_DIR, OAuthSettings
from .clients.storage import S3Settings
from .clients.transport import DEFAULT_TIMEOUT, parse_ssl_verify, s3_verify_with_ca
from .cmdline import parsers
from .cmdline.parsers import MIB
from .cmdline.steps import StepSettings
from .errors import ConfigError, UsageError
from .helper import HelperSettings
from .pod.template import DEFAULT_DICTIONARY_PATH
from .publish.transfer import TransferOptions
from .vocabulary import ARCHES, DEFAULT_IMAGE_BUCKET, DEFAULT_IMS_API_URL  # noqa: F401  (ARCHES: the local IMS, for now)

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
           default=S3Settings.checksum_mode, parse=parsers.choice(CHECKSUM_MODES), choices=CHECKSUM_MODES),
    Option("s3_addressing_style", ("--s3-addressing-style",), "S3 bucket addressing style", ("S3_ADDRESSING_STYLE",),
           default=S3Settings.addressing_style, parse=parsers.choice(ADDRESSING_STYLES), choices=ADDRESSING_STYLES),
    Option("part_size_mb", ("--part-size",), "multipart part size in MiB (5-5120)", ("IMS_PART_SIZE_MB",),
           default=TransferOptions.part_size // MIB, parse=parsers.part_size_mib, metavar="MIB"),
    Option("concurrency", ("--concurrency",), "parallel S3 requests across all artifacts", ("IMS_UPLOAD_CONCURRENCY",),
           default=TransferOptions.concurrency, parse=parsers.concurrency, metavar="N"),
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
           ("IMS_REPO_TIMEOUT",), default=500.0, parse=parsers.positive_float, metavar="SECONDS"),
    Option("repo_poll_interval", ("--repo-poll-interval",), "recipe wait_for_repos: seconds between polls",
           ("REPO_POLL_INTERVAL",), default=5.0, parse=parsers.positive_float, metavar="SECONDS"),
    Option("repo_token_hosts", ("--repo-token-hosts",),
           "recipe wait_for_repos: hosts besides IMS's that get the job's token (https only), comma-separated",
           ("IMS_REPO_TOKEN_HOSTS",), default=(), parse=parsers.host_list, metavar="HOSTS"),
)
# fmt: on


def _default(dest: str) -> Any:
    """The option table's default for ``dest`` (so ``Settings`` restates none)."""
    return next(option.default for option in OPTIONS if option.dest == dest)


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
    repo_token_hosts: Tuple[str, ...] = _default("repo_token_hosts")
    #: Names of secrets that were given on the command line (for the warning).
    secrets_on_argv: Tuple[str, ...] = ()

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
            repo_token_hosts=self.repo_token_hosts,
        )

    def helper_settings(self, bucket: Optional[str] = None) -> HelperSettings:
        """The objects the layers below take (OAuth, S3, transfer), with another bucket when given."""
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
        return flags[option.dest], option.flags[-1]
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


def resolve_settings(flags: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Build ``Settings`` from parsed flags (dest to raw string; absent when not given) and the environment.

    Raises ``UsageError`` when a value has the wrong shape.
    """
    env = os.environ if environ is None else environ
    config_dir = _config_dir(flags, env)
    values: Dict[str, Any] = {}
    for option in OPTIONS:
        raw, source = _raw_value(option, flags, env, config_dir)
        values[option.dest] = _parsed(option, raw, source)

    values["s3_ssl_verify"] = s3_verify_with_ca(parse_ssl_verify(values["s3_ssl_verify"]), values["cert"])
    if values["cert"] and not os.path.isfile(values["cert"]):
        raise ConfigError(f"CA bundle {values['cert']!r} (from --cert/CA_CERT) is not a readable file")
    values["secrets_on_argv"] = _secrets_on_argv(flags)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


def resolve_option(dest: str, environ: Optional[Mapping[str, str]] = None) -> Any:
    """One option's value from the environment (or its mounted file, or the default), for entries without flags.

    Raises ``UsageError`` naming the variable when its value has the wrong shape.
    """
    env = os.environ if environ is None else environ
    option = next(o for o in OPTIONS if o.dest == dest)
    raw, source = _from_environment(option, env, _config_dir({}, env))
    return _parsed(option, raw, source)


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
    if option.default not in (None, "", False, ()):
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
        default = "" if option.default in (None, "", False, ()) else f"`{option.default}`"
        lines.append(f"| {flag} | {env} | {mounted} | {default} | {option.help} |")
    return "\n".join(lines)
