"""What every local S3 engine (moto, Ceph RGW) offers to the stack."""

from __future__ import annotations

from typing import Protocol, Sequence

#: Buckets every local S3 engine creates at start-up.
DEFAULT_BUCKETS: Sequence[str] = ("boot-images", "ims")


class S3Backend(Protocol):
    """A running S3 server on loopback that the stack can start and stop."""

    #: Short engine name: ``"moto"`` or ``"ceph"``.
    name: str

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""

    @property
    def access_key(self) -> str:
        """Access key id of the S3 user the stack hands to clients."""

    @property
    def secret_key(self) -> str:
        """Secret key of that user."""

    def start(self) -> None:
        """Start the server, wait until it answers, and create ``DEFAULT_BUCKETS``."""

    def stop(self) -> None:
        """Stop every process the backend started; safe to call twice."""
