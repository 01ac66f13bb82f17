"""A small package-repository server for the local stack: answers for ``<repo>/repodata/repomd.xml``.

The wait step of an image-build job polls its recipe's repositories; this
server stands in for them on 127.0.0.1. Each configured repository path can
answer 200 at once, answer 404, or start answering only after a number of
requests (a repository that comes up while the job waits)::

    with RepoServer() as repos:
        url = repos.add("sles/15", available_after=2)  # 404 twice, then 200
        ...
        assert repos.requests("sles/15") == 3

A repository can also redirect (``add(path, redirect_to=URL)``: 302 to the same
file under ``URL``), and the server can speak HTTPS (``ssl_context``), so the
tests can see where the job's token goes. Requests carrying a bearer token are
counted in ``tokens_seen`` and per repository in ``tokens(path)`` (the token
itself is not kept).
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Optional, Tuple

from ims_python_helper.local.token_server import LoopbackHTTPServer

REPOMD = b'<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo"/>\n'


class _Repo:
    def __init__(self, available_after: Optional[int], redirect_to: Optional[str] = None) -> None:
        #: Requests answered 404 before the repository is up (None: never up).
        self.available_after = available_after
        #: Base URL this repository redirects to (302), if any.
        self.redirect_to = redirect_to
        self.requests = 0
        #: Requests that carried a bearer token.
        self.tokens = 0


class _RepoHandler(BaseHTTPRequestHandler):
    server_version = "ims-local-repo"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the counts instead."""

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        app: RepoServer = self.server.app  # type: ignore[attr-defined]
        status, location = app.hit(self.path.split("?", 1)[0], self.headers.get("Authorization", ""))
        payload = REPOMD if status == 200 else b"not found\n"
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/xml" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)


class RepoServer:
    """Serves ``repodata/repomd.xml`` for the repository paths it is given, on loopback only."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the repository server listens on loopback only")
        self._http = LoopbackHTTPServer(_RepoHandler, self, host, port, ssl_context, name="repo")
        self._lock = threading.Lock()
        self._repos: Dict[str, _Repo] = {}
        #: Requests that carried a bearer token.
        self.tokens_seen = 0

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self._http.base_url

    def start(self) -> RepoServer:
        """Start serving in a daemon thread."""
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        self._http.stop()

    def __enter__(self) -> RepoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, path: str, available_after: Optional[int] = 0, redirect_to: Optional[str] = None) -> str:
        """Serve a repository at ``path``: 200 after ``available_after`` 404s (None: 404 for ever). Returns its URL.

        With ``redirect_to`` (a repository's URL) it answers 302 to the same file there instead.
        """
        key = path.strip("/")
        with self._lock:
            self._repos[key] = _Repo(available_after, redirect_to)
        return f"{self.url}/{key}"

    def set_available(self, path: str, available: bool = True) -> None:
        """Make a repository answer 200 (or 404) from now on."""
        with self._lock:
            self._repos[path.strip("/")].available_after = 0 if available else None

    def requests(self, path: str) -> int:
        """How many requests the repository's ``repomd.xml`` has had."""
        with self._lock:
            return self._repos[path.strip("/")].requests

    def tokens(self, path: str) -> int:
        """How many requests for the repository's ``repomd.xml`` carried a bearer token."""
        with self._lock:
            return self._repos[path.strip("/")].tokens

    def hit(self, request_path: str, authorization: str) -> Tuple[int, Optional[str]]:
        """Count one request and decide its status (and where a redirect points)."""
        suffix = "/repodata/repomd.xml"
        with self._lock:
            bearer = authorization.lower().startswith("bearer ")
            self.tokens_seen += bearer
            if not request_path.endswith(suffix):
                return 404, None
            repo = self._repos.get(request_path[: -len(suffix)].strip("/"))
            if repo is None:
                return 404, None
            repo.requests += 1
            repo.tokens += bearer
            if repo.redirect_to:
                return 302, repo.redirect_to.rstrip("/") + suffix
            if repo.available_after is None or repo.requests <= repo.available_after:
                return 404, None
            return 200, None
