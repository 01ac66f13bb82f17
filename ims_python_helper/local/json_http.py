"""The JSON-over-HTTP base both local servers (IMS and the token endpoint) are built on.

:class:`LoopbackHTTPServer` serves one handler class from a daemon thread and
can be stopped cleanly (open keep-alive connections are cut, so a restarted
server is never shadowed by the old one); :class:`JsonRequestHandler` reads
bounded request bodies and writes JSON and RFC 7807 problem replies with a
Content-Length, so connections can be reused.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Optional, Set, Tuple, Type, TypeVar, cast
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_Service = TypeVar("_Service", bound="BackgroundService")

#: Oversized request bodies up to this size are read and dropped before the 413 reply.
_MAX_DRAIN_BYTES = 64 * 1024 * 1024


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


class BackgroundService:
    """A server that runs in the background between start() and stop(), or for a ``with`` block."""

    def start(self) -> None:
        """Start serving; returns at once."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        raise NotImplementedError

    def __enter__(self: _Service) -> _Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
