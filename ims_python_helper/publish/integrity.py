"""What makes every uploaded byte checked: the hashes taken while reading, and the per-part Content-MD5.

The server checks every part: each ``UploadPart`` carries the md5 of its body
as ``Content-MD5``, which SigV4 signs with the other headers, and RGW, moto
and AWS answer ``BadDigest`` when the bytes they received differ. That md5 is
also what the end-to-end check needs: a multipart object's ETag is the md5 of
its parts' md5s followed by "-N", so the client knows the ETag the server must
give before it asks. Why Content-MD5 rather than a SHA-256-signed body is in
BENCHMARKS.md ("Checking every byte over plain HTTP").

s3transfer reads a stream that cannot seek one part at a time, in order, in
one thread, one ``read`` call per part (s3transfer 0.11.3 and 0.19.3 alike),
so the ``n``-th non-empty read is part ``n``. The reader keeps each part's
bytes (the very object s3transfer sends, no copy) until the part is about to
be sent; the md5 of the part is then taken in the sending thread, so the part
md5s are spread over the sender threads while the reading thread takes the
whole file's md5.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import IO, Any, Dict, List, Optional, Tuple

from ..errors import VerificationError


class HashingReader:
    """A read-only stream over a file that hashes every byte it hands out.

    It deliberately has no ``seek``: s3transfer then reads it sequentially in one
    thread, which keeps the hash in file order and memory bounded. With
    ``parts`` every read is kept as one part until ``part_md5`` hashes it,
    which gives the part md5s and the ETag S3 computes for the multipart upload
    (``multipart_etag``).
    """

    def __init__(self, handle: IO[bytes], sha256: bool = False, parts: bool = False) -> None:
        self._handle = handle
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if sha256 else None
        self._parts = parts
        self._lock = threading.Lock()
        self._part_sizes: List[int] = []
        self._unhashed: Dict[int, bytes] = {}
        self._digests: Dict[int, bytes] = {}
        self.bytes_read = 0
        #: The ETag the server gave in its CompleteMultipartUpload answer ('' until then).
        self.completed_etag = ""

    def read(self, amount: int = -1) -> bytes:
        """Read up to ``amount`` bytes (all when negative) and add them to the hashes."""
        data = self._handle.read(amount)
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._parts and data:
            with self._lock:
                self._part_sizes.append(len(data))
                self._unhashed[len(self._part_sizes)] = data
        self.bytes_read += len(data)
        return data

    def part_md5(self, number: int, size: Optional[int] = None) -> bytes:
        """The md5 of part ``number`` (from 1) as read; ``size`` (the body about to be sent) must match it."""
        with self._lock:
            if not 1 <= number <= len(self._part_sizes):
                raise VerificationError(f"part {number} was never read ({len(self._part_sizes)} parts read)")
            if size is not None and size != self._part_sizes[number - 1]:
                raise VerificationError(
                    f"part {number} is {size} bytes, but {self._part_sizes[number - 1]} were read for it"
                )
            digest = self._digests.get(number)
            data = None if digest is not None else self._unhashed.pop(number)
        if digest is None:
            # Outside the lock: parts are hashed side by side in the sender threads (md5 releases the GIL).
            digest = hashlib.md5(data).digest()  # type: ignore[arg-type]
            with self._lock:
                self._digests[number] = digest
        return digest

    @property
    def parts(self) -> int:
        """How many parts (non-empty reads) were handed out."""
        return len(self._part_sizes)

    @property
    def multipart_etag(self) -> str:
        """The ETag S3 gives a multipart upload of what was read: md5 of the part md5s, "-", part count."""
        digests = [self.part_md5(number) for number in range(1, self.parts + 1)]
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"

    def readable(self) -> bool:
        """Always True: this is an input stream."""
        return True

    @property
    def md5(self) -> str:
        """Hex md5 of what has been read so far."""
        return self._md5.hexdigest()

    @property
    def sha256(self) -> Optional[str]:
        """Hex SHA-256 of what has been read so far, when asked for."""
        return self._sha256.hexdigest() if self._sha256 is not None else None


class PartChecksums:
    """botocore hooks that give every part its Content-MD5 and note each CompleteMultipartUpload's ETag.

    ``watch`` names the reader of each object being uploaded; the hooks find it
    by bucket and key. Registered on a client for the length of a transfer.
    """

    _EVENTS = (
        ("before-parameter-build.s3.UploadPart", "_add_content_md5"),
        ("before-parameter-build.s3.CompleteMultipartUpload", "_mark_object"),
        ("after-call.s3.CompleteMultipartUpload", "_note_etag"),
    )

    def __init__(self) -> None:
        self._readers: Dict[Tuple[str, str], HashingReader] = {}
        self._lock = threading.Lock()

    def watch(self, bucket: str, key: str, reader: HashingReader) -> None:
        """Give the parts of ``key`` the md5s ``reader`` takes."""
        with self._lock:
            self._readers[(bucket, key)] = reader

    def _reader(self, params: Dict[str, Any]) -> Optional[HashingReader]:
        with self._lock:
            return self._readers.get((str(params.get("Bucket")), str(params.get("Key"))))

    def register(self, client: Any) -> None:
        """Attach the hooks to ``client``."""
        for event, name in self._EVENTS:
            client.meta.events.register(event, getattr(self, name))

    def unregister(self, client: Any) -> None:
        """Detach the hooks from ``client`` and let go of the readers (and any part bytes they still hold)."""
        for event, name in self._EVENTS:
            client.meta.events.unregister(event, getattr(self, name))
        with self._lock:
            self._readers.clear()

    def _add_content_md5(self, params: Dict[str, Any], **kwargs: Any) -> None:
        reader = self._reader(params)
        if reader is None or params.get("ContentMD5"):
            return
        body = params.get("Body")
        size = len(body) if body is not None and hasattr(body, "__len__") else None
        digest = reader.part_md5(int(params["PartNumber"]), size)
        params["ContentMD5"] = base64.b64encode(digest).decode("ascii")

    def _mark_object(self, params: Dict[str, Any], context: Dict[str, Any], **kwargs: Any) -> None:
        context["ims_object"] = (str(params.get("Bucket")), str(params.get("Key")))

    def _note_etag(self, http_response: Any, parsed: Dict[str, Any], context: Dict[str, Any], **kwargs: Any) -> None:
        with self._lock:
            reader = self._readers.get(context.get("ims_object", ("", "")))
        if reader is not None and getattr(http_response, "status_code", 500) < 300 and parsed.get("ETag"):
            reader.completed_etag = str(parsed["ETag"]).strip('"')
