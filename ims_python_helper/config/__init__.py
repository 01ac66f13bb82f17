"""Settings: every option resolved once, from the one table (``config.options``), for every entry.

Precedence, resolved once per run: command-line flag, then environment
variable, then a file in the mounted OAuth directory, then the default.
``--help`` and the README's option table are both generated from ``OPTIONS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..clients.defaults import MIB
from ..clients.oauth import DEFAULT_OAUTH_CONFIG_DIR, OAuthSettings
from ..clients.transport import parse_ssl_verify, s3_verify_with_ca
from ..errors import ConfigError, UsageError
from ..pod.job import DEFAULT_CA_CERT, StepSettings
from ..vocabulary import ARCHES  # noqa: F401  (ARCHES: the local IMS, for now)
from .options import (  # noqa: F401  (the table's names, importable from config as before)
    ADDRESSING_STYLES,
    CHECKSUM_MODES,
    LOG_LEVELS,
    MAX_SECRET_FILE_BYTES,
    OPTIONS,
    PROGRESS_MODES,
    Option,
    describe_source,
    file_dest,
    options_markdown,
)

if TYPE_CHECKING:  # boto3 comes with these: the pod entries read this table without loading it
    from ..clients.storage import S3Settings
    from ..publish.transfer import TransferOptions


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
    repo_token_hosts: Tuple[str, ...] = _default("repo_token_hosts")
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
            repo_token_hosts=self.repo_token_hosts,
            ims_job_id=self.ims_job_id,
        )

    def helper_settings(self, bucket: Optional[str] = None) -> HelperSettings:
        """The objects the layers below take (OAuth, S3, transfer), with another bucket when given."""
        from ..clients.storage import S3Settings
        from ..publish.transfer import TransferOptions

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
POD_WAIT_OPTIONS = ("recipe_root", "pod_repo_timeout", "repo_poll_interval", "repo_token_hosts")
POD_OPTIONS = (*POD_JOB_OPTIONS, *POD_STEP_OPTIONS, *POD_WAIT_OPTIONS)


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
    #: Hosts besides IMS's and the token endpoint's that get the job's token (over https).
    repo_token_hosts: Tuple[str, ...]


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
        values["repo_token_hosts"],
    )


def _env_value(dest: str, environ: Optional[Mapping[str, str]]) -> Any:
    return _resolve(_options((dest,)), {}, os.environ if environ is None else environ)[0][dest]


def pod_token_hosts(environ: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """``IMS_REPO_TOKEN_HOSTS``: the hosts besides IMS's that get the job's token (for pod calls that name none)."""
    return tuple(_env_value("repo_token_hosts", environ))


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
