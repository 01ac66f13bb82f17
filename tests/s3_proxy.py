"""A counting HTTP proxy in front of the stack's S3 endpoint: the tests' request log of S3 traffic.

Point the client's ``S3_ENDPOINT`` at ``proxy.endpoint`` and every request is
forwarded unchanged (the ``Host`` header the client signed included, so SigV4
signatures still verify on moto and Ceph RGW) while the proxy records its
method, path, status and body size. That measures what a run sent to S3
independently of the client: "uploaded zero bytes" is ``proxy.bytes_sent == 0``.

    with CountingS3Proxy(stack.s3.endpoint) as proxy:
        run_cli(..., env={"S3_ENDPOINT": proxy.endpoint})
        assert proxy.bytes_sent == 0
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

#: Hop-by-hop headers a proxy must not forward (``Expect`` is answered here; it is not signed by SigV4).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "expect", "upgrade", "te"}
#: Methods whose request bodies count as bytes uploaded.
WRITE_METHODS = {"PUT", "POST"}


@dataclass(frozen=True)
class S3Request:
    """One request the proxy forwarded."""

    method: str
    path: str
    body_bytes: int
    status: int


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the record of requests is the proxy's log."""

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _read_body(self) -> Tuple[bytes, int]:
        """The request body exactly as sent (chunk framing kept) and its payload size."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            payload = 0
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw), payload
                chunk = self.rfile.read(size + 2)
                raw += chunk
                payload += size
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        return body, len(body)

    def _forward(self) -> None:
        body, payload = self._read_body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        status, reason, response_headers, data = self.server.send_upstream(self.command, self.path, headers, body)
        self.server.record(S3Request(self.command, self.path, payload, status))
        self.wfile.write(f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1"))
        for name, value in response_headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower == "transfer-encoding":
                continue
            if lower == "content-length" and self.command != "HEAD":
                continue
            self.wfile.write(f"{name}: {value}\r\n".encode("latin-1"))
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(f"Content-Length: {len(data)}\r\n".encode("latin-1"))
        self.wfile.write(b"\r\n")
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: Tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.requests: List[S3Request] = []

    def record(self, request: S3Request) -> None:
        with self.lock:
            self.requests.append(request)

    def send_upstream(
        self, method: str, path: str, headers: List[Tuple[str, str]], body: bytes
    ) -> Tuple[int, str, List[Tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            connection.close()


class CountingS3Proxy:
    """A loopback HTTP proxy to an S3 endpoint that records every request (see the module docstring)."""

    def __init__(self, upstream_endpoint: str) -> None:
        parts = urlsplit(upstream_endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the counting proxy forwards plain http only, not {upstream_endpoint!r}")
        self._server = _ProxyServer((parts.hostname, parts.port or 80))
        self._thread: Optional[threading.Thread] = None

    @property
    def endpoint(self) -> str:
        """The URL to give the client as its S3 endpoint."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> CountingS3Proxy:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> CountingS3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def requests(self) -> List[S3Request]:
        """Every request forwarded so far, in order of completion."""
        with self._server.lock:
            return list(self._server.requests)

    def reset(self) -> None:
        """Forget what was recorded (to measure one run at a time)."""
        with self._server.lock:
            self._server.requests.clear()

    @property
    def bytes_sent(self) -> int:
        """Body bytes of every PUT and POST: what the client uploaded."""
        return sum(r.body_bytes for r in self.requests if r.method in WRITE_METHODS)

    def methods(self) -> Dict[str, int]:
        """How many requests of each method were forwarded."""
        counts: Dict[str, int] = {}
        for request in self.requests:
            counts[request.method] = counts.get(request.method, 0) + 1
        return counts

    def writes(self) -> List[S3Request]:
        """The requests that change something in S3 (PUT, POST, DELETE)."""
        return [r for r in self.requests if r.method in WRITE_METHODS or r.method == "DELETE"]
