"""A fault-injecting HTTP proxy on a real loopback socket, for IMS, the token endpoint and S3.

Point a client at ``proxy.url`` instead of the server and every request goes
through it: forwarded byte for byte (the ``Host`` header the client signed
included, so S3 SigV4 signatures still verify), or answered by a fault::

    with FaultProxy(stack.ims.url, name="ims") as ims:
        ims.add(Fault(status=503, times=2, per_kind=True))  # first two requests of every kind
        run_cli(..., env={"IMS_URL": ims.url})
        assert ims.count(kind="POST /images") == 3

A fault is picked per request (the first one that matches and still has shots
left) and does one of:

- ``status``: answer ``status`` without forwarding (the server never sees it);
- ``status_after_forward``: forward, let the server act, then answer ``status``
  instead (the request landed but its answer was lost);
- ``drop``: close the connection without an answer;
- ``hang``: hold the connection open without an answer until the proxy stops;
- ``delay``: wait ``delay`` seconds, then forward;
- ``hold``: forward, let the server act, then hold its answer ``delay``
  seconds (up to ``delay_max`` when given: a random time in between) before
  relaying it: a slow server, or an answer that arrives late. A client that
  gave up meanwhile finds its connection answered after it left;
- ``drop_after_forward``: forward, let the server act, then close the
  connection without an answer (the server did the work, the client never
  hears: a "lost answer");
- ``flip_byte``: forward with the first byte of the request body inverted
  (a body corrupted on the way; the signed headers are left as they were);
- ``rewrite``: forward, then replace ``pattern`` (a bytes regex) with
  ``replacement`` in the server's answer, body and header values, before
  relaying it (an answer altered on the way).

``chance`` applies a fault to a random share of the matching requests (drawn
from ``seed``, so a run can be repeated), e.g. hold 5 to 30 s on one request
in five: ``Fault(action="hold", delay=5, delay_max=30, chance=0.2, seed=1)``.

``down()`` closes the listening socket and cuts every open connection, as if
the server process had died (new connections are refused); ``up()`` listens on
the same port again. ``freeze()`` keeps every connection open but stops
moving bytes either way, as a hung server or a network partition does, until
``thaw()``. ``outage(seconds)`` is a ``down()`` that ends by itself: S3
"stopped for 10 s". ``never_answer()`` makes every request hang: a server
that accepts connections and never answers. ``bandwidth`` throttles request bodies (all connections
together), so an upload takes as long as a test needs. ``observer`` sees every
request when it arrives and again when the server has answered, and may drop it
there (the crash tests kill the client at such a moment).

It is also the tests' record of traffic: ``exchanges`` lists every request,
``bytes_sent`` counts the bodies of writes ("uploaded nothing" is
``bytes_sent == 0``), ``writes()`` lists them and ``reset()`` starts a new count.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

#: Hop-by-hop headers a proxy must not forward (``Expect`` is answered here; SigV4 does not sign it).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "expect", "upgrade", "te"}
#: Ids in paths are folded into ``{id}`` so "PATCH /images/{id}" names one kind of request.
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
BODY_CHUNK = 64 * 1024
ACTIONS = (
    "status",
    "status_after_forward",
    "drop",
    "hang",
    "delay",
    "hold",
    "drop_after_forward",
    "flip_byte",
    "rewrite",
)
#: Actions that forward the request first and then do something to the server's answer.
AFTER_FORWARD = ("status_after_forward", "hold", "drop_after_forward")
#: Methods whose request bodies count as bytes uploaded.
WRITE_METHODS = ("PUT", "POST", "PATCH")


def _rewritten(fault: Fault, value: str) -> str:
    """A header value with ``fault.pattern`` replaced (header values are latin-1 on the wire)."""
    return re.sub(fault.pattern, fault.replacement, value.encode("latin-1")).decode("latin-1")


def request_kind(method: str, path: str) -> str:
    """``"PATCH /images/{id}"`` for ``PATCH /images/0e6d...?x=1``: method and path without ids or query."""
    return f"{method} {_ID.sub('{id}', urlsplit(path).path)}"


@dataclass
class Fault:
    """What to do with the requests that match ``method`` and the ``path`` regex (searched in path and query).

    ``skip`` matching requests pass first, then ``times`` of them get the fault
    (``None``: all of them). With ``per_kind`` the counts are kept per kind of
    request (``request_kind``), so "the first N requests of each kind" is one fault.
    """

    action: str = "status"
    status: int = 503
    method: Optional[str] = None
    path: str = ""
    times: Optional[int] = None
    skip: int = 0
    per_kind: bool = False
    headers: Dict[str, str] = field(default_factory=dict)
    detail: str = ""
    #: The answer's body as is (S3 wants XML); default: a problem body with ``detail``.
    body: Optional[bytes] = None
    delay: float = 0.0
    #: With ``delay``: the hold (or delay) is a random time between ``delay`` and ``delay_max`` seconds.
    delay_max: Optional[float] = None
    #: ``rewrite``: what to replace in the answer's body (a bytes regex), and with what.
    pattern: bytes = b""
    replacement: bytes = b""
    #: Share of the matching requests that get the fault (1: every one), drawn from ``seed``.
    chance: float = 1.0
    seed: int = 0
    #: How often the fault was applied.
    fired: int = field(default=0, init=False)
    _seen: Counter = field(default_factory=Counter, init=False, repr=False)
    _fired: Counter = field(default_factory=Counter, init=False, repr=False)
    _random: random.Random = field(default_factory=random.Random, init=False, repr=False)
    #: The waits drawn for ``hold``/``delay``, in order (a test can sum what it cost).
    waits: List[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; choose one of {', '.join(ACTIONS)}")
        if not 0.0 <= self.chance <= 1.0:
            raise ValueError(f"fault chance must be between 0 and 1, not {self.chance}")
        self._random.seed(self.seed)

    def wait_time(self) -> float:
        """The next ``hold``/``delay`` wait: ``delay``, or a random time up to ``delay_max``."""
        wait = self.delay
        if self.delay_max is not None and self.delay_max > self.delay:
            wait = self._random.uniform(self.delay, self.delay_max)
        self.waits.append(wait)
        return wait

    def matches(self, method: str, path: str) -> bool:
        """True when this fault is about such a request (whether or not it has shots left)."""
        return (self.method is None or self.method == method) and re.search(self.path, path) is not None

    def take(self, method: str, path: str) -> bool:
        """Count a matching request; True when this one gets the fault."""
        key = request_kind(method, path) if self.per_kind else ""
        self._seen[key] += 1
        if self._seen[key] <= self.skip:
            return False
        if self.times is not None and self._fired[key] >= self.times:
            return False
        if self.chance < 1.0 and self._random.random() >= self.chance:
            return False
        self._fired[key] += 1
        self.fired += 1
        return True

    def answer(self) -> Tuple[int, Dict[str, str], bytes]:
        """The canned answer: ``body``, else an RFC 7807 problem body (IMS and the token endpoint read ``detail``)."""
        reason = http.client.responses.get(self.status, "Error")
        if self.body is not None:
            return self.status, dict(self.headers), self.body
        detail = self.detail or f"fault injected by the test proxy: {self.status} {reason}"
        body = json.dumps({"type": "about:blank", "title": reason, "status": self.status, "detail": detail})
        headers = {"Content-Type": "application/problem+json"}
        headers.update(self.headers)
        return self.status, headers, body.encode()


@dataclass
class Exchange:
    """One request the proxy handled: what was asked, what the client got, and which fault (if any) answered."""

    proxy: str
    method: str
    path: str
    started: float
    status: int = 0  # 0: the client got no answer (dropped, hung, cut or killed)
    fault: str = ""  # the fault's action, '' when forwarded unchanged
    body_bytes: int = 0  # request payload bytes relayed to the server so far (chunk framing not counted)
    answer_bytes: int = 0  # body bytes of the answer relayed to the client (what the server served)
    #: The request's headers as the client sent them.
    headers: Dict[str, str] = field(default_factory=dict)
    ended: float = 0.0

    @property
    def kind(self) -> str:
        """``request_kind`` of this request."""
        return request_kind(self.method, self.path)


@dataclass(frozen=True)
class ProxyEvent:
    """What an observer is shown: ``stage`` is ``"request"`` (before forwarding) or ``"response"`` (server answered)."""

    stage: str
    exchange: Exchange


#: An observer returns "drop" to end the exchange there, without forwarding or answering.
Observer = Callable[[ProxyEvent], Optional[str]]


class _Throttle:
    """A shared byte budget per second (a token bucket without burst)."""

    def __init__(self) -> None:
        self.rate: Optional[float] = None
        self._lock = threading.Lock()
        self._next = 0.0

    def take(self, amount: int, gone: threading.Event) -> None:
        """Wait until ``amount`` more bytes fit in the budget (or until ``gone`` is set)."""
        rate = self.rate
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + amount / rate
            wait = self._next - now
        if wait > 0:
            gone.wait(wait)


class _Cut(Exception):
    """The proxy went down (or an observer dropped the exchange) while a request was in flight."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.gone = threading.Event()  # set by down(): hung and throttled exchanges give up
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: cut and reset connections are what this proxy is for."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the proxy's record of exchanges is its log."""

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.proxy._track(self.request, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.request, add=False)

    def do_GET(self) -> None:
        self._exchange()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- one request ---------------------------------------------------------------

    def _exchange(self) -> None:
        proxy = self.server.proxy
        exchange = proxy._begin(self.command, self.path)
        exchange.headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            self._serve(proxy, exchange)
        except (_Cut, OSError, http.client.HTTPException, ValueError):
            self.close_connection = True
        finally:
            exchange.ended = time.monotonic()

    def _wait_while_frozen(self, proxy: FaultProxy) -> None:
        while proxy.frozen.is_set():
            if self.server.gone.wait(0.05):
                raise _Cut()

    def _serve(self, proxy: FaultProxy, exchange: Exchange) -> None:
        self._wait_while_frozen(proxy)
        fault = proxy._pick(self.command, self.path)
        if fault is not None:
            exchange.fault = fault.action
        if proxy._observe("request", exchange) == "drop":
            raise _Cut()
        if fault is not None and fault.action == "drop":
            raise _Cut()
        if fault is not None and fault.action == "hang":
            self.server.gone.wait(120)
            raise _Cut()
        if fault is not None and fault.action == "delay" and self.server.gone.wait(fault.wait_time()):
            raise _Cut()
        if fault is not None and fault.action == "status":
            self._drain_body()
            canned_status, canned_headers, canned_body = fault.answer()
            self._reply(canned_status, list(canned_headers.items()), canned_body, exchange)
            return
        status, reason, headers, body = self._forward(
            proxy, exchange, flip=fault is not None and fault.action == "flip_byte"
        )
        self._wait_while_frozen(proxy)
        if proxy._observe("response", exchange) == "drop":
            raise _Cut()
        if fault is not None and fault.action == "drop_after_forward":
            raise _Cut()  # the server acted; the client never hears of it
        if fault is not None and fault.action == "hold" and self.server.gone.wait(fault.wait_time()):
            raise _Cut()
        if fault is not None and fault.action == "rewrite":
            body = re.sub(fault.pattern, fault.replacement, body)
            headers = [(name, _rewritten(fault, value)) for name, value in headers]
        if fault is not None and fault.action == "status_after_forward":
            status, canned_headers, body = fault.answer()
            headers, reason = list(canned_headers.items()), ""
        self._reply(status, headers, body, exchange, reason)

    def _body_chunks(self) -> Any:
        """The request body as it arrives, as (bytes to relay, payload bytes among them).

        Chunk framing is relayed as sent but not counted as payload, so a body
        counts the same however the client framed it.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _Cut()
                yield line, 0
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        trailer = self.rfile.readline(1024)
                        yield trailer, 0
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                left = size
                while left:
                    data = self.rfile.read(min(left, BODY_CHUNK))
                    if not data:
                        raise _Cut()
                    left -= len(data)
                    yield data, len(data)
                yield self.rfile.read(2), 0  # the CRLF after the chunk
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            data = self.rfile.read(min(left, BODY_CHUNK))
            if not data:
                raise _Cut()
            left -= len(data)
            yield data, len(data)

    def _drain_body(self) -> None:
        for _ in self._body_chunks():
            pass

    def _forward(
        self, proxy: FaultProxy, exchange: Exchange, flip: bool = False
    ) -> Tuple[int, str, List[Tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
        proxy._track_upstream(connection, add=True)
        try:
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.endheaders()
            for chunk, payload in self._body_chunks():
                proxy.throttle.take(len(chunk), self.server.gone)
                self._wait_while_frozen(proxy)
                if self.server.gone.is_set():
                    raise _Cut()
                if flip and payload:
                    chunk, flip = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                connection.send(chunk)
                exchange.body_bytes += payload
            response = connection.getresponse()
            body = response.read()
            return response.status, response.reason, response.getheaders(), body
        finally:
            proxy._track_upstream(connection, add=False)
            connection.close()

    def _reply(
        self, status: int, headers: List[Tuple[str, str]], body: bytes, exchange: Exchange, reason: str = ""
    ) -> None:
        reason = reason or http.client.responses.get(status, "Error")
        out = [f"HTTP/1.1 {status} {reason}\r\n"]
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower == "transfer-encoding":
                continue
            if lower == "content-length" and self.command != "HEAD":
                continue
            out.append(f"{name}: {value}\r\n")
        if self.command != "HEAD" and status not in (204, 304):
            out.append(f"Content-Length: {len(body)}\r\n")
        out.append("\r\n")
        # Recorded before the answer goes out: a client holding the answer must find it counted.
        exchange.status = status
        exchange.answer_bytes = len(body) if self.command != "HEAD" else 0
        try:
            self.wfile.write("".join(out).encode("latin-1"))
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            exchange.status = 0  # the client never got it
            raise


class FaultProxy:
    """A loopback HTTP proxy in front of one server that injects faults (see the module docstring)."""

    def __init__(
        self,
        upstream_url: str,
        name: str = "proxy",
        bandwidth: Optional[float] = None,
        observer: Optional[Observer] = None,
    ) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the fault proxy forwards plain http only, not {upstream_url!r}")
        self.name = name
        self.upstream: Tuple[str, int] = (parts.hostname, parts.port or 80)
        self.upstream_url = upstream_url
        self.observer = observer
        self.throttle = _Throttle()
        self.throttle.rate = bandwidth
        self.frozen = threading.Event()
        self.faults: List[Fault] = []
        self._lock = threading.Lock()
        self._exchanges: List[Exchange] = []
        self._clients: Set[socket.socket] = set()
        self._upstreams: Set[http.client.HTTPConnection] = set()
        self._port = 0
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._outage: Optional[threading.Timer] = None

    # -- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: give this to the client instead of the server's base URL."""
        if not self._port:
            raise RuntimeError(f"proxy {self.name} was never started")
        return f"http://127.0.0.1:{self._port}"

    def url_for(self, upstream_url: str) -> str:
        """A URL of the server (such as the token endpoint's full URL) rewritten to go through the proxy."""
        parts = urlsplit(upstream_url)
        return self.url + parts.path + (f"?{parts.query}" if parts.query else "")

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen (on the port used before, after a ``down()``) and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-proxy", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    up = start

    def down(self) -> None:
        """Stop listening and cut every open connection, as if the server had died; ``up()`` comes back."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.gone.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            clients, upstreams = list(self._clients), list(self._upstreams)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for connection in upstreams:
            if connection.sock is not None:
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if thread is not None:
            thread.join(timeout=5)

    def outage(self, seconds: float) -> threading.Timer:
        """``down()`` now and ``up()`` again ``seconds`` later, by itself (the server restarts)."""
        self.down()
        timer = threading.Timer(seconds, self._end_outage)
        timer.daemon = True
        with self._lock:
            self._outage = timer
        timer.start()
        return timer

    def _end_outage(self) -> None:
        with self._lock:
            if self._outage is None:
                return  # stop() came first: stay down
            self._outage = None
        self.up()

    def never_answer(self) -> Fault:
        """From now on accept every connection and read every request, but never answer (until ``stop()``)."""
        fault = Fault(action="hang")
        with self._lock:
            self.faults.insert(0, fault)
        return fault

    def stop(self) -> None:
        """Stop for good (the same as ``down()``, and thaws first so nothing waits on a frozen proxy)."""
        with self._lock:
            outage, self._outage = self._outage, None
        if outage is not None:
            outage.cancel()
        self.frozen.clear()
        self.down()

    def freeze(self) -> None:
        """Keep connections open but move no more bytes: the server hangs (``thaw()`` undoes it)."""
        self.frozen.set()

    def thaw(self) -> None:
        """Move bytes again after ``freeze()``."""
        self.frozen.clear()

    @property
    def running(self) -> bool:
        """True while the proxy listens."""
        return self._server is not None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and the record -------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        """Add a fault (checked after the ones added earlier); returns it, to read ``fired`` later."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault and forget the record."""
        with self._lock:
            self.faults.clear()
            self._exchanges.clear()

    @property
    def exchanges(self) -> List[Exchange]:
        """Every exchange so far, in order of arrival."""
        with self._lock:
            return list(self._exchanges)

    def count(self, kind: Optional[str] = None, method: Optional[str] = None, path: str = "") -> int:
        """How many requests of that kind (or method and path regex) arrived."""
        return sum(
            1
            for e in self.exchanges
            if (kind is None or e.kind == kind)
            and (method is None or e.method == method)
            and re.search(path, e.path) is not None
        )

    def kinds(self) -> Counter:
        """How many requests of each kind arrived."""
        return Counter(e.kind for e in self.exchanges)

    @property
    def faults_fired(self) -> int:
        """How many requests a fault answered (or dropped, hung or delayed)."""
        with self._lock:
            return sum(f.fired for f in self.faults)

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until no exchange is in flight (a killed client's last requests have run out); True if so."""
        ends = time.monotonic() + timeout
        while any(not e.ended for e in self.exchanges):
            if time.monotonic() > ends:
                return False
            time.sleep(0.01)
        return True

    def body_bytes(self, path: str = "") -> int:
        """Request body bytes relayed so far (in-flight requests included) for paths matching the regex."""
        return sum(e.body_bytes for e in self.exchanges if re.search(path, e.path) is not None)

    @property
    def bytes_sent(self) -> int:
        """Body bytes of every PUT and POST so far: what a client uploaded ("uploaded nothing" is 0)."""
        return sum(e.body_bytes for e in self.exchanges if e.method in WRITE_METHODS)

    def writes(self) -> List[Exchange]:
        """The exchanges that change something on the server (PUT, POST, PATCH, DELETE)."""
        return [e for e in self.exchanges if e.method in WRITE_METHODS or e.method == "DELETE"]

    def reset(self) -> None:
        """Forget the record but keep the faults: to measure one run at a time."""
        with self._lock:
            self._exchanges.clear()

    # -- used by the handler ---------------------------------------------------------

    def _begin(self, method: str, path: str) -> Exchange:
        exchange = Exchange(self.name, method, path, time.monotonic())
        with self._lock:
            self._exchanges.append(exchange)
        return exchange

    def _pick(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path) and fault.take(method, path):
                    return fault
        return None

    def _observe(self, stage: str, exchange: Exchange) -> Optional[str]:
        observer = self.observer
        return observer(ProxyEvent(stage, exchange)) if observer is not None else None

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._clients.add(sock)
            else:
                self._clients.discard(sock)

    def _track_upstream(self, connection: http.client.HTTPConnection, add: bool) -> None:
        with self._lock:
            if add:
                self._upstreams.add(connection)
            else:
                self._upstreams.discard(connection)
