"""Stopping the uploads in flight after a failure or a signal: cancel them, wait a bounded time, report the rest.

``transfer.ArtifactUploader`` calls ``stop_transfers`` when one artifact's
upload fails or SIGINT/SIGTERM arrives (``cmdline.signals`` raises
``Interrupted`` in the main thread): the other uploads are cancelled and each
artifact's thread aborts its own multipart upload once its parts in flight
have ended (``parts.PartUploads``), within the time ``Interrupted`` allows
after a signal.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any, Callable, Sequence, Tuple

from ..errors import Interrupted

LOGGER = logging.getLogger(__name__)


def stop_transfers(
    cancel: Callable[[], None], threads: Sequence[Any], err: BaseException
) -> Tuple[bool, BaseException]:
    """``cancel`` every upload after ``err`` and wait for the artifact ``threads``; (some left running, error to raise).

    After any failure but a signal this waits for all of them, and so for the
    aborts of their multipart uploads; a signal during that wait ends it, and
    the ``Interrupted`` is then the error to raise. After a signal it waits at
    most until ``Interrupted.WIND_DOWN_SECONDS`` after it; uploads still
    waiting then (on a server that does not answer, until their read timeout)
    are left to the process's exit.
    """
    cancel()
    if isinstance(err, Interrupted):
        left = err.at + Interrupted.WIND_DOWN_SECONDS - time.monotonic()
        _, running = concurrent.futures.wait(list(threads), timeout=max(0.0, left))
        if running:
            LOGGER.warning("%d upload(s) still waiting on S3 after the signal; not waiting for them", len(running))
        return bool(running), err
    LOGGER.info("stopping the uploads in flight after: %s", err)
    try:
        concurrent.futures.wait(list(threads))
    except Interrupted as late:
        LOGGER.warning("%s while the uploads were stopping after: %s", late.signal_name, err)
        return True, late
    return False, err
