"""Fixed-capacity ring buffer that cuts a sample stream into sliding windows.

One per stream, on the hot path between the resampler and the batcher. The storage is
allocated once; writes copy into it (at most two slices), windows come out as
contiguous arrays with their absolute start offsets. Nothing grows with the stream.

Window ``k`` starts at absolute sample ``k * hop`` and is ready as soon as
``k * hop + window`` samples have been written. ``hop > window`` is allowed: the
samples between windows are then never scored (and never count against the space).

Invariant: the buffer always holds the last ``min(written, capacity)`` samples, so
``latest(n)`` can return the end of the stream (used for the final window at
end-of-stream).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator

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
        capacity: storage in samples, ``>= window``. The default ``2 * window`` lets any
            write of up to ``window + 1`` samples through without a split after the
            ready windows have been drained.

    Usage, zero-copy (chunks no larger than ``free``)::

        rb.write(chunk)
        for start, w in rb.windows():
            consume(w)          # w is only valid until the next write/read; copy to keep

    Usage, any chunk size (each window copied once, straight from the ring into its own array)::

        for start, w in rb.feed(chunk):
            queue.put((start, w))
    """

    __slots__ = ("_window", "_hop", "_capacity", "_buf", "_buf_ro", "_scratch", "_scratch_ro",
                 "_written", "_next")

    def __init__(self, window: int, hop: int, capacity: int | None = None) -> None:
        self._window = _positive_int("window", window)
        self._hop = _positive_int("hop", hop)
        cap = 2 * self._window if capacity is None else _positive_int("capacity", capacity)
        if cap < self._window:
            raise ValueError(f"capacity must be >= window ({self._window} samples), got {cap}")
        self._capacity = cap
        self._buf = np.zeros(cap, dtype=np.float32)
        # Read-only alias made once, so handing out a view costs nothing per window and a
        # consumer cannot scribble over the ring.
        self._buf_ro = self._buf.view()
        self._buf_ro.flags.writeable = False
        # For zero-copy reads of a window that wraps; made on first need: readers with their
        # own arrays (feed, read_window(out)) never pay its window of memory.
        self._scratch: np.ndarray | None = None
        self._scratch_ro: np.ndarray | None = None
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
        self._buf[pos:pos + first] = x[:first]
        if first < x.shape[0]:
            self._buf[: x.shape[0] - first] = x[first:]
        self._written += n

    # -- reading -----------------------------------------------------------------------

    def _copy_out(self, start: int, n: int, out: np.ndarray) -> np.ndarray:
        cap = self._capacity
        pos = start % cap
        first = min(n, cap - pos)
        out[:first] = self._buf[pos:pos + first]
        if first < n:
            out[first:n] = self._buf[: n - first]
        return out

    def read_window(self, out: np.ndarray | None = None) -> tuple[int, np.ndarray] | None:
        """Pop the next ready window as ``(start_sample, samples)``, or ``None`` if none is ready.

        With ``out`` (float32, shape ``(window,)``) the samples are copied into it and
        ``out`` is returned: use this to give each window its own array. Without it the
        result is a read-only contiguous array that is either a view of the ring or a
        scratch array reused by the next read: it is valid only until the next
        ``write``/``feed``/read call. Copy it to keep it.
        """
        w = self._window
        if out is not None and (
            not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (w,)
            or not out.flags.writeable
        ):
            raise AudioFormatError(
                f"out must be a writeable float32 array of shape ({w},), got "
                f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
            )
        start = self._next
        if start + w > self._written:
            return None
        self._next = start + self._hop
        if out is not None:
            return start, self._copy_out(start, w, out)
        pos = start % self._capacity
        if pos + w <= self._capacity:
            return start, self._buf_ro[pos:pos + w]
        if self._scratch is None:
            self._scratch = np.empty(w, dtype=np.float32)
            self._scratch_ro = self._scratch.view()
            self._scratch_ro.flags.writeable = False
        self._copy_out(start, w, self._scratch)  # wraps: one contiguous copy
        assert self._scratch_ro is not None
        return start, self._scratch_ro

    def windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield every ready window as ``(start_sample, samples)`` (see :meth:`read_window`).

        The yielded array may be reused by the next yield: copy it to keep it. A window
        counts as consumed once yielded; stopping the iteration early leaves the rest
        pending.
        """
        while (item := self.read_window()) is not None:
            yield item

    def feed(self, x: np.ndarray, new: Callable[[], np.ndarray] | None = None) -> list[tuple[int, np.ndarray]]:
        """Write ``x`` of any length and return every window that became ready.

        Writes larger than :attr:`free` (even larger than the capacity) are split, with
        the windows read out between the pieces, so this never raises
        :class:`BufferOverrunError`. Each returned window is an array the caller owns
        (safe to hand to another thread): ``new()``'s (a float32 ``(window,)`` array, e.g.
        from a :class:`~realtime.window_pool.WindowPool`), else a new one. Windows already
        pending are returned first.
        """
        check_mono_float32(x)
        n = x.shape[0]
        out: list[tuple[int, np.ndarray]] = []
        i = 0
        while True:
            for _ in range(self.ready):
                item = self.read_window(np.empty(self._window, dtype=np.float32) if new is None else new())
                assert item is not None
                out.append(item)
            if i >= n:
                return out
            # After draining, free >= capacity - window + 1 >= 1, so this always advances.
            k = min(n - i, self.free)
            self._write_unchecked(x[i:i + k])
            i += k

    def latest(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Copy of the last ``n`` samples written (``n <= min(written, capacity)``).

        Used at end-of-stream for the final window; returns ``out`` when given.
        """
        n = operator.index(n)
        limit = min(self._written, self._capacity)
        if not 0 <= n <= limit:
            raise ValueError(f"latest(n): n must be in 0..{limit} (samples held), got {n}")
        if out is None:
            out = np.empty(n, dtype=np.float32)
        elif out.dtype != np.float32 or out.shape != (n,):
            raise AudioFormatError(f"out must be float32 of shape ({n},), got {out.dtype} {out.shape}")
        return self._copy_out(self._written - n, n, out)

    def __repr__(self) -> str:
        return (f"RingBuffer(window={self._window}, hop={self._hop}, capacity={self._capacity}, "
                f"written={self._written}, next_start={self._next})")
