"""Units and defaults shared by the S3 client, the upload engine and the option table, stated once.

It imports nothing, so the option table (and the job-pod entries that read it)
can state these defaults without loading boto3.
"""

from __future__ import annotations

MIB = 1024 * 1024

#: Multipart part size and parallel requests, measured on the benchmark machine (BENCHMARKS.md). The parts
#: go from the file, by ``sendfile`` over plain HTTP and a piece at a time over TLS (``clients.sendfile``),
#: so their size does not set the memory; each part costs botocore about 1.7 ms of CPU, and 64 MiB parts
#: take a quarter of the requests of 16 MiB (issue 20). 4 at once keep RGW as busy as 8 did.
DEFAULT_PART_SIZE = 64 * MIB
DEFAULT_CONCURRENCY = 4
#: How much of a file the client holds at a time while it hashes a part, or reads one to send over TLS:
#: small enough to stay in the cache while both md5s take it.
PIECE = MIB
#: botocore's checksum mode: ``when_required`` suits Ceph RGW (boto3 1.36+ otherwise adds CRC32 to every upload).
DEFAULT_CHECKSUM_MODE = "when_required"
DEFAULT_ADDRESSING_STYLE = "path"
