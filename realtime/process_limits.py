"""What a server that runs for days needs from its process: memory that goes back to the system
when streams end (:func:`pin_mmap_threshold`), and a quiet, self-healing answer to running out
of file descriptors (:class:`AcceptErrors`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
from typing import Any

__all__ = ["AcceptErrors", "pin_mmap_threshold"]

log = logging.getLogger(__name__)


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """glibc: serve every allocation of ``nbytes`` or more with its own mmap, for good.

    By default glibc raises that threshold each time such a block is freed, after which each
    stream's ring buffer and the batch buffers (256 KB and up) come from the heap: the heap's
    high-water mark then stays resident (measured: +60 MB per round of 200 streams, never given
    back; 50 streams ended: 70 MB kept against 45 MB pinned, tools/window_path.py) and ``calloc``
    touches pages it would otherwise leave unmapped (an idle stream cost ~300 KB instead of
    ~25 KB). Pinned, freed blocks go back to the system at once; since windows are views of the
    ring and batches reuse pooled buffers (realtime.batch_rows) the cost is a few mmap calls per
    stream, not per window. Not done when ``MALLOC_MMAP_THRESHOLD_`` is set (the operator decided)
    or outside glibc. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends: no mallopt
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes))


class AcceptErrors:
    """The loop's exception handler, except for ``accept()`` failing for lack of descriptors.

    asyncio logs that with a traceback up to ``backlog`` times a tick and retries every second:
    ~90,000 lines in 15 s at ``ulimit -n 32``. Here it is one line per ``interval_s``, with the
    count; serving resumes by itself when descriptors are freed.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.count = 0
        self._last = -float("inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and context.get("message", "").startswith("socket.accept() out of")):
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            log.error("cannot accept connections: %s (%d failed accept() since the last report); retrying "
                      "every second; raise the open-file limit (ulimit -n) or lower --max-connections",
                      exc.strerror or exc, self.count)
            self.count = 0
