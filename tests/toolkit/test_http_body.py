"""The one place that reads beneath urllib3 (``pod/http_body.py``) still finds what it reads, under every pin set.

The client matrix runs this in each of its cells (urllib3 1.26 on py39, the
platform's urllib3 2.4.0, the newest): a urllib3 that moved its private
``_fp`` would make downloads silently slower (two more copies per byte) and
open a new connection per range; these tests fail instead.
"""

from __future__ import annotations

import http.client
import random

import requests
import urllib3

from ims_python_helper.pod.http_body import body_reader, read_some, release
from tests.toolkit.rangeserver import RangeServer

BLOB = random.Random(11).randbytes(300_000)


def read_all(response: requests.Response) -> bytes:
    readinto = body_reader(response)
    buffer = memoryview(bytearray(64 * 1024))
    received = bytearray()
    while True:
        count = read_some(readinto, buffer)
        if not count:
            return bytes(received)
        received += buffer[:count]


def test_the_body_is_read_straight_from_http_client():
    with RangeServer(BLOB) as server, requests.Session() as session:
        response = session.get(server.url, headers={"Range": "bytes=0-99999"}, stream=True, timeout=10)
        readinto = body_reader(response)

        assert isinstance(getattr(readinto, "__self__", None), http.client.HTTPResponse), (
            f"urllib3 {urllib3.__version__} no longer keeps http.client's answer in _fp: downloads take the slow path"
        )
        assert read_all(response) == BLOB[:100_000]
        release(response)


def test_an_answer_read_to_its_end_gives_its_connection_back_for_the_next_range():
    with RangeServer(BLOB) as server, requests.Session() as session:
        for start in range(0, len(BLOB), 100_000):
            end = min(start + 100_000, len(BLOB)) - 1
            response = session.get(server.url, headers={"Range": f"bytes={start}-{end}"}, stream=True, timeout=10)
            assert read_all(response) == BLOB[start : end + 1]
            release(response)

    assert len(server.served) == 3
    assert len(server.clients) == 1, "each range opened a connection of its own: release() no longer reuses them"


def test_an_answer_not_read_to_its_end_is_closed_not_reused():
    with RangeServer(BLOB) as server, requests.Session() as session:
        response = session.get(server.url, stream=True, timeout=10)
        assert read_some(body_reader(response), memoryview(bytearray(1000))) == 1000
        release(response)
        second = session.get(server.url, headers={"Range": "bytes=0-9"}, stream=True, timeout=10)
        assert read_all(second) == BLOB[:10]
        release(second)

    assert len(server.clients) == 2
