"""Reading an answer's body beneath requests and urllib3: the one place that touches their private parts.

A ranged download reads each answer straight into a buffer of its own with
http.client's ``readinto`` (one copy, kernel to buffer); urllib3's own
``read``/``readinto`` copy every byte two more times. urllib3 has no public
way to reach the ``http.client.HTTPResponse`` beneath it, so this module
reads two private attributes of ``urllib3.response.HTTPResponse``: ``_fp``
(the http.client answer) and ``_decoder`` (set when a Content-Encoding is
being undone). Both are the same in urllib3 1.26 and 2.x (the py39 cell and
the platform pins, urllib3 2.4.0); tests/toolkit/test_http_body.py checks,
in every cell of the client matrix, that the fast path is still taken and
the connection still goes back to the pool. When either attribute is
missing, the public ``readinto`` (slower, same bytes) is used instead.
"""

from __future__ import annotations

import http.client
import socket
from typing import Callable, Optional

import requests

from .attempts import RangeFailure


def _http_client_answer(response: requests.Response) -> Optional[http.client.HTTPResponse]:
    """The http.client answer beneath urllib3's, when urllib3 still keeps it where it used to."""
    inner = getattr(response.raw, "_fp", None)
    return inner if isinstance(inner, http.client.HTTPResponse) else None


def body_reader(response: requests.Response) -> Callable[[memoryview], int]:
    """A ``readinto`` for the answer's body that fills the caller's buffer straight from the socket.

    A cut-off answer still hands over the bytes that came before the cut (a
    short read, then 0), so a resumed range asks for the rest only.
    """
    raw = response.raw
    inner = _http_client_answer(response)
    if inner is not None and not getattr(raw, "_decoder", None):
        return inner.readinto
    return raw.readinto


def read_some(readinto: Callable[[memoryview], int], view: memoryview) -> int:
    """Bytes read into ``view`` (0 at the end of the answer); a broken read becomes a ``RangeFailure``."""
    try:
        return readinto(view) or 0
    except socket.timeout:
        raise RangeFailure("timed out waiting for an answer") from None
    except (OSError, http.client.HTTPException, ValueError):
        # ValueError: http.client's buffer was closed under the read (the connection was dropped).
        raise RangeFailure("the answer was cut off before its end") from None


def release(response: requests.Response) -> None:
    """Give the connection back for the next range when its answer was read to the end; else close it.

    The body was read beneath urllib3, which therefore cannot tell; http.client
    closes its side once the last byte announced is read. Reusing the
    connection spares a TCP (and TLS) handshake per part.
    """
    inner = _http_client_answer(response)
    if inner is not None and inner.isclosed():
        response.raw.release_conn()
    else:
        response.close()
