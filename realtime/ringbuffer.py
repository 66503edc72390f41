"""Fixed-capacity ring buffer that cuts a sample stream into sliding windows.

One per stream, on the hot path between the resampler and the batcher. The storage is
allocated once; writes copy into it, windows come out as read-only views of it with their
absolute start offsets: reading a window copies nothing. Nothing grows with the stream.

Window ``k`` starts at absolute sample ``k * hop`` and is ready as soon as
``k * hop + window`` samples have been written. ``hop > window`` is allowed: the
samples between windows are then never scored (and never count against the space).

Every window is one contiguous slice: the first ``window - 1`` positions of the ring are
mirrored after its end (written twice), so a window that wraps reads on into the mirror.

Invariant: the buffer always holds the last ``min(written, capacity)`` samples, so
``latest(n)`` can return the end of the stream (used for the final window at
end-of-stream).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import numpy as np

from .errors import AudioFormatError, BufferOverrunError

__all__ = ["RingBuffer", "BufferOverrunError"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= 1, got bool {value!r}")
    try:
        v = operator.index(value)  # accepts numpy ints, rejects floats
    except TypeError:
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def check_mono_float32(x: object, what: str = "samples") -> np.ndarray:
    """Return ``x`` if it is a 1-D float32 ndarray, else raise with what is accepted."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray of float32, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise AudioFormatError(
            f"{what} dtype {x.dtype} not accepted; expected float32 (convert with .astype(np.float32))"
        )
    if x.ndim != 1:
        raise AudioFormatError(f"{what} shape {x.shape} not accepted; expected 1-D (n,) mono samples")
    return x


class RingBuffer:
    """Preallocated float32 ring buffer yielding windows of ``window`` samples every ``hop``.

    Args:
        window: window length in samples (64000 for 4 s at 16 kHz).
        hop: distance between window starts in samples; may be smaller than, equal to
            or larger than ``window``.
        capacity: samples kept, ``>= window``. The default, ``window + min(hop, window)``,
            lets a write of up to ``min(hop, window) + 1`` samples through without a split
            after the ready windows have been drained. The storage is ``capacity + window - 1``
            samples (the mirror, see the module doc).

    A window is a read-only view of the storage: valid until the next write, which may
    overwrite it. Copy it to keep it. Usage::

        rb.write(chunk)                   # chunks no larger than ``free``
        for start, w in rb.windows():
            consume(w)

        for start, w in rb.feed(chunk):   # any chunk size: writes between the windows
            consume(w)                    # before asking for the next one
    """

    __slots__ = ("_window", "_hop", "_capacity", "_buf", "_buf_ro", "_written", "_next")

    def __init__(self, window: int, hop: int, capacity: int | None = None) -> None:
        self._window = _positive_int("window", window)
        self._hop = _positive_int("hop", hop)
        cap = self._window + min(self._hop, self._window) if capacity is None \
            else _positive_int("capacity", capacity)
        if cap < self._window:
            raise ValueError(f"capacity must be >= window ({self._window} samples), got {cap}")
        self._capacity = cap
        self._buf = np.zeros(cap + self._window - 1, dtype=np.float32)
        # Read-only alias made once, so handing out a view costs nothing per window and a
        # consumer cannot scribble over the ring.
        self._buf_ro = self._buf.view()
        self._buf_ro.flags.writeable = False
        self._written = 0  # absolute number of samples written since construction/reset
        self._next = 0  # absolute start of the next window to hand out

    # -- state -------------------------------------------------------------------------

    @property
    def window(self) -> int:
        return self._window

    @property
    def hop(self) -> int:
        return self._hop

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def written(self) -> int:
        """Absolute number of samples written so far."""
        return self._written

    @property
    def next_start(self) -> int:
        """Absolute start offset of the next window to be handed out."""
        return self._next

    @property
    def free(self) -> int:
        """Largest write that cannot overwrite a sample of a pending window."""
        # The samples still needed are [next, written); a write of n keeps
        # [next, written + n), which must fit in the capacity.
        return self._capacity + self._next - self._written

    @property
    def ready(self) -> int:
        """Number of windows ready to be read now."""
        avail = self._written - self._next - self._window
        return 0 if avail < 0 else avail // self._hop + 1

    def reset(self) -> None:
        """Forget everything written; the next window starts at the next sample written (offset 0)."""
        self._written = 0
        self._next = 0

    # -- writing -----------------------------------------------------------------------

    def write(self, x: np.ndarray) -> None:
        """Append ``x`` (float32, 1-D, any length including 0).

        Raises:
            BufferOverrunError: ``len(x) > free``: the write would overwrite samples of a
                window not yet read. Nothing is written in that case.
        """
        check_mono_float32(x)
        n = x.shape[0]
        if n > self.free:
            raise BufferOverrunError(n, self.free, self._capacity)
        self._write_unchecked(x)

    def _write_unchecked(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n == 0:
            return
        cap = self._capacity
        start = self._written
        if n > cap:
            # Only the last `cap` samples can survive; `free` guarantees none of the
            # dropped ones belongs to a pending window (they fall in a hop > window gap).
            start += n - cap
            x = x[n - cap:]
        pos = start % cap
        first = min(x.shape[0], cap - pos)
        self._store(pos, x[:first])
        if first < x.shape[0]:
            self._store(0, x[first:])
        self._written += n

    def _store(self, pos: int, x: np.ndarray) -> None:
        """Copy ``x`` to ``[pos, pos + len(x))`` (within the capacity) and into the mirror."""
        self._buf[pos:pos + x.shape[0]] = x
        mirrored = min(x.shape[0], self._window - 1 - pos)
        if mirrored > 0:
            cap = self._capacity
            self._buf[cap + pos:cap + pos + mirrored] = x[:mirrored]

    # -- reading -----------------------------------------------------------------------

    def _view(self, start: int, n: int) -> np.ndarray:
        pos = start % self._capacity
        return self._buf_ro[pos:pos + n]

    def read_window(self) -> tuple[int, np.ndarray] | None:
        """Pop the next ready window as ``(start_sample, samples)``, or ``None`` if none is ready.

        ``samples`` is a read-only view of the ring, valid until the next write.
        """
        start = self._next
        if start + self._window > self._written:
            return None
        self._next = start + self._hop
        return start, self._view(start, self._window)

    def windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield every ready window as ``(start_sample, samples)`` (see :meth:`read_window`).

        A window counts as consumed once yielded; stopping the iteration early leaves the
        rest pending.
        """
        while (item := self.read_window()) is not None:
            yield item

    def feed(self, x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Write ``x`` of any length, yielding every window as it becomes ready.

        Writes larger than :attr:`free` (even larger than the capacity) are split, with
        the windows yielded between the pieces, so this never raises
        :class:`BufferOverrunError`. Windows already pending come first. Each window is a
        view (see :meth:`read_window`) that the next piece may overwrite: use it before
        asking for the next one, and run the iterator to its end, or the rest of ``x`` is
        never written. ``x`` is checked here, before the first window.
        """
        check_mono_float32(x)
        return self._feed(x)

    def _feed(self, x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        n = x.shape[0]
        i = 0
        while True:
            yield from self.windows()
            if i >= n:
                return
            # After draining, free >= capacity - window + 1 >= 1, so this always advances.
            k = min(n - i, self.free)
            self._write_unchecked(x[i:i + k])
            i += k

    def latest(self, n: int) -> np.ndarray:
        """The last ``n`` samples written (``n <= min(written, window)``), as a read-only view
        valid until the next write. Used at end-of-stream for the final window."""
        n = operator.index(n)
        limit = min(self._written, self._window)
        if not 0 <= n <= limit:
            raise ValueError(f"latest(n): n must be in 0..{limit} (samples held), got {n}")
        return self._view(self._written - n, n)

    def __repr__(self) -> str:
        return (f"RingBuffer(window={self._window}, hop={self._hop}, capacity={self._capacity}, "
                f"written={self._written}, next_start={self._next})")
