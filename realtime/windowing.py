"""Per-stream windowing: raw chunks in, 4-second 16 kHz mono windows out.

A :class:`StreamWindower` owns one :class:`~realtime.resample.StreamResampler`, one
:class:`~realtime.ringbuffer.RingBuffer` and one :class:`~realtime.window_pool.WindowPool`.
Each window is one copy from the ring into a pooled array (no allocation once the pool holds
what the windows in flight need). Non-finite audio is refused here, at input, once: the
batcher's engine path relies on it and does not check windows again.

End of stream (:meth:`StreamWindower.finish`):

* a stream shorter than one window yields a single window made by repeating the clip
  until it is ``window`` samples long (the ASVspoof convention), ``tiled=True``,
  ``start_s=0`` and ``end_s`` = the clip's real duration;
* a stream with windows whose last audio is not covered by any window (the tail after
  the last hop) yields one more window ending exactly at the end of the stream
  (``start = total - window``), so the last words are scored; it overlaps the
  previous window more than a regular hop would;
* a stream with no samples at all raises :class:`~realtime.errors.EmptyStreamError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import EmptyStreamError, NonFiniteAudioError
from .resample import StreamResampler, check_frames, check_rate
from .ringbuffer import RingBuffer
from .window_pool import WindowPool

__all__ = ["WindowOptions", "Window", "StreamWindower"]


def _whole_samples(name: str, seconds: float, rate: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    n = seconds * rate
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ValueError(
            f"{name}={seconds!r} s is not a whole number of samples at {rate} Hz "
            f"({n:g}); choose a multiple of {1 / rate:g} s"
        )
    return round(n)


@dataclass(frozen=True, slots=True)
class WindowOptions:
    """Window geometry, in seconds of audio at the model rate."""

    sample_rate: int = 16000
    window_s: float = 4.0
    hop_s: float = 0.5
    window: int = field(init=False, repr=False)  # samples, derived
    hop: int = field(init=False, repr=False)  # samples, derived

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int):
            raise ValueError(f"sample_rate must be an int in Hz, got {self.sample_rate!r}")
        check_rate(self.sample_rate, "sample_rate")
        object.__setattr__(self, "window", _whole_samples("window_s", self.window_s, self.sample_rate))
        object.__setattr__(self, "hop", _whole_samples("hop_s", self.hop_s, self.sample_rate))


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """One window ready for scoring.

    ``samples`` is float32 ``(window,)``, owned by this object (safe to hand to another
    thread; its array is reused for a later window only once nothing refers to it).
    ``arrival`` is the ``time.monotonic()`` at which the window's last sample arrived (the
    push that completed it), the origin of ``latency_ms``.
    """

    stream: str
    seq: int
    start_s: float
    end_s: float
    samples: np.ndarray
    arrival: float
    tiled: bool = False


class StreamWindower:
    """Cut one stream of float32 ``(n, channels)`` chunks at any rate into scored windows.

    Args:
        stream: stream id, copied into every window and error.
        sample_rate: rate of the incoming chunks (4000..384000 Hz).
        channels: channels of the incoming chunks (1..32); downmixed to mono.
        options: window geometry at the model rate (default 4 s every 0.5 s at 16 kHz).
        clock: time source for ``arrival`` when a push does not give one.
    """

    def __init__(self, stream: str, sample_rate: float, channels: int = 1,
                 options: WindowOptions | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(stream, str):
            raise TypeError(f"stream must be a str id, got {type(stream).__name__}")
        self.stream = stream
        self.options = options if options is not None else WindowOptions()
        self._resampler = StreamResampler(sample_rate, self.options.sample_rate, channels)
        self._ring = RingBuffer(self.options.window, self.options.hop)
        self._pool = WindowPool(self.options.window)
        self._clock = clock
        self._frames_in = 0  # input frames seen, at the input rate (for error offsets)
        self._seq = 0
        self._last_end = 0  # absolute end (model-rate samples) of the last window emitted
        self._finished = False

    @property
    def sample_rate(self) -> float:
        return self._resampler.in_rate

    @property
    def channels(self) -> int:
        return self._resampler.channels

    @property
    def frames_in(self) -> int:
        """Input frames pushed so far (at the input rate)."""
        return self._frames_in

    @property
    def samples(self) -> int:
        """Samples at the model rate produced so far."""
        return self._ring.written

    @property
    def windows_emitted(self) -> int:
        return self._seq

    @property
    def finished(self) -> bool:
        return self._finished

    def _check_finite(self, chunk: np.ndarray) -> None:
        # One reduction, no temporary array: a NaN/Inf anywhere makes the sum non-finite.
        # Only then (or on a rare float32 overflow of a finite sum) look element-wise.
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.add.reduce(chunk, axis=None)
        if math.isfinite(total):
            return
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        if bad.size:
            raise NonFiniteAudioError(self.stream, self._frames_in + int(bad[0]), self.sample_rate)

    def _emit(self, found: list[tuple[int, np.ndarray]], arrival: float) -> list[Window]:
        rate = self.options.sample_rate
        w = self.options.window
        out = []
        for start, samples in found:
            out.append(Window(self.stream, self._seq, start / rate, (start + w) / rate, samples, arrival))
            self._seq += 1
            self._last_end = start + w
        return out

    def push(self, chunk: np.ndarray, arrival: float | None = None) -> list[Window]:
        """Add a chunk of float32 ``(n, channels)`` frames; return the windows it completed.

        Raises:
            AudioFormatError: wrong dtype or shape (names the accepted ones).
            NonFiniteAudioError: a NaN/Inf sample (names the stream and frame offset).
        """
        if self._finished:
            raise RuntimeError(f"stream {self.stream!r}: push() after finish()")
        chunk = check_frames(chunk, self.channels)
        if arrival is None:
            arrival = self._clock()
        self._check_finite(chunk)
        self._frames_in += chunk.shape[0]
        return self._emit(self._ring.feed(self._resampler.process(chunk), self._pool.take), arrival)

    def finish(self, arrival: float | None = None) -> list[Window]:
        """End of stream: flush the resampler and return the last windows (see module doc).

        Raises:
            EmptyStreamError: nothing was ever pushed (or only 0-frame chunks).
        """
        if self._finished:
            raise RuntimeError(f"stream {self.stream!r}: finish() called twice")
        self._finished = True
        if arrival is None:
            arrival = self._clock()
        windows = self._emit(self._ring.feed(self._resampler.flush(), self._pool.take), arrival)
        total = self._ring.written
        rate, w = self.options.sample_rate, self.options.window
        if total == 0:
            raise EmptyStreamError(self.stream)
        if self._seq == 0:
            # Shorter than one window: everything is still in the ring (total < window <= capacity).
            tiled = np.resize(self._ring.latest(total), w)
            windows.append(Window(self.stream, 0, 0.0, total / rate, tiled, arrival, tiled=True))
            self._seq = 1
        elif self._last_end < total:
            start = total - w
            windows.append(Window(self.stream, self._seq, start / rate, total / rate,
                                  self._ring.latest(w), arrival))
            self._seq += 1
            self._last_end = total
        return windows

    def __repr__(self) -> str:
        return (f"StreamWindower(stream={self.stream!r}, sample_rate={self.sample_rate:g}, "
                f"channels={self.channels}, options={self.options!r}, windows={self._seq})")

