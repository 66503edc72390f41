"""The lock-free ring between PortAudio's audio thread and the event loop (see :mod:`realtime.sources.mic`)."""

from __future__ import annotations

import numpy as np

__all__ = ["CaptureRing"]


class CaptureRing:
    """Preallocated single-producer single-consumer ring of float32 frames.

    :meth:`put` (the audio thread) only advances ``written``, :meth:`take` (the event
    loop) only advances ``read``; each is published after its copy, so with the GIL
    neither side ever sees a half-copied block and neither needs a lock. A block that
    does not fit is refused whole (the producer never waits).
    """

    def __init__(self, capacity: int, channels: int) -> None:
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self.written = 0  # frames ever stored (producer only)
        self.read = 0  # frames ever taken (consumer only)

    @property
    def capacity(self) -> int:
        return self._buf.shape[0]

    @property
    def pending(self) -> int:
        return self.written - self.read

    def clear(self) -> None:
        """Forget everything (only while no producer runs)."""
        self.written = self.read = 0

    def put(self, block: np.ndarray) -> bool:
        """Copy ``block`` (frames, channels) in; False (nothing stored) if it does not fit."""
        n = block.shape[0]
        w = self.written
        cap = self._buf.shape[0]
        if n > cap - (w - self.read):
            return False
        i = w % cap
        k = min(n, cap - i)
        self._buf[i:i + k] = block[:k]
        if k < n:
            self._buf[:n - k] = block[k:]
        self.written = w + n
        return True

    def take(self) -> np.ndarray | None:
        """Everything stored since the last take, as a new array; None if nothing."""
        w = self.written
        r = self.read
        n = w - r
        if n == 0:
            return None
        cap = self._buf.shape[0]
        out = np.empty((n, self._buf.shape[1]), dtype=np.float32)
        i = r % cap
        k = min(n, cap - i)
        out[:k] = self._buf[i:i + k]
        if k < n:
            out[k:] = self._buf[:n - k]
        self.read = w
        return out
