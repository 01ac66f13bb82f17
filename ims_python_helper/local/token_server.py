"""A local OAuth2 client-credentials token endpoint, shaped like Keycloak's.

oauthlib's server side does the protocol work (grant type checks, error
bodies, the token response); this module supplies the client table, the
self-verifying token format from :mod:`tokens`, and the request routing on
the JSON HTTP base of :mod:`json_http` (shared with the local IMS server).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import ssl
import threading
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional, Tuple, cast
from urllib.parse import unquote_plus

from oauthlib.oauth2 import BackendApplicationServer, RequestValidator  # type: ignore[import-untyped]
from oauthlib.oauth2.rfc6749.errors import OAuth2Error  # type: ignore[import-untyped]

from ims_python_helper.local.json_http import BackgroundService, JsonRequestHandler, LoopbackHTTPServer
from ims_python_helper.local.tokens import TokenSigner

log = logging.getLogger(__name__)

#: Where Keycloak serves the token endpoint of the ``shasta`` realm.
TOKEN_PATH = "/keycloak/realms/shasta/protocol/openid-connect/token"  # noqa: S105 - a URL path, not a secret
#: Unauthenticated counters, so tests running the stack in a subprocess can see them.
STATS_PATH = "/_local/stats"

#: Largest token request body we read; real ones are a few hundred bytes.
_MAX_TOKEN_REQUEST = 64 * 1024


# --------------------------------------------------------------------------- OAuth2


class _ClientCredentialsValidator(RequestValidator):  # type: ignore[misc]
    """The oauthlib hooks for a fixed table of confidential clients."""

    def __init__(self, clients: Mapping[str, str], on_grant: Any) -> None:
        super().__init__()
        self._clients = dict(clients)
        self._on_grant = on_grant

    def client_authentication_required(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        return True

    def authenticate_client(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        form_id = getattr(request, "client_id", None)
        if basic is not None:
            client_id, secrets = basic[0], basic[1]
            # A body client_id that names someone else is a confused request, not a login.
            if form_id and form_id != client_id:
                return False
        else:
            client_id = form_id or ""
            secrets = [getattr(request, "client_secret", None) or ""]
        expected = self._clients.get(client_id)
        # Compare against a dummy for unknown clients too, so timing does not reveal which ids exist.
        target = (expected if expected is not None else "\x00unknown-client").encode("utf-8")
        matched = False
        for secret in secrets:
            matched |= hmac.compare_digest(secret.encode("utf-8"), target)
        if not matched or expected is None:
            return False
        request.client = SimpleNamespace(client_id=client_id)
        request.client_id = client_id
        return True

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        return grant_type == "client_credentials"

    def get_default_scopes(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> List[str]:
        return ["openid"]

    def validate_scopes(
        self, client_id: str, scopes: List[str], client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        return True

    def save_bearer_token(self, token: Any, request: Any, *args: Any, **kwargs: Any) -> None:
        self._on_grant()


def _basic_credentials(header: str) -> Optional[Tuple[str, List[str]]]:
    """Parse ``Basic base64(id:secret)``; returns the id and the candidate secrets.

    RFC 6749 says both parts are form-encoded before base64, but many clients
    skip that, so the secret is tried both raw and decoded.
    """
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    candidates = [secret]
    if unquote_plus(secret) != secret:
        candidates.append(unquote_plus(secret))
    return unquote_plus(client_id), candidates


def _quiet_oauthlib_debug_logs() -> None:
    # oauthlib logs the issued token dict at DEBUG; this process must never log tokens,
    # even when a caller turns on debug logging for everything.
    oauthlib_logger = logging.getLogger("oauthlib")
    if oauthlib_logger.level < logging.INFO:
        oauthlib_logger.setLevel(logging.INFO)


class _TokenHandler(JsonRequestHandler):
    """Routes the token endpoint and the stats endpoint."""

    def _app(self) -> TokenServer:
        return cast(TokenServer, self.app())

    def do_POST(self) -> None:
        path = self.request_path()
        body = self.read_body(_MAX_TOKEN_REQUEST)
        if body is None:
            return
        if path != TOKEN_PATH:
            self.send_json(404, {"error": "not_found"})
            return
        status, headers, payload = self._app().token_response(self.path, body, dict(self.headers.items()))
        self.send_json(status, payload, headers=headers)

    def do_GET(self) -> None:
        path = self.request_path()
        if self.read_body(_MAX_TOKEN_REQUEST) is None:
            return
        if path == STATS_PATH:
            self.send_json(200, {"grants": self._app().grants_issued})
        elif path == TOKEN_PATH:
            self.send_json(
                405, {"error": "invalid_request", "error_description": "use POST"}, headers={"Allow": "POST"}
            )
        else:
            self.send_json(404, {"error": "not_found"})


class TokenServer(BackgroundService):
    """An OAuth2 client-credentials token endpoint on loopback.

    ``clients`` maps client ids to secrets. Tokens come from ``signer`` and
    live ``lifetime`` seconds.
    """

    def __init__(
        self,
        clients: Dict[str, str],
        signer: TokenSigner,
        lifetime: int = 300,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._signer = signer
        self._lifetime = lifetime
        self._grants = 0
        self._grants_lock = threading.Lock()
        _quiet_oauthlib_debug_logs()
        validator = _ClientCredentialsValidator(clients, self._count_grant)
        self._oauth = BackendApplicationServer(
            validator,
            token_generator=lambda request: signer.issue(request.client_id, lifetime),
            # A callable, because oauthlib would turn a lifetime of 0 into its 3600 s default.
            token_expires_in=lambda request: lifetime,
        )
        self._http = LoopbackHTTPServer(_TokenHandler, self, host, port, ssl_context, name="token")

    @property
    def url(self) -> str:
        """Full URL of the token endpoint."""
        return self._http.base_url + TOKEN_PATH

    @property
    def base_url(self) -> str:
        """``http(s)://HOST:PORT`` of the server."""
        return self._http.base_url

    @property
    def grants_issued(self) -> int:
        """How many tokens have been issued since start."""
        with self._grants_lock:
            return self._grants

    def start(self) -> None:
        """Start serving in a daemon thread."""
        self._http.start()

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        self._http.stop()

    def token_response(self, uri: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, Dict[str, str], Any]:
        """Answer one token request: (status, extra headers, JSON payload)."""
        try:
            text = body.decode("utf-8")
            out_headers, out_body, status = self._oauth.create_token_response(
                self._http.base_url + uri, http_method="POST", body=text, headers=headers
            )
        except OAuth2Error as error:
            out_headers, out_body, status = dict(error.headers), error.json, error.status_code
        except (UnicodeDecodeError, ValueError):
            out_headers, out_body, status = {}, json.dumps({"error": "invalid_request"}), 400
        reply_headers = {
            k: v for k, v in dict(out_headers).items() if k.lower() not in ("content-type", "content-length")
        }
        reply_headers.setdefault("Cache-Control", "no-store")
        return status, reply_headers, json.loads(out_body)

    def _count_grant(self) -> None:
        with self._grants_lock:
            self._grants += 1
