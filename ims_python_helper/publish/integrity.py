"""What makes every uploaded byte checked: the hashes taken while reading, and the per-part Content-MD5.

The server checks every part: each ``UploadPart`` carries the md5 of its body
as ``Content-MD5``, which SigV4 signs with the other headers, and RGW, moto
and AWS answer ``BadDigest`` when the bytes they received differ. That md5 is
also what the end-to-end check needs: a multipart object's ETag is the md5 of
its parts' md5s followed by "-N", so the client knows the ETag the server must
give before it asks. Why Content-MD5 rather than a SHA-256-signed body is in
BENCHMARKS.md ("Checking every byte over plain HTTP").

The multipart loop (``parts``) reads a file one part at a time, in order, in
one thread (``read_part``), a piece at a time through one small buffer that
stays in the CPU's cache: each piece goes into the file's md5 and the part's
md5 while it is there, so the ``n``-th part read is part ``n`` and its md5 is
known when it is handed on. The part itself is then sent from the file
(``clients.sendfile.FileRange``), never held in memory.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Executor
from typing import IO, Dict, List, Optional, Union

from ..errors import VerificationError


class HashingReader:
    """A read-only stream over a file that hashes every byte it hands out.

    It deliberately has no ``seek``: it is read sequentially in one
    thread, which keeps the hash in file order and memory bounded.
    ``read_part`` reads the next part and keeps its md5 as well, which gives
    the part md5s and the ETag S3 computes for the multipart upload
    (``multipart_etag``).
    """

    def __init__(self, handle: IO[bytes], sha256: bool = False) -> None:
        self._handle = handle
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if sha256 else None
        self._lock = threading.Lock()
        self._part_sizes: List[int] = []
        self._digests: Dict[int, bytes] = {}
        self.bytes_read = 0
        #: The ETag the server gave in its CompleteMultipartUpload answer ('' until then).
        self.completed_etag = ""

    def read(self, amount: int = -1) -> bytes:
        """Read up to ``amount`` bytes (all when negative) and add them to the hashes."""
        data = self._handle.read(amount)
        self._add(data)
        return data

    def read_part(self, size: int, piece: memoryview, beside: Optional[Executor] = None) -> int:
        """Read the next part (``size`` bytes, less only at the file's end) through ``piece``, hashing it; its size.

        Each piece goes into the file's hashes and the part's md5 at once, while
        it is in the cache; with ``beside`` (a one-thread executor) the part's
        md5 is taken there, on another CPU, while this thread takes the file's.
        An empty read (the end of the file) is no part.
        """
        part_md5 = hashlib.md5()
        done = 0
        while done < size:
            got = self._handle.readinto(piece[: min(len(piece), size - done)])  # type: ignore[attr-defined]
            if not got:
                break
            data = piece[:got]
            taken = beside.submit(part_md5.update, data) if beside is not None else None
            self._add(data)
            if taken is None:
                part_md5.update(data)
            else:
                taken.result()  # before the piece is read over
            done += got
        if done:
            with self._lock:
                self._part_sizes.append(done)
                self._digests[len(self._part_sizes)] = part_md5.digest()
        return done

    def read_through(self, piece: memoryview) -> int:
        """Read the rest of the file through ``piece`` into the file's hashes (a file sent whole); how many bytes."""
        done = 0
        while True:
            got = self._handle.readinto(piece)  # type: ignore[attr-defined]
            if not got:
                return done
            self._add(piece[:got])
            done += got

    def _add(self, data: Union[bytes, memoryview]) -> None:
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self.bytes_read += len(data)

    def part_md5(self, number: int, size: Optional[int] = None) -> bytes:
        """The md5 of part ``number`` (from 1) as read; ``size`` (the body about to be sent) must match it."""
        with self._lock:
            if not 1 <= number <= len(self._part_sizes):
                raise VerificationError(f"part {number} was never read ({len(self._part_sizes)} parts read)")
            if size is not None and size != self._part_sizes[number - 1]:
                raise VerificationError(
                    f"part {number} is {size} bytes, but {self._part_sizes[number - 1]} were read for it"
                )
            return self._digests[number]

    @property
    def parts(self) -> int:
        """How many parts (non-empty reads) were handed out."""
        return len(self._part_sizes)

    @property
    def multipart_etag(self) -> str:
        """The ETag S3 gives a multipart upload of what was read: md5 of the part md5s, "-", part count."""
        digests = [self.part_md5(number) for number in range(1, self.parts + 1)]
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"

    def fileno(self) -> int:
        """The file's descriptor: what the parts are sent from (``clients.sendfile.FileRange``)."""
        return self._handle.fileno()

    def readable(self) -> bool:
        """Always True: this is an input stream."""
        return True

    @property
    def md5(self) -> str:
        """Hex md5 of what has been read so far."""
        return self._md5.hexdigest()

    @property
    def md5_digest(self) -> bytes:
        """The md5 of what has been read so far, as bytes (a Content-MD5)."""
        return self._md5.digest()

    @property
    def sha256(self) -> Optional[str]:
        """Hex SHA-256 of what has been read so far, when asked for."""
        return self._sha256.hexdigest() if self._sha256 is not None else None
