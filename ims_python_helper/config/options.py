"""The option table: every setting's flag, environment variable, mounted file, default and parser, in one place.

``--help``, the README's option table and the resolution in ``config`` all read
``OPTIONS``; nothing here reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

from ..clients.defaults import (
    DEFAULT_ADDRESSING_STYLE,
    DEFAULT_CHECKSUM_MODE,
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    MIB,
)
from ..clients.oauth import DEFAULT_OAUTH_CONFIG_DIR
from ..clients.transport import DEFAULT_TIMEOUT
from ..cmdline import parsers
from ..pod.repos import DEFAULT_REPO_POLL_INTERVAL, DEFAULT_REPO_TIMEOUT
from ..pod.template import DEFAULT_DICTIONARY_PATH
from ..vocabulary import DEFAULT_IMAGE_BUCKET, DEFAULT_IMS_API_URL

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
    Option("repo_token_hosts", ("--repo-token-hosts",),
           "recipe wait_for_repos: hosts besides IMS's that get the job's token (https only), comma-separated",
           ("IMS_REPO_TOKEN_HOSTS",), default=(), parse=parsers.host_list, metavar="HOSTS"),
    Option("ims_job_id", (), "the IMS job to report to when a command names none (the job pods' job)",
           ("IMS_JOB_ID",)),
    Option("recipe_root", (), "job pods (wait_for_kiwi_repos): directory of the fetched recipe",
           ("RECIPE_ROOT_PARENT",), pod_only=True),
    Option("pod_repo_timeout", (), "job pods (wait_for_kiwi_repos): seconds to wait for the repositories",
           ("TIMEOUT",), default=DEFAULT_REPO_TIMEOUT, parse=parsers.positive_float, pod_only=True),
)
# fmt: on


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
