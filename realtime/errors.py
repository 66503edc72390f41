"""Exceptions raised by the live side.

Every error names the offending value and what is accepted, so the CLI can print
``str(exc)`` as its one line on stderr. ``RealtimeError`` is the common base the CLI
and the server catch; the multiple inheritance from ``ValueError`` keeps the usual
``except ValueError`` working for input-validation errors.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "RealtimeError",
    "AudioFormatError",
    "NonFiniteAudioError",
    "AudioInputError",
    "EmptyStreamError",
    "BufferOverrunError",
    "EventSchemaError",
]


class RealtimeError(Exception):
    """Base class of the errors raised by :mod:`realtime`."""


class AudioFormatError(RealtimeError, ValueError):
    """Audio of the wrong dtype, shape, sample rate or channel count."""


class NonFiniteAudioError(AudioFormatError):
    """A NaN or infinite sample in a stream.

    ``offset`` is the index of the first bad frame counted from the start of the
    stream, at the stream's own sample rate (``sample_rate``, when known).
    """

    def __init__(self, stream: str, offset: int, sample_rate: float | None = None) -> None:
        self.stream = stream
        self.offset = offset
        self.sample_rate = sample_rate
        where = f"sample {offset}"
        if sample_rate:
            where += f" ({offset / sample_rate:.3f} s)"
        super().__init__(
            f"stream {stream!r}: non-finite audio (NaN or Inf) at {where}; "
            "samples must be finite floats, nominally in [-1, 1]"
        )


class AudioInputError(RealtimeError):
    """An audio file or device that cannot be opened or read."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class EmptyStreamError(RealtimeError):
    """A stream ended before delivering a single sample: there is nothing to score."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} ended without any audio (0 samples); nothing to score")


class BufferOverrunError(RealtimeError):
    """A write would overwrite samples that a pending window still needs.

    Drain the ready windows first (``RingBuffer.windows()``), write at most
    ``RingBuffer.free`` samples, or use ``RingBuffer.feed()`` which splits for you.
    """

    def __init__(self, requested: int, free: int, capacity: int) -> None:
        self.requested = requested
        self.free = free
        self.capacity = capacity
        super().__init__(
            f"ring buffer overrun: write of {requested} samples but only {free} can be written "
            f"without losing samples of a pending window (capacity {capacity}); "
            "drain windows() first or use feed(), which splits large writes"
        )


class EventSchemaError(RealtimeError, ValueError):
    """A dict or JSON document that is not a valid event of the schema (docs/protocol.md)."""
