"""Reusable window arrays: one stream's windows without an allocation per window.

Each window handed to the batcher needs samples of its own (it crosses to the worker thread, and
alert clips and display observers may keep it after scoring). A fresh 256-KB array per window
made the allocator churn: glibc then grows its heap and keeps the high-water mark resident.
Here an array goes back into use only when nothing but the pool refers to it (CPython reference
count): a window still queued, being scored, saved as an alert clip or shown on a dashboard keeps
its array, views of it included (a view holds its base), so reuse can never overwrite samples
someone holds.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["WindowPool"]

# References to an idle pooled array: the pool's list slot and getrefcount's own argument.
_IDLE_REFS = 2


class WindowPool:
    """float32 arrays of ``window`` samples; :meth:`take` returns one nobody else holds.

    The pool grows to what the stream's windows in flight need at once. Arrays that stayed idle
    through a whole ``period`` of takes (a backlog that has cleared) are released at its end: memory
    follows demand without reallocating through every burst.
    """

    __slots__ = ("_window", "_period", "_arrays", "_takes", "_min_idle")

    def __init__(self, window: int, period: int = 64) -> None:
        self._window = window
        self._period = period
        self._arrays: list[np.ndarray] = []
        self._takes = 0
        self._min_idle = 0  # fewest idle arrays seen at a take this period

    def __len__(self) -> int:
        return len(self._arrays)

    def take(self) -> np.ndarray:
        """An array of ``window`` float32 samples (contents undefined) that the caller now owns."""
        arrays = self._arrays
        idle = [i for i in range(len(arrays)) if sys.getrefcount(arrays[i]) == _IDLE_REFS]
        self._min_idle = min(self._min_idle, len(idle)) if self._takes else len(idle)
        self._takes += 1
        if self._takes == self._period:
            for i in reversed(idle[1:self._min_idle]):  # never needed this period; keep idle[0]
                del arrays[i]
            self._takes = 0
        if idle:
            return arrays[idle[0]]
        a = np.empty(self._window, dtype=np.float32)
        arrays.append(a)
        return a
