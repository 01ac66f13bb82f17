"""Units and defaults shared by the S3 client, the upload engine and the option table, stated once.

It imports nothing, so the option table (and the job-pod entries that read it)
can state these defaults without loading boto3.
"""

from __future__ import annotations

MIB = 1024 * 1024

#: Multipart part size and parallel requests, measured on the benchmark machine (BENCHMARKS.md).
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_CONCURRENCY = 8
#: botocore's checksum mode: ``when_required`` suits Ceph RGW (boto3 1.36+ otherwise adds CRC32 to every upload).
DEFAULT_CHECKSUM_MODE = "when_required"
DEFAULT_ADDRESSING_STYLE = "path"
