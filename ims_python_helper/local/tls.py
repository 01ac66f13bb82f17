"""HTTPS for the local stack: a test certificate authority and a TLS front for the S3 server.

    ca = LocalCA(data_dir / "tls")          # ca.pem (+ ca-key.pem, mode 0600), made once and reused
    context = ca.server_context()           # a server certificate for 127.0.0.1, localhost and ::1
    with TlsRelay("http://127.0.0.1:9000", context) as relay:
        ...                                 # clients use relay.endpoint (https) and trust ca.ca_path

The CA comes from ``trustme``: a throw-away authority that exists only for the
tests and ``local up --tls``, so the client's TLS paths (verification, the
right and the wrong CA, ``--cert``/``CA_CERT``, ``--s3-ssl-verify``) run for
real. The token endpoint and IMS take the context directly; the S3 engines
(moto, Ceph RGW) keep speaking plain HTTP behind ``TlsRelay``, which ends TLS
and passes the bytes on unchanged, so SigV4 signatures (which cover the Host
header the client sent) still verify.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, List, Optional, Set, Tuple
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: Names the server certificate is valid for: everything the stack listens on.
SERVER_NAMES = ("127.0.0.1", "localhost", "::1")
#: Seconds a client may take to finish the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a relayed connection may sit with a half-sent TLS record (or a stalled peer) before it is cut.
STALL_TIMEOUT = 120.0
_BUFFER = 256 * 1024


def _trustme() -> Any:
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "the local stack's TLS needs the trustme package (pip install trustme, or the [local] extra)"
        ) from None
    return trustme


class LocalCA:
    """A certificate authority for the local stack, kept in ``directory``.

    The CA is created on first use and loaded again afterwards, so a stack
    restarted with the same data directory is still trusted by clients holding
    ``ca_path``. The private key file is created with mode 0600.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca_path = self.directory / "ca.pem"
        self._key_path = self.directory / "ca-key.pem"
        self._ca = self._load_or_create()

    def _load_or_create(self) -> Any:
        trustme = _trustme()
        if self.ca_path.is_file() and self._key_path.is_file():
            return trustme.CA.from_pem(self.ca_path.read_bytes(), self._key_path.read_bytes())
        self.directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="ims-python-helper local stack")
        fd = os.open(str(self._key_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(ca.private_key_pem.bytes())
        ca.cert_pem.write_to_path(str(self.ca_path))
        return ca

    def server_context(self, names: Tuple[str, ...] = SERVER_NAMES) -> ssl.SSLContext:
        """A server-side SSL context with a fresh certificate for ``names``, signed by this CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca.issue_cert(*names).configure_cert(context)
        return context


def _host_port(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"{url!r} has no host")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class TlsRelay:
    """Accepts HTTPS on loopback and relays the decrypted bytes to a plain-HTTP server.

    A byte relay, not an HTTP proxy: requests, keep-alive, ``Expect: 100-continue``
    and the signed ``Host`` header pass through untouched. Each connection is
    served by one thread that moves bytes both ways (an SSL socket must not be
    read and written from two threads at once).
    """

    def __init__(self, upstream: str, ssl_context: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0) -> None:
        self._upstream = _host_port(upstream)
        self._context = ssl_context
        self._host = host
        self._port = port
        self._listener: Optional[socket.socket] = None
        self._accepting: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: Set[socket.socket] = set()
        self._threads: List[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        """``https://HOST:PORT`` of the relay."""
        if self._listener is None:
            raise RuntimeError("the TLS relay is not running")
        host, port = self._listener.getsockname()[:2]
        return f"https://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        """Listen and start accepting in a daemon thread."""
        if self._listener is not None:
            return
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._port))
        listener.listen(64)
        # accept() wakes up this often to notice stop().
        listener.settimeout(0.1)
        self._stopping.clear()
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept_loop, name="tls-relay", daemon=True)
        self._accepting.start()

    def stop(self) -> None:
        """Stop accepting, cut relayed connections and wait for their threads; safe to call twice."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        if self._accepting is not None:
            self._accepting.join(timeout=5)
        listener.close()
        with self._lock:
            sockets, threads = list(self._open), list(self._threads)
        for sock in sockets:
            # Only the plain upstream sockets are shut down from here (an SSL socket belongs to its thread);
            # its relay thread sees the end and closes the TLS side itself.
            if not isinstance(sock, ssl.SSLSocket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in threads:
            thread.join(timeout=2)

    def __enter__(self) -> TlsRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, _address = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), name="tls-relay-conn", daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        tls: Optional[ssl.SSLSocket] = None
        try:
            client.settimeout(HANDSHAKE_TIMEOUT)
            tls = self._context.wrap_socket(client, server_side=True)
            tls.settimeout(STALL_TIMEOUT)
            upstream = socket.create_connection(self._upstream, timeout=10)
            upstream.settimeout(STALL_TIMEOUT)
            with self._lock:
                self._open.update((tls, upstream))
            self._pump(tls, upstream)
        except (OSError, ValueError) as error:
            # A client that does not trust the CA ends the handshake: normal in the TLS tests.
            log.debug("TLS relay connection ended: %s", error)
        finally:
            for sock in (upstream, tls, client):
                if sock is None:
                    continue
                with self._lock:
                    self._open.discard(sock)
                try:
                    sock.close()
                except OSError:
                    pass

    def _pump(self, tls: ssl.SSLSocket, upstream: socket.socket) -> None:
        while not self._stopping.is_set():
            # Decrypted bytes may already wait inside the SSL object, where select() cannot see them.
            if tls.pending():
                ready: List[Any] = [tls]
            else:
                ready, _, _ = select.select([tls, upstream], [], [], 0.5)
            for source in ready:
                target = upstream if source is tls else tls
                data = source.recv(_BUFFER)
                if not data:
                    return
                target.sendall(data)
