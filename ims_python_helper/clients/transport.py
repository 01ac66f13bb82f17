"""URL checks and failure descriptions shared by the IMS session and the S3 client.

Errors are told apart by their type (and the types in their cause chain),
never by the words of their message, which change between library versions
and locales.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from typing import Iterator, Mapping, Optional, Union
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from ..errors import ConfigError
from .redact import redact

#: Seconds a single request may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 60.0

#: Words that turn a switch (or S3 TLS verification) off or on, as earlier clients accepted them.
OFF_WORDS = frozenset({"false", "off", "no", "f", "0", "n"})
ON_WORDS = frozenset({"true", "on", "yes", "t", "1", "y"})


def is_loopback(url: str) -> bool:
    """True when ``url`` names this machine (``localhost`` or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, example: str = "https://host/path") -> None:
    """Refuse anything but an http(s) URL with a host (``ConfigError`` naming ``what``)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        raise ConfigError(f"{what} {url!r} is not a valid URL; give a full URL such as {example}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{what} {url!r} is not an http(s) URL; give a full URL such as {example}")
    if not parts.hostname:
        raise ConfigError(f"{what} {url!r} has no host; give a full URL such as {example}")


def check_transport(url: str, what: str) -> None:
    """Refuse to send credentials over plain HTTP, except to this machine (the local stack)."""
    check_url(url, what)
    if urlsplit(url).scheme == "http" and not is_loopback(url):
        raise ConfigError(f"{what} {url} uses plain http; credentials are only sent over https (or to loopback)")


def parse_ssl_verify(value: Union[str, bool, None], source: str = "--s3-ssl-verify/S3_SSL_VERIFY") -> Union[bool, str]:
    """Read ``S3_SSL_VERIFY``: an off word means False, an on word True, anything else a CA path.

    ``source`` names where the value came from (the flag, variable or argument), for the error.
    """
    if value is None or isinstance(value, bool):
        return True if value is None else value
    text = value.strip()
    if text.lower() in OFF_WORDS:
        return False
    if text.lower() in ON_WORDS or not text:
        return True
    if not os.path.isfile(text):
        raise ConfigError(f"S3 CA bundle {text!r} (from {source}) is not a readable file; fix it or give an off word")
    return text


def s3_verify_with_ca(verify: Union[bool, str], ca_bundle: Optional[str]) -> Union[bool, str]:
    """S3 verification "true" means the platform CA (``CA_CERT``) when one is given, else the system store.

    In a job pod the S3 gateway's certificate is signed by the platform CA, the
    same one IMS's is; an explicit CA path or an off word is kept as given.
    """
    return ca_bundle if verify is True and ca_bundle else verify


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps: urllib3's ``reason``, exception arguments, ``__cause__`` and ``__context__``."""
    seen = set()
    pending = [err]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [getattr(current, "reason", None), current.__cause__, current.__context__]
        wrapped += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending.extend(item for item in wrapped if isinstance(item, BaseException))


def caused_by(err: BaseException, *types: type) -> bool:
    """True when ``err`` or anything it wraps (see ``causes``) is one of ``types``."""
    return any(isinstance(item, types) for item in causes(err))


#: A host name that does not resolve: urllib3 2 raises ``NameResolutionError``; urllib3 1.26
#: (all that botocore allows on Python 3.9) wraps the resolver's ``socket.gaierror``.
_NAME_RESOLUTION_ERRORS = tuple(
    kind for kind in (getattr(urllib3.exceptions, "NameResolutionError", None), socket.gaierror) if kind is not None
)


def connection_failure(err: BaseException) -> str:
    """Why a connection failed, from the exception types underneath requests' ``ConnectionError``."""
    if caused_by(err, ConnectionRefusedError):
        return "connection refused"
    # A read timeout that used up the retries arrives as a ConnectionError wrapping urllib3's timeout.
    if caused_by(err, urllib3.exceptions.ReadTimeoutError, socket.timeout):
        return "timed out waiting for an answer"
    if caused_by(err, *_NAME_RESOLUTION_ERRORS):
        return "host name does not resolve"
    return "connection failed"


def describe_request_error(err: BaseException) -> str:
    """A short, secret-free reason for a requests/urllib3 failure."""
    kinds = (
        (requests.exceptions.ConnectTimeout, "connection timed out"),
        (requests.exceptions.Timeout, "timed out waiting for an answer"),
        (requests.exceptions.RetryError, "still failing after retries (server busy or unavailable)"),
        (requests.exceptions.ChunkedEncodingError, "the answer was cut off before its end"),
        (requests.exceptions.ContentDecodingError, "the answer's compression is broken"),
    )
    for kind, reason in kinds:
        if isinstance(err, kind):
            return reason
    if isinstance(err, requests.exceptions.ConnectionError):
        return connection_failure(err)
    return redact(type(err).__name__)


def tls_failure_message(url: str, verify: Union[bool, str], err: BaseException) -> str:
    """One line naming the host and the CA bundle that failed to verify it."""
    host = urlsplit(url).netloc
    ca = verify if isinstance(verify, str) else (default_ca_bundle() if verify else "no verification")
    reason = "certificate verify failed" if caused_by(err, ssl.SSLCertVerificationError) else "TLS handshake failed"
    return f"TLS: {reason} for {host} using {ca}; pass the right CA bundle with --cert (CA_CERT)"


def default_ca_bundle(environ: Optional[Mapping[str, str]] = None) -> str:
    """What requests verifies against when no CA bundle is given: its CA variables, else certifi's store.

    Without ``environ``, requests itself is asked (it reads ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``),
    so the message names what it really uses and the settings are not read a second time here.
    """
    if environ is None:
        found = requests.Session().merge_environment_settings("https://localhost/", {}, None, True, None)["verify"]
        if isinstance(found, str):
            return f"the CA bundle {found} (from REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE)"
        return f"certifi's CA bundle {DEFAULT_CA_BUNDLE_PATH} (requests' default)"
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if environ.get(name):
            return f"the CA bundle {environ[name]} (from {name})"
    return f"certifi's CA bundle {DEFAULT_CA_BUNDLE_PATH} (requests' default)"
