"""A request body that is a range of an open file, sent by the kernel from the page cache (``os.sendfile``).

The multipart loop (``publish.parts``) hashes each part as it reads it, a
piece at a time through one small buffer, and then hands botocore a
``FileRange`` of the file instead of the bytes. Over plain HTTP the S3
client's connections (``install``) send such a body with ``os.sendfile``:
the bytes go from the page cache to the socket without passing through the
client's memory, which saves the copy out of a part buffer and the buffer
itself (issue 20, BENCHMARKS.md). Anywhere else (TLS, a connection pool made
before ``install``, a platform without ``os.sendfile``) the body is read as
usual, a piece (``PIECE``) at a time, from the file at that moment: a part
being sent holds no more than that in memory, whatever the part size.

Either way the bytes sent are read from the file again after they were
hashed, so a file changed in between is caught: its part no longer matches
the Content-MD5 the server checks, and a file cut short fails here
(``FileRangeShort``).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Optional, Union

from botocore.awsrequest import AWSHTTPConnection, AWSHTTPConnectionPool
from urllib3.util.wait import wait_for_write

from ..errors import StorageError, UploadCancelled
from .defaults import PIECE

#: ``install`` does nothing where the kernel cannot send a file to a socket.
SENDFILE_WORKS = sys.platform.startswith("linux") and hasattr(os, "sendfile")


class FileRangeShort(StorageError):
    """The file ended before the range that was read and hashed from it: it was cut short meanwhile."""


class FileRange:
    """``size`` bytes of the open file ``fd`` from ``offset``: one part's request body.

    botocore seeks back to 0 for a retry. Once the publish is cancelled an
    attempt that has not begun sending raises ``UploadCancelled`` (``s3retry``
    does not retry an error raised by the body); one that has begun is left
    to finish.
    """

    def __init__(self, fd: int, offset: int, size: int, cancelled: threading.Event) -> None:
        self.fd = fd
        self.offset = offset
        self.size = size
        self._cancelled = cancelled
        self._at = 0
        #: Set by a ``SendfileConnection`` for its attempt: ``read`` then hands over the range itself, once.
        self.by_sendfile = False
        self._handed_over = False

    def read(self, amount: Optional[int] = -1) -> Union[bytes, FileRange]:
        """The next bytes of the range, or for a sendfile connection the range itself, once.

        At least ``amount`` bytes and at least a ``PIECE`` (the rest of the
        range if less is left; all of it for ``amount`` -1 or None): the HTTP
        layers ask for 8 or 16 KiB at a time and send whatever comes back.
        """
        self._check_not_cancelled()
        left = self.size - self._at
        if left <= 0 or self._handed_over:
            return b""
        if self.by_sendfile:
            # urllib3 2 passes what ``read`` returns to the connection's ``send``, which sends it from the file.
            self._handed_over = True
            return self
        if amount is not None and amount >= 0:
            left = min(left, max(amount, PIECE))
        data = os.pread(self.fd, left, self.offset + self._at)
        if len(data) < left:
            raise self._short(self._at + len(data))
        self._at += left
        return data

    def send_over(self, sock: Any) -> None:
        """Send the rest of the range to ``sock`` with ``os.sendfile``, within the socket's timeout."""
        self._check_not_cancelled()
        position, end = self.offset + self._at, self.offset + self.size
        while position < end:
            try:
                sent = os.sendfile(sock.fileno(), self.fd, position, end - position)
            except BlockingIOError:  # a socket with a timeout is non-blocking underneath
                if not wait_for_write(sock, sock.gettimeout()):
                    raise TimeoutError("timed out sending a part") from None
                continue
            if not sent:
                raise self._short(position - self.offset)
            position += sent
            self._at = position - self.offset

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` from the start (``whence`` 0) or the end (2): a new attempt, read unless marked again."""
        self.by_sendfile = self._handed_over = False
        self._at = offset if whence == 0 else self.size + offset
        return self._at

    def tell(self) -> int:
        """Position in the range."""
        return self._at

    def __len__(self) -> int:
        return self.size

    def _check_not_cancelled(self) -> None:
        if self._at == 0 and self._cancelled.is_set():  # an attempt that has not begun sending
            raise UploadCancelled("the upload was cancelled")

    def _short(self, got: int) -> FileRangeShort:
        return FileRangeShort(
            f"the file ended {got} bytes into a part of {self.size} bytes at offset {self.offset}: it was cut "
            "short while it was being published; publish it again once it no longer changes"
        )


class SendfileConnection(AWSHTTPConnection):
    """botocore's plain-HTTP connection, which sends a ``FileRange`` body with ``os.sendfile``.

    urllib3 1.26 gives ``send`` the body itself (through http.client), urllib3
    2 what the body's ``read`` returns, which is the range once ``request``
    has marked it. Every other body and every header goes the usual way.
    """

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Mark a ``FileRange`` body for this attempt, then make the request as botocore does."""
        if isinstance(body, FileRange):
            body.by_sendfile = True
        return super().request(method, url, body, headers, *args, **kwargs)

    def send(self, data: Any) -> None:
        """Send ``data``; a ``FileRange`` goes from the file to the socket."""
        if not isinstance(data, FileRange):
            return super().send(data)
        if self._response_received:  # botocore's rule: the server answered before the body, so it is not sent
            return None
        if self.sock is None:
            self.connect()
        data.send_over(self.sock)
        return None


class SendfileConnectionPool(AWSHTTPConnectionPool):
    """botocore's plain-HTTP pool, with ``SendfileConnection``."""

    ConnectionCls = SendfileConnection


def install(client: Any) -> bool:
    """Make ``client``'s plain-HTTP connections send ``FileRange`` bodies with ``os.sendfile``; True when done.

    Call it before the client's first request: a pool made before keeps
    botocore's connections (and the bodies are then read, which is as
    correct, only costlier). HTTPS is left alone: TLS must encrypt the bytes
    in the client anyway.
    """
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    pools = getattr(session, "_pool_classes_by_scheme", None)  # botocore's own table, shared with its managers
    if not SENDFILE_WORKS or not isinstance(pools, dict) or pools.get("http") is not AWSHTTPConnectionPool:
        return False
    pools["http"] = SendfileConnectionPool
    return True
