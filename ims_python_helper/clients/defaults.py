"""Units and defaults shared by the S3 client, the upload engine and the option table, stated once.

It imports nothing, so the option table (and the job-pod entries that read it)
can state these defaults without loading boto3.
"""

from __future__ import annotations

MIB = 1024 * 1024

#: Multipart part size and parallel requests, measured on the benchmark machine (BENCHMARKS.md): 16 MiB
#: parts halve botocore's per-request CPU against 8 MiB, and 4 of them keep as many bytes on the wire
#: as 8 x 8 MiB did. Over plain HTTP the parts go from the file (``clients.sendfile``); over TLS the
#: parts being sent and one small file are in memory, at most 16 x (4 + 2) = 96 MiB.
DEFAULT_PART_SIZE = 16 * MIB
DEFAULT_CONCURRENCY = 4
#: botocore's checksum mode: ``when_required`` suits Ceph RGW (boto3 1.36+ otherwise adds CRC32 to every upload).
DEFAULT_CHECKSUM_MODE = "when_required"
DEFAULT_ADDRESSING_STYLE = "path"
