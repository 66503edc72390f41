"""The batch buffers of the micro-batcher: where each window's samples are copied, once.

A window from the windower is a view of its stream's ring (realtime.ringbuffer), valid only
until that stream's next audio is written, and a window may wait in the batcher's queue far
longer (a backlog, a slow engine, a reconnect). So the batcher copies it when it is submitted,
straight from the ring into the next row of the batch being assembled (:class:`BatchRows`), and
the engine later runs on that batch's first rows in place: one copy per window.

Batch buffers come from a :class:`BufferPool` and go back into use only when nothing but the
pool refers to them (CPython reference count): a result that carries its window's row (streams
opened with ``keep_samples``) keeps the whole buffer until it is dropped, views included (a view
holds its base), so reuse can never overwrite samples someone holds. Once the pool holds what is
in flight, nothing is allocated per window or per batch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .batch_stream import QueuedItem

__all__ = ["BufferPool", "BatchRows"]

# References to an idle pooled array: the pool's list slot and getrefcount's own argument.
_IDLE_REFS = 2


class BufferPool:
    """float32 arrays of one ``shape``; :meth:`take` returns one nobody else holds.

    The pool grows to what is in flight at once. Arrays left idle through a whole ``keep_s``
    (a backlog that has cleared, streams that ended) are released by the next :meth:`take` or
    :meth:`trim`: memory follows demand, and demand that comes back within ``keep_s`` (the
    global queue of all streams rises and falls all the time) finds its arrays still there
    instead of allocating them again.
    """

    __slots__ = ("_shape", "_keep_s", "_clock", "_arrays", "_since", "_min_idle")

    def __init__(self, shape: tuple[int, ...], keep_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._shape = shape
        self._keep_s = keep_s
        self._clock = clock
        self._arrays: list[np.ndarray] = []
        self._since = clock()  # start of the current period
        self._min_idle = 0  # fewest idle arrays seen this period

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def keep_s(self) -> float:
        return self._keep_s

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the pool holds (in use or idle)."""
        return sum(a.nbytes for a in self._arrays)

    def trim(self) -> int | None:
        """Release the arrays left idle all through a period that has ended (all but one); return
        the index of an idle array, or None."""
        arrays = self._arrays
        idle = [i for i in range(len(arrays)) if sys.getrefcount(arrays[i]) == _IDLE_REFS]
        self._min_idle = min(self._min_idle, len(idle))
        now = self._clock()
        if now - self._since >= self._keep_s:
            unused = idle[1:self._min_idle]  # never needed this period; keep idle[0]
            for i in reversed(unused):
                del arrays[i]
            self._since, self._min_idle = now, len(idle) - len(unused)
        return idle[0] if idle else None

    def take(self) -> np.ndarray:
        """An array of ``shape`` (contents undefined) that the caller now owns."""
        i = self.trim()
        if i is not None:
            return self._arrays[i]
        a = np.empty(self._shape, dtype=np.float32)
        self._arrays.append(a)
        return a

    def clear(self) -> None:
        """Forget every array (those still in use live on while referenced)."""
        self._arrays.clear()


class BatchRows:
    """One batch: row ``i`` of ``data`` holds the samples of ``items[i]``'s window (``item.row == i``).

    Rows stay packed (the engine runs on ``data[:len(self)]``): removing a window moves the
    last row into its place, the only second copy of a window, and only for one that is shed.
    """

    __slots__ = ("data", "items")

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.items: list[QueuedItem] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def full(self) -> bool:
        return len(self.items) == self.data.shape[0]

    def add(self, item: QueuedItem, samples: np.ndarray) -> None:
        """Copy ``samples`` into the next free row, which becomes ``item``'s."""
        item.row = len(self.items)
        self.data[item.row] = samples
        self.items.append(item)

    def remove(self, item: QueuedItem) -> None:
        """Free ``item``'s row (the last row moves into it)."""
        last = self.items.pop()
        if last is not item:
            self.data[item.row] = self.data[len(self.items)]
            self.items[item.row] = last
            last.row = item.row
