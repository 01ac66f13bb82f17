"""Stopping the uploads in flight after a failure or a signal: cancel them, wait a bounded time, report the rest.

``transfer.ArtifactUploader`` calls ``stop_transfers`` when one artifact's
upload fails or SIGINT/SIGTERM arrives (``cmdline.signals`` raises
``Interrupted`` in the main thread): the other uploads are cancelled and
s3transfer aborts their multipart uploads, within the time ``Interrupted``
allows after a signal.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Sequence, Tuple

from ..errors import Interrupted

LOGGER = logging.getLogger(__name__)


def stop_transfers(
    manager: Any, transfers: Sequence[Any], threads: Sequence[Any], err: BaseException
) -> Tuple[bool, BaseException]:
    """Cancel every s3transfer transfer of ``manager`` after ``err``; returns (some left running, error to raise).

    After any failure but a signal this waits for them, and for s3transfer's
    aborts of their multipart uploads; a signal during that wait ends it, and
    the ``Interrupted`` is then the error to raise. After a signal it waits at
    most until ``Interrupted.WIND_DOWN_SECONDS`` after it for the artifact
    ``threads``; uploads still waiting then (on a server that does not answer,
    until their read timeout) are left to the process's exit.
    """
    if isinstance(err, Interrupted) and not _wound_down(transfers, threads, err):
        return True, err
    LOGGER.info("stopping the uploads in flight after: %s", err)
    # Cancels what is queued or running and waits for it, in a thread of its own so that a signal
    # still reaches this one. (TransferManager.shutdown(cancel=True) fails in s3transfer up to 0.19
    # at least: boto/s3transfer#143.)
    closing = threading.Thread(
        target=manager.__exit__, args=(type(err), err, err.__traceback__), name="transfers-stop", daemon=True
    )
    try:
        closing.start()
        closing.join()
    except Interrupted as late:
        LOGGER.warning("%s while the uploads were stopping after: %s", late.signal_name, err)
        return True, late
    return False, err


def _wound_down(transfers: Sequence[Any], threads: Sequence[Any], interrupted: Interrupted) -> bool:
    """Cancel the transfers and wait for the artifact threads until ``WIND_DOWN_SECONDS`` after the signal."""
    for transfer in list(transfers):
        transfer.cancel()
    left = interrupted.at + Interrupted.WIND_DOWN_SECONDS - time.monotonic()
    _, running = concurrent.futures.wait(list(threads), timeout=max(0.0, left))
    if running:
        LOGGER.warning("%d upload(s) still waiting on S3 after the signal; not waiting for them", len(running))
    return not running
