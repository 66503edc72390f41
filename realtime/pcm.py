"""Raw interleaved PCM bytes -> float32 ``(n, channels)`` frames (stdin, WebSocket binary frames).

A read or a message may end in the middle of a frame (or of a sample): the incomplete bytes
are kept and completed by the next call, so chunk boundaries never shift the channels.
"""

from __future__ import annotations

import numpy as np

from .errors import AudioFormatError
from .resample import check_channels

__all__ = ["PCM_FORMATS", "PcmDecoder", "check_format"]

#: Accepted raw formats: little-endian signed 16-bit and little-endian 32-bit float.
PCM_FORMATS: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def check_format(fmt: object) -> str:
    if not isinstance(fmt, str) or fmt not in PCM_FORMATS:
        raise AudioFormatError(f"format {fmt!r} not accepted; accepted: {', '.join(PCM_FORMATS)}")
    return fmt


class PcmDecoder:
    """Stateful decoder for one stream of interleaved little-endian PCM."""

    __slots__ = ("format", "channels", "dtype", "frame_bytes", "_carry", "frames")

    def __init__(self, fmt: str = "s16le", channels: int = 1) -> None:
        self.format = check_format(fmt)
        self.channels = check_channels(channels)
        self.dtype = PCM_FORMATS[fmt]
        self.frame_bytes = self.dtype.itemsize * self.channels
        self._carry = b""
        self.frames = 0  # frames decoded so far

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held for the next call."""
        return len(self._carry)

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Decode every complete frame in ``carry + data``; returns a new float32 array."""
        if self._carry:
            data = self._carry + bytes(data)
        fb = self.frame_bytes
        n = len(data) // fb
        cut = n * fb
        self._carry = bytes(data[cut:]) if cut < len(data) else b""
        raw = np.frombuffer(data, dtype=self.dtype, count=n * self.channels).reshape(n, self.channels)
        self.frames += n
        if self.format == "s16le":
            out = np.empty(raw.shape, dtype=np.float32)
            np.multiply(raw, np.float32(1.0 / 32768.0), out=out, casting="unsafe")
            return out
        return raw.astype(np.float32)  # a copy: the caller's buffer may be reused
