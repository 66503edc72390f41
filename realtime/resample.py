"""Per-stream downmix + resampling to the model rate (16 kHz mono), around soxr.

Downmix happens before resampling: one channel to resample instead of ``channels``.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import soxr

from .errors import AudioFormatError

__all__ = ["StreamResampler", "downmix", "check_rate", "check_channels",
           "check_frames", "MIN_RATE", "MAX_RATE", "MAX_CHANNELS", "QUALITIES"]

MIN_RATE = 4000
MAX_RATE = 384000
MAX_CHANNELS = 32
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


def check_rate(rate: object, name: str = "sample_rate") -> float:
    """Return ``rate`` as a number if it is a finite rate in MIN_RATE..MAX_RATE Hz."""
    ok = isinstance(rate, (int, float, np.integer, np.floating)) and not isinstance(rate, bool)
    if not ok or not math.isfinite(float(rate)) or not MIN_RATE <= float(rate) <= MAX_RATE:
        raise AudioFormatError(
            f"{name} {rate!r} Hz not accepted; accepted: {MIN_RATE}..{MAX_RATE} Hz"
        )
    return float(rate)


def check_channels(channels: object) -> int:
    """Return ``channels`` as an int if it is in 1..MAX_CHANNELS."""
    try:
        if isinstance(channels, bool):
            raise TypeError
        c = operator.index(channels)
    except TypeError:
        c = None
    if c is None or not 1 <= c <= MAX_CHANNELS:
        raise AudioFormatError(f"channels {channels!r} not accepted; accepted: 1..{MAX_CHANNELS}")
    return c


def check_frames(x: object, channels: int | None) -> np.ndarray:
    """Validate a float32 chunk of shape (n, channels); (n,) is taken as mono."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"audio chunk must be a numpy.ndarray of float32, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise AudioFormatError(
            f"audio chunk dtype {x.dtype} not accepted; expected float32 (scale int16 PCM by 1/32768)"
        )
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or (channels is not None and x.shape[1] != channels):
        want = "(n, channels)" if channels is None else f"(n, {channels})"
        raise AudioFormatError(f"audio chunk shape {x.shape} not accepted; expected {want} frames")
    return x


def downmix(x: np.ndarray) -> np.ndarray:
    """Mean of the channels of a float32 ``(n, channels)`` chunk -> float32 ``(n,)``.

    A 1-channel (or 1-D) chunk is returned as a view, without copying.
    """
    x = check_frames(x, None)
    ch = x.shape[1]
    if ch == 1:
        return x[:, 0]
    # A matrix-vector product with equal weights: ~20x faster than x.mean(axis=1),
    # whose reduction along the short axis is slow.
    return x @ _mean_weights(ch)


@functools.lru_cache(maxsize=MAX_CHANNELS)
def _mean_weights(channels: int) -> np.ndarray:
    w = np.full(channels, 1.0 / channels, dtype=np.float32)
    w.flags.writeable = False
    return w


class StreamResampler:
    """Stateful downmix + resampler for one stream (``soxr.ResampleStream``, float32).

    ``process`` may be called with chunks of any size (including 0 frames); the
    concatenated outputs plus ``flush()`` equal a one-shot ``soxr.resample`` of the
    downmixed signal. When ``in_rate == out_rate`` the resampler is bypassed and the
    output may be a view of the input chunk.
    """

    def __init__(self, in_rate: float, out_rate: float = 16000, channels: int = 1,
                 quality: str = "HQ") -> None:
        self.in_rate = check_rate(in_rate, "in_rate")
        self.out_rate = check_rate(out_rate, "out_rate")
        self.channels = check_channels(channels)
        if quality not in QUALITIES:
            raise ValueError(f"quality {quality!r} not accepted; accepted: {', '.join(QUALITIES)}")
        self.quality = quality
        self.passthrough = self.in_rate == self.out_rate
        self._stream: soxr.ResampleStream | None = None
        self._finished = False
        self.reset()

    def reset(self) -> None:
        """Start a new stream (drops any samples held inside the filter)."""
        self._finished = False
        if not self.passthrough:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1,
                                               dtype="float32", quality=self.quality)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Downmix then resample one chunk of float32 ``(n, channels)`` frames."""
        if self._finished:
            raise RuntimeError("StreamResampler.process() after flush(); call reset() for a new stream")
        mono = downmix(check_frames(chunk, self.channels))
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(np.ascontiguousarray(mono))

    def flush(self) -> np.ndarray:
        """End of stream: return the samples still inside the filter (once; then empty)."""
        if self._finished or self._stream is None:
            self._finished = True
            return np.zeros(0, dtype=np.float32)
        self._finished = True
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def __repr__(self) -> str:
        return (f"StreamResampler(in_rate={self.in_rate:g}, out_rate={self.out_rate:g}, "
                f"channels={self.channels}, quality={self.quality!r})")
