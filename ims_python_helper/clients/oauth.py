"""The HTTP session for IMS: OAuth2 client credentials, TLS, bounded retries, timeouts, log redaction.

The client-credentials grant has no refresh token, so an expired access token
is replaced by fetching a new one, and a request refused with 401 is replayed
once with a fresh token.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union, cast

import requests
import requests_oauthlib
from oauthlib.common import urldecode
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..errors import AuthError, ConfigError, TransportError
from .deadline import Deadline  # also its earlier place: importing it from here still works
from .redact import SECRETS, redact
from .retrylog import announce_wait, quiet_urllib3_retry_lines
from .transport import DEFAULT_TIMEOUT, check_transport, describe_request_error, tls_failure_message

LOGGER = logging.getLogger(__name__)
# Our retries say each wait once themselves; urllib3's own line for them would say it again.
quiet_urllib3_retry_lines()

#: Statuses that mean "try again later" from a gateway or an overloaded service.
TRANSIENT_STATUSES = (502, 503, 504)
#: Renew the access token this many seconds before it expires.
TOKEN_EXPIRY_MARGIN = 5.0
#: Longest wait honoured from a Retry-After header.
MAX_RETRY_AFTER = 30.0
#: Where a Cray system mounts the admin client's credentials.
DEFAULT_OAUTH_CONFIG_DIR = "/etc/admin-client-auth"


@dataclass(frozen=True)
class OAuthSettings:
    """How to get a token: the client credentials, the token endpoint and its CA bundle. Secret not in ``repr``."""

    client_id: Optional[str]
    client_secret: Optional[str] = field(repr=False)
    token_url: Optional[str]
    #: CA bundle for IMS and the token endpoint; None for the system store.
    ca_bundle: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT


class BoundedRetry(Retry):
    """urllib3 ``Retry`` that never waits past the run's deadline, and caps Retry-After waits.

    The cap and the jitter of the backoff are applied here rather than through
    ``Retry(backoff_max=..., backoff_jitter=...)``: those arguments are new in
    urllib3 2.0, and botocore keeps Python 3.9 on urllib3 1.26.
    """

    deadline: Optional[Deadline] = None
    #: For the retry line: who is retried (``IMS at URL``; None: the request's URL), the retries allowed in all
    #: ("retry N of M"), and the next wait, fixed when the retry is counted so the line says the wait taken.
    service: Optional[str] = None
    allowed = 0
    planned_wait: Optional[float] = None
    announces_waits = True  # retrylog.AnnouncedRetries drops urllib3's own line for it
    #: Longest wait between two attempts, in seconds.
    BACKOFF_CAP = 8.0
    #: Up to this many seconds are added at random to each backoff, so clients do not retry in step.
    BACKOFF_JITTER = 0.5

    def new(self, **kwargs: Any) -> BoundedRetry:
        retry = super().new(**kwargs)
        retry.deadline, retry.service, retry.allowed = self.deadline, self.service, self.allowed
        return retry

    def increment(self, method: Any = None, url: Any = None, response: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Count a failed attempt (urllib3 raises when none are left), fix the wait and say it in one line."""
        retry = super().increment(method, url, response, *args, **kwargs)
        after = retry.get_retry_after(response) if response is not None and self.respect_retry_after_header else None
        retry.planned_wait = after if after else retry.get_backoff_time()
        announce_wait(retry, url, response, kwargs.get("error", args[0] if args else None), *args[1:2])
        return retry

    def sleep(self, response: Any = None) -> None:
        """Wait the time the retry line announced."""
        super().sleep(response) if self.planned_wait is None else time.sleep(max(self.planned_wait, 0.0))

    def _left(self) -> Optional[float]:
        return None if self.deadline is None else self.deadline.remaining()

    def is_exhausted(self) -> bool:
        left = self._left()
        return (left is not None and left <= 0) or bool(super().is_exhausted())

    def get_backoff_time(self) -> float:
        wait = float(super().get_backoff_time())  # the exponential part; 0 before the second retry
        if wait > 0:
            wait = min(wait + random.random() * self.BACKOFF_JITTER, self.BACKOFF_CAP)
        left = self._left()
        return wait if left is None else max(0.0, min(wait, left))

    def get_retry_after(self, response: Any) -> Optional[float]:
        value = super().get_retry_after(response)
        if value is None:
            return None
        left = self._left()
        value = min(value, MAX_RETRY_AFTER)
        return value if left is None else max(0.0, min(value, left))


def build_retry(
    total: int = 5, allow_post: bool = False, deadline: Optional[Deadline] = None, service: Optional[str] = None
) -> Retry:
    """Retries with exponential backoff and jitter for connection errors and 502/503/504 only.

    POST is excluded unless ``allow_post``: a blind repeat of a create could make a
    duplicate record, so IMS creates are made safe to repeat one level up.
    ``service`` names who is retried in each retry line (``IMS at URL``).
    """
    methods = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"}
    if allow_post:
        methods.add("POST")
    retry = BoundedRetry(
        total=total,
        connect=total,
        read=total,
        status=total,
        other=0,
        backoff_factor=0.5,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=frozenset(methods),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.deadline, retry.service, retry.allowed = deadline, service, total
    return retry


class ClientCredentialsSession(requests_oauthlib.OAuth2Session):
    """An OAuth2 session for the client-credentials grant that renews its own token.

    Each request gets a timeout (requests has no session-wide one) cut to the
    run's deadline; the token is fetched again shortly before it expires, and a
    401 answer is replayed once with a new token.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_url: str,
        verify: Union[bool, str] = True,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: Optional[Deadline] = None,
        retries: int = 5,
    ) -> None:
        super().__init__(client=BackendApplicationClient(client_id=client_id))
        check_transport(token_url, "token URL")
        SECRETS.add(client_secret)
        self._client_secret = client_secret
        self.token_url = token_url
        self.verify = verify
        self.request_timeout = timeout
        self.deadline = deadline or Deadline(None)
        self.grants = 0
        self.mount("https://", HTTPAdapter(max_retries=build_retry(retries, deadline=self.deadline)))
        self.mount("http://", HTTPAdapter(max_retries=build_retry(retries, deadline=self.deadline)))
        # The token grant is safe to repeat, so its endpoint may retry POST too.
        self.retries, token = retries, f"the token endpoint {token_url}"
        self.mount(token_url, HTTPAdapter(max_retries=build_retry(retries, True, self.deadline, service=token)))
        self.hooks["response"].append(log_exchange)

    def __repr__(self) -> str:
        return f"<ClientCredentialsSession client_id={self.client_id!r} token_url={self.token_url!r}>"

    def fetch_new_token(self) -> None:
        """Fetch a new access token; fail fast with ``AuthError`` on refusal or when unreachable."""
        self.deadline.check("fetching an OAuth token")
        try:
            token = self._grant()
        except OAuth2Error as err:
            hint = "check the client id and secret" if err.error in ("invalid_client", "unauthorized_client") else ""
            raise AuthError(
                f"token endpoint {self.token_url} refused the client credentials ({err.error}); {hint}".rstrip("; ")
            ) from None
        except requests.exceptions.SSLError as err:
            raise TransportError(tls_failure_message(self.token_url, self.verify, err)) from None
        except requests.exceptions.RequestException as err:
            raise TransportError(
                f"cannot reach the token endpoint {self.token_url}: {describe_request_error(err)}"
            ) from None
        except ValueError as err:
            raise AuthError(
                f"token endpoint {self.token_url} answered with something that is not a token: {err}"
            ) from None
        SECRETS.add(token.get("access_token"))
        self.grants += 1
        LOGGER.debug("obtained an access token from %s (expires in %s s)", self.token_url, token.get("expires_in"))

    def _grant(self) -> Any:
        """One client-credentials exchange, posted with this session.

        oauthlib only builds the body and reads the answer; the request is ours, so
        plain http to loopback needs no process-wide OAUTHLIB_INSECURE_TRANSPORT.
        """
        body = self._client.prepare_request_body(include_client_id=True, client_secret=self._client_secret)
        response = self.request(
            "POST",
            self.token_url,
            data=dict(urldecode(body)),
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            verify=self.verify,
            timeout=self.deadline.cap(self.request_timeout),
        )
        self._client.parse_request_body_response(response.text, scope=self.scope)
        self.token = self._client.token
        return self.token

    def _token_is_fresh(self) -> bool:
        if not self.token or "access_token" not in self.token:
            return False
        expires_at = self.token.get("expires_at")
        return expires_at is None or float(expires_at) - TOKEN_EXPIRY_MARGIN > time.time()

    def bearer_header(self) -> Dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` with a fresh token, for a request this session does not send itself."""
        if not self._token_is_fresh():
            self.fetch_new_token()
        return dict(self._sign({}))

    def _sign(self, headers: Any) -> Any:
        """The request headers with the bearer token (the only token type IMS's gateway issues)."""
        signed = dict(headers or {})
        signed["Authorization"] = f"Bearer {self.token['access_token']}"
        return signed

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        data: Any = None,
        headers: Any = None,
        withhold_token: bool = False,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
        files: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        check_transport(url, "URL")
        self.deadline.check(f"calling {method} {url}")
        kwargs["timeout"] = self.deadline.cap(kwargs.get("timeout") or self.request_timeout)
        # Explicitly, because requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's own
        # verify when a call passes none: --cert must win for IMS as it does for the token endpoint.
        kwargs.setdefault("verify", self.verify)
        if withhold_token or url == self.token_url:
            return requests.Session.request(self, method, url, data=data, headers=headers, files=files, **kwargs)
        for attempt in (1, 2):
            if attempt == 2 or not self._token_is_fresh():
                self.fetch_new_token()
            response = requests.Session.request(
                self, method, url, data=data, headers=self._sign(headers), files=files, **kwargs
            )
            if response.status_code != 401 or attempt == 2:
                return response
            LOGGER.info("%s %s answered 401; fetching a new token and trying once more", method, url)
            response.close()
        raise AssertionError("unreachable")


def log_exchange(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """Response hook: one DEBUG line per exchange, without headers or bodies (they may hold secrets)."""
    if LOGGER.isEnabledFor(logging.DEBUG):
        request = response.request
        # A streamed body is not read here: the caller reads it with its own size limit.
        if getattr(response, "_content_consumed", False):
            size = str(len(response.content or b""))
        else:
            size = response.headers.get("Content-Length") or "streamed"
        LOGGER.debug("%s %s -> %s (%s bytes)", request.method, redact(str(request.url)), response.status_code, size)


class RequestLogger:
    """Response hooks that log each exchange to a caller's logger at DEBUG, as the earlier client's did.

    ``session.hooks["response"] += [RequestLogger(logger).log_request, RequestLogger(logger).log_response]``.
    Headers and bodies pass through ``redact`` first: the bearer token, the
    client secret in a token request and the token in its answer are masked.
    A streamed answer's body is not read here (its reader applies its own size limit).
    """

    def __init__(self, logger: Optional[Union[logging.Logger, logging.LoggerAdapter]]) -> None:
        self.LOGGER = logger

    def _enabled(self) -> bool:
        return self.LOGGER is not None and self.LOGGER.isEnabledFor(logging.DEBUG)

    def log_request(self, resp: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        """Log the request that produced ``resp``: method, URL, headers and body."""
        if self._enabled():
            request = resp.request
            body = request.body.decode("utf-8", "replace") if isinstance(request.body, bytes) else request.body
            self._log("REQUEST", f"{request.method} {request.url}", request.headers, body)

    def log_response(self, resp: requests.Response, *_args: Any, **kwargs: Any) -> None:
        """Log ``resp``: status, headers and body (a streamed body only when its reader has read it)."""
        if self._enabled():
            # requests reads an unstreamed body right after the hooks anyway; a streamed one is left to its reader.
            readable = getattr(resp, "_content_consumed", False) or not kwargs.get("stream", False)
            body = resp.content.decode("utf-8", "replace") if readable else "(streamed; not read here)"
            self._log("RESPONSE", str(resp.status_code), resp.headers, body)

    def _log(self, kind: str, first_line: str, headers: Any, body: Any) -> None:
        lines = "\n".join(f"{name}: {value}" for name, value in headers.items())
        assert self.LOGGER is not None
        self.LOGGER.debug("%s", redact(f"-----------{kind}-----------\n{first_line}\n{lines}\n\n{body or ''}"))


def admin_credentials(
    oauth: OAuthSettings, config_dir: str, logger: Optional[logging.Logger] = None
) -> Tuple[str, str, str]:
    """The admin client's ``(client_id, client_secret, token_url)`` from settings read from its env vars or mount.

    Raises ``ConfigError`` naming what is missing (also logged to ``logger`` when given).
    """
    found = (oauth.client_id or "", oauth.client_secret or "", oauth.token_url or "")
    SECRETS.add(found[1])
    missing = [name for name, value in zip(("client-id", "client-secret", "endpoint"), found) if not value]
    if missing:
        message = (
            f"OAuth configuration incomplete: missing {', '.join(missing)}; set OAUTH_CLIENT_ID, "
            f"OAUTH_CLIENT_SECRET and OAUTH_CLIENT_ENDPOINT or mount them in {config_dir}"
        )
        if logger is not None:
            logger.error(message)
        raise ConfigError(message)
    return found


def create_oauth_session(
    oauth_client_id: Optional[str],
    oauth_client_secret: Optional[str],
    ssl_cert: Union[str, bool, None],
    token_url: Optional[str],
    timeout: Union[float, logging.Logger, logging.LoggerAdapter],
    logger: Optional[logging.Logger] = None,
    deadline: Optional[Deadline] = None,
) -> ClientCredentialsSession:
    """Create an OAuth2 client-credentials session and fetch its first token.

    A logger given in the ``timeout`` position (as older callers do) is taken as
    the logger, with the default timeout. With a logger, each exchange is also
    logged to it at DEBUG through ``RequestLogger`` (secrets masked).

    ``ssl_cert`` is a CA bundle path, or None/True for the system store. Fails
    with ``ConfigError`` when a credential is missing and ``AuthError`` when the
    token endpoint refuses them (no endless retrying).
    """
    if isinstance(timeout, (logging.Logger, logging.LoggerAdapter)):
        # Older callers pass their logger where the timeout now is: (id, secret, ca, token_url, logger).
        logger, timeout = cast(logging.Logger, timeout), DEFAULT_TIMEOUT
    ca_bundle = ssl_cert if isinstance(ssl_cert, str) and ssl_cert else None
    oauth = OAuthSettings(oauth_client_id, oauth_client_secret, token_url, ca_bundle, float(timeout))
    session = open_oauth_session(oauth, deadline=deadline, logger=logger)
    if logger is not None:
        hooks = RequestLogger(logger)
        session.hooks["response"].extend([hooks.log_request, hooks.log_response])
    return session


def open_oauth_session(
    oauth: OAuthSettings, deadline: Optional[Deadline] = None, logger: Optional[logging.Logger] = None
) -> ClientCredentialsSession:
    """``create_oauth_session`` for settings the option table built."""
    named = (("client id", oauth.client_id), ("client secret", oauth.client_secret), ("token URL", oauth.token_url))
    missing = [name for name, value in named if not value]
    if missing:
        message = (
            f"OAuth configuration incomplete: no {', '.join(missing)}; give --oauth-client-id, "
            "--oauth-client-secret(-file) and --token-url or their env vars, or mount them in OAUTH_CONFIG_DIR"
        )
        if logger is not None:
            logger.error(message)
        raise ConfigError(message)
    assert oauth.client_id and oauth.client_secret and oauth.token_url
    session = ClientCredentialsSession(
        oauth.client_id,
        oauth.client_secret,
        oauth.token_url,
        verify=oauth.ca_bundle or True,
        timeout=oauth.timeout,
        deadline=deadline,
    )
    session.fetch_new_token()
    return session
