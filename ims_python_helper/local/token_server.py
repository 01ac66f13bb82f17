"""A local OAuth2 client-credentials token endpoint, shaped like Keycloak's.

oauthlib's server side does the protocol work (grant type checks, error
bodies, the token response); this module supplies the client table, the
self-verifying token format from :mod:`tokens`, and the HTTP plumbing.

The HTTP plumbing (:class:`LoopbackHTTPServer`, :class:`JsonRequestHandler`)
is shared with the local IMS server.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Type, cast
from urllib.parse import unquote_plus, urlsplit

from oauthlib.oauth2 import BackendApplicationServer, RequestValidator  # type: ignore[import-untyped]
from oauthlib.oauth2.rfc6749.errors import OAuth2Error  # type: ignore[import-untyped]

from ims_python_helper.local.tokens import TokenSigner

log = logging.getLogger(__name__)

#: Where Keycloak serves the token endpoint of the ``shasta`` realm.
TOKEN_PATH = "/keycloak/realms/shasta/protocol/openid-connect/token"  # noqa: S105 - a URL path, not a secret
#: Unauthenticated counters, so tests running the stack in a subprocess can see them.
STATS_PATH = "/_local/stats"

#: Oversized request bodies up to this size are read and dropped before the 413 reply.
_MAX_DRAIN_BYTES = 64 * 1024 * 1024
#: Largest token request body we read; real ones are a few hundred bytes.
_MAX_TOKEN_REQUEST = 64 * 1024


# --------------------------------------------------------------------------- HTTP plumbing


class _TrackingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its open connections so stop() can cut them.

    Without this, a keep-alive connection would keep being served by a stopped
    server's handler thread, so a client talking to a restarted server on the
    same port could still reach the old one.
    """

    daemon_threads = True

    def __init__(
        self, address: Tuple[str, int], handler: Type[BaseHTTPRequestHandler], ssl_context: Optional[ssl.SSLContext]
    ) -> None:
        self.app: Any = None
        self.ssl_context = ssl_context
        self._connections: Set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> Tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake runs later in the handler thread, so one slow client cannot stall accept().
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that reset or fail the TLS handshake are normal here; keep stderr quiet.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def _bound_address(httpd: _TrackingHTTPServer) -> Tuple[str, int]:
    host, port = httpd.server_address[:2]
    return (host.decode() if isinstance(host, (bytes, bytearray)) else str(host)), int(port)


class LoopbackHTTPServer:
    """Serves one request handler class from a daemon thread until stop().

    ``app`` is made available to handlers as ``self.server.app``.
    """

    def __init__(
        self,
        handler: Type[BaseHTTPRequestHandler],
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Optional[ssl.SSLContext] = None,
        name: str = "http",
    ) -> None:
        self._handler = handler
        self._app = app
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._name = name
        self._httpd: Optional[_TrackingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        """``http(s)://HOST:PORT`` of the running server."""
        if self._httpd is None:
            raise RuntimeError(f"{self._name} server is not running")
        host, port = _bound_address(self._httpd)
        scheme = "https" if self._ssl_context is not None else "http"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._httpd is not None

    def start(self) -> None:
        """Bind the port and start serving in a daemon thread."""
        if self._httpd is not None:
            return
        httpd = _TrackingHTTPServer((self._host, self._port), self._handler, self._ssl_context)
        httpd.app = self._app
        # A short poll interval keeps stop() quick; serve_forever checks for shutdown at that rate.
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self._name}-server", daemon=True
        )
        thread.start()
        self._httpd, self._thread = httpd, thread

    def stop(self) -> None:
        """Stop accepting, cut open connections and release the port; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        # shutdown() waits for serve_forever's next poll; a throw-away connection wakes it at once.
        stopper = threading.Thread(target=httpd.shutdown, name=f"{self._name}-stop", daemon=True)
        stopper.start()
        try:
            socket.create_connection(_bound_address(httpd), timeout=1).close()
        except OSError:
            pass
        stopper.join()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler basics: bounded body reads and JSON replies.

    Every reply carries Content-Length so the connection can be reused; when a
    request body cannot be read in full, the reply closes the connection so the
    stream never gets out of step.
    """

    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections are dropped after this many seconds.
    timeout = 60
    server_version = "ims-python-helper-local"

    def version_string(self) -> str:
        return self.server_version

    def app(self) -> Any:
        """The object the owning :class:`LoopbackHTTPServer` was given as ``app``."""
        return cast(_TrackingHTTPServer, self.server).app

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle holds the body
        # back until the client's delayed ACK, adding ~40 ms to every reply.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr; servers here keep their own logs.
        pass

    def request_path(self) -> str:
        """The request path without query string or fragment."""
        return urlsplit(self.path).path

    def read_body(self, limit: int) -> Optional[bytes]:
        """Read the request body, or reply with an error and return None.

        Bodies longer than ``limit`` get 413, chunked bodies 411; both close the
        connection because the rest of the body is left unread.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.send_problem(411, "Length Required", "send the request body with a Content-Length header")
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError(length_text)
        except ValueError:
            self.close_connection = True
            self.send_problem(400, "Bad Request", "Content-Length is not a non-negative integer")
            return None
        if length > limit:
            # Swallow a moderately large body first: a client still sending when we close
            # would see a connection reset instead of this reply.
            if length <= _MAX_DRAIN_BYTES:
                self._discard(length)
            self.close_connection = True
            self.send_problem(
                413, "Payload Too Large", f"request body of {length} bytes exceeds the {limit} byte limit"
            )
            return None
        return self.rfile.read(length) if length else b""

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1024 * 1024))
            if not chunk:
                return
            length -= len(chunk)

    def send_json(
        self,
        status: int,
        payload: Any,
        content_type: str = "application/json",
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Send ``payload`` as JSON (or no body for 204 and HEAD) with Content-Length."""
        body = b"" if status == 204 else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        # Recorded before the body goes out, so a client holding the answer always finds the record.
        self.after_reply(status)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def send_problem(self, status: int, title: str, detail: str, headers: Optional[Mapping[str, str]] = None) -> None:
        """Send an RFC 7807 problem body."""
        problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        self.send_json(status, problem, "application/problem+json", headers)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # http.server calls this for requests it cannot parse and methods with no do_X;
        # answer those in the same problem+json shape as everything else.
        self.close_connection = True
        title = self.responses.get(code, ("Error",))[0]
        self.send_problem(code, title, message or explain or title)

    def after_reply(self, status: int) -> None:
        """Hook called after each reply; subclasses write their request log here."""


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


class TokenServer:
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

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
