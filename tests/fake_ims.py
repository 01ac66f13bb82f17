"""A scripted stand-in for IMS on a loopback socket: each route answers what a test says.

For the answers a real IMS (or the gateway in front of it) should never give but
sometimes does: HTML error pages, truncated or non-UTF-8 JSON, the wrong JSON
types, bodies of 100 MB, a Content-Length that lies, an error that echoes the
request's Authorization header back::

    with FakeIms({"GET /images": Answer.html(200, "<h1>Login</h1>")}) as ims:
        run_cli(..., env={"IMS_URL": ims.url})

Routes are ``"METHOD /path"`` patterns (``fnmatch``: ``"PATCH /jobs/*"``).
Anything not scripted gets a 404 problem body.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

MIB = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """One scripted answer."""

    status: int = 200
    #: The body, or a function of the request's Authorization header that makes it.
    body: Union[bytes, Callable[[str], bytes]] = b""
    content_type: str = "application/json"
    #: Send this many filler bytes instead of ``body`` (a huge answer).
    filler_bytes: int = 0
    #: Send the body chunked, without Content-Length (so the client cannot tell its size up front).
    chunked: bool = False
    #: Claim this Content-Length whatever is sent, then close (a truncated answer).
    declared_length: Optional[int] = None
    #: More headers (``Content-Encoding: gzip`` ...).
    headers: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Answer:
        return cls(status, json.dumps(value).encode())

    @classmethod
    def html(cls, status: int, text: str) -> Answer:
        return cls(status, f"<!DOCTYPE html><html><body>{text}</body></html>".encode(), "text/html")


@dataclass
class _State:
    routes: Dict[str, Answer]
    seen: List[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_for(self, method: str, path: str) -> Optional[Answer]:
        for pattern, answer in self.routes.items():
            if fnmatch.fnmatchcase(f"{method} {path}", pattern):
                return answer
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        state: _State = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.seen.append(f"{self.command} {path}")
        answer = state.answer_for(self.command, path) or Answer.json(
            {"title": "Not Found", "status": 404, "detail": f"no route {path}"}, 404
        )
        body = answer.body(self.headers.get("Authorization", "")) if callable(answer.body) else answer.body
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers:
            self.send_header(name, value)
        try:
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                self._send_chunked(answer, body)
                return
            if answer.declared_length is not None:
                self.send_header("Content-Length", str(answer.declared_length))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            size = answer.filler_bytes or len(body)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if answer.filler_bytes:
                self._send_filler(answer.filler_bytes)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client stopped reading a body it had decided to refuse: that is the point.
            self.close_connection = True

    def _send_filler(self, size: int) -> None:
        block = b"[" + b"0," * (MIB // 2 - 1) + b"0"
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            self.wfile.write(piece)
            sent += len(piece)

    def _send_chunked(self, answer: Answer, body: bytes) -> None:
        if answer.filler_bytes:
            block = b"0," * (MIB // 2)
            for _ in range(0, answer.filler_bytes, len(block)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        elif body:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve


class FakeIms:
    """A loopback HTTP server answering scripted routes; ``seen`` lists the requests it got."""

    def __init__(self, routes: Dict[str, Answer]) -> None:
        self._state = _State(dict(routes))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self._state  # type: ignore[attr-defined]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def seen(self) -> List[str]:
        with self._state.lock:
            return list(self._state.seen)

    def __enter__(self) -> FakeIms:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
