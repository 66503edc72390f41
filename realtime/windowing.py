"""Per-stream windowing: raw chunks in, 4-second 16 kHz mono windows out.

A :class:`StreamWindower` owns one :class:`~realtime.resample.StreamResampler` and one
:class:`~realtime.ringbuffer.RingBuffer`. Its windows' samples are views of the ring, not
copies: the consumer (the session: speech gate, then the batcher, which copies each window once,
into its batch buffer) uses each window before taking the next, after which the ring may write
over it. Non-finite audio is refused here, at input, once: the batcher's engine path relies on
it and does not check windows again.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import EmptyStreamError, NonFiniteAudioError
from .resample import StreamResampler, check_frames, check_rate
from .ringbuffer import RingBuffer

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

    ``samples`` is float32 ``(window,)``. From :class:`StreamWindower` it is a read-only view
    of the stream's ring, valid until the next window is taken: copy what you keep. In the
    batcher's results it is the window's row of a batch buffer, or empty (see
    :class:`~realtime.batch_stream.WindowResult`).
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

    :meth:`push` and :meth:`finish` check their input at once and return an iterator of the
    windows: consume each before taking the next (its samples are a view of the ring), and run
    the iterator to its end before the next call (the chunk is written into the ring as the
    windows are taken).

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
        self._clock = clock
        self._frames_in = 0  # input frames seen, at the input rate (for error offsets)
        self._seq = 0
        self._last_end = 0  # absolute end (model-rate samples) of the last window emitted
        self._finished = False
        self._taking = False  # the windows of the last push() are not all taken yet

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

    def _emit(self, found: Iterator[tuple[int, np.ndarray]], arrival: float) -> Iterator[Window]:
        rate = self.options.sample_rate
        w = self.options.window
        for start, samples in found:
            seq = self._seq
            self._seq += 1
            self._last_end = start + w
            yield Window(self.stream, seq, start / rate, (start + w) / rate, samples, arrival)
        self._taking = False

    def _check_taken(self, call: str) -> None:
        # Untaken windows are unwritten audio (the ring writes as they are taken): refuse to lose it.
        if self._taking:
            raise RuntimeError(f"stream {self.stream!r}: {call} before every window of the last push() "
                               "was taken")

    def push(self, chunk: np.ndarray, arrival: float | None = None) -> Iterator[Window]:
        """Add a chunk of float32 ``(n, channels)`` frames; return the windows it completes.

        Raises:
            AudioFormatError: wrong dtype or shape (names the accepted ones).
            NonFiniteAudioError: a NaN/Inf sample (names the stream and frame offset).
        """
        if self._finished:
            raise RuntimeError(f"stream {self.stream!r}: push() after finish()")
        self._check_taken("push()")
        chunk = check_frames(chunk, self.channels)
        if arrival is None:
            arrival = self._clock()
        self._check_finite(chunk)
        self._frames_in += chunk.shape[0]
        self._taking = True
        return self._emit(self._ring.feed(self._resampler.process(chunk)), arrival)

    def finish(self, arrival: float | None = None) -> Iterator[Window]:
        """End of stream: flush the resampler and return the last windows (see module doc).

        Raises:
            EmptyStreamError: nothing was ever pushed (or only 0-frame chunks).
        """
        if self._finished:
            raise RuntimeError(f"stream {self.stream!r}: finish() called twice")
        self._check_taken("finish()")
        self._finished = True
        if arrival is None:
            arrival = self._clock()
        rest = self._resampler.flush()
        if self._ring.written + rest.shape[0] == 0:
            raise EmptyStreamError(self.stream)
        return self._finish(self._ring.feed(rest), arrival)

    def _finish(self, found: Iterator[tuple[int, np.ndarray]], arrival: float) -> Iterator[Window]:
        yield from self._emit(found, arrival)
        total = self._ring.written
        rate, w = self.options.sample_rate, self.options.window
        if self._seq == 0:
            # Shorter than one window: everything is still in the ring (total < window <= capacity).
            tiled = np.resize(self._ring.latest(total), w)
            self._seq = 1
            yield Window(self.stream, 0, 0.0, total / rate, tiled, arrival, tiled=True)
        elif self._last_end < total:
            start = total - w
            seq = self._seq
            self._seq += 1
            self._last_end = total
            yield Window(self.stream, seq, start / rate, total / rate, self._ring.latest(w), arrival)

    def __repr__(self) -> str:
        return (f"StreamWindower(stream={self.stream!r}, sample_rate={self.sample_rate:g}, "
                f"channels={self.channels}, options={self.options!r}, windows={self._seq})")

