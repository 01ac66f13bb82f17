"""A tiny HTTP server that serves one blob with byte ranges, counts the bytes it sends, and can cut a body short.

The fault proxy forwards whole answers; a download test needs an answer that
stops mid-body, so this server writes part of a range and closes the socket.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Optional, Set, Tuple

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: RangeServer = self.server.app  # type: ignore[attr-defined]
        # Noted before the answer goes out: a client that has read it finds its connection counted.
        server.note_client(self.client_address)
        blob = server.blob
        header = self.headers.get("Range")
        match = _RANGE.match(header or "") if server.ranges else None
        if match:
            start = int(match.group(1))
            server.note_asked(start)
            end = int(match.group(2)) if match.group(2) else len(blob) - 1
            end = min(end, len(blob) - 1)
            status = 206
        else:
            start, end, status = 0, len(blob) - 1, 200
        cut = server.take_cut(start, end)
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", '"blob-etag"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(blob)}")
        self.end_headers()
        body = blob[start : end + 1] if cut is None else blob[start : start + cut]
        if server.holds(start):
            # Half the body, then nothing until the awaited range is asked for (or the wait runs out).
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            server.wait_for_awaited()
            self.wfile.write(body[half:])
        else:
            self.wfile.write(body)
        server.record(start, end, len(body))
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


class RangeServer:
    """Serves ``blob`` at any path; ``cut_once(offset, after)`` cuts the answer for a range holding ``offset``."""

    def __init__(self, blob: bytes, ranges: bool = True) -> None:
        self.blob = blob
        self.ranges = ranges
        self._lock = threading.Lock()
        self._cuts: List[Tuple[int, int]] = []
        self._held: Optional[int] = None
        self._awaited: Optional[int] = None
        self._asked = threading.Event()
        #: Whether the awaited range was asked for while the held answer waited (``hold_until_asked``).
        self.asked_while_held = False
        #: (start, end, bytes sent) per answer.
        self.served: List[Tuple[int, int, int]] = []
        #: The client addresses answered: one per connection.
        self.clients: Set[Any] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.app = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/rootfs"

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def cut_once(self, offset: int, after: int) -> None:
        """The next answer covering byte ``offset`` sends only ``after`` bytes, then the connection drops."""
        with self._lock:
            self._cuts.append((offset, after))

    def take_cut(self, start: int, end: int) -> Optional[int]:
        with self._lock:
            for cut in self._cuts:
                if start <= cut[0] <= end:
                    self._cuts.remove(cut)
                    return cut[1]
        return None

    def hold_until_asked(self, held: int, awaited: int) -> None:
        """The answer for the range starting at ``held`` stops halfway until the range at ``awaited`` is asked for.

        It waits at most 10 s, then goes on; ``asked_while_held`` tells which it was.
        """
        self._held, self._awaited = held, awaited

    def holds(self, start: int) -> bool:
        return start == self._held

    def wait_for_awaited(self) -> None:
        self.asked_while_held = self._asked.wait(10.0)

    def note_asked(self, start: int) -> None:
        if start == self._awaited:
            self._asked.set()

    def note_client(self, client: Any) -> None:
        with self._lock:
            self.clients.add(client)

    def record(self, start: int, end: int, sent: int) -> None:
        with self._lock:
            self.served.append((start, end, sent))

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return sum(sent for _, _, sent in self.served)
