"""G.711 decoding (ITU-T G.711): mu-law (PCMU) and A-law (PCMA) bytes -> 16-bit linear PCM.

Tables of the 256 code words, built once from the standard's segment/mantissa layout, so no
dependency on :mod:`audioop` (deprecated, removed in Python 3.13). Decoding is one numpy
take per payload; the tests check every code word against the reference values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ULAW_TO_LINEAR", "ALAW_TO_LINEAR", "ulaw_to_s16", "alaw_to_s16"]


def _ulaw_table() -> np.ndarray:
    out = np.empty(256, dtype=np.int16)
    for code in range(256):
        u = ~code & 0xFF  # mu-law code words are sent inverted
        exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84  # 0x84: the bias of 132
        out[code] = -magnitude if u & 0x80 else magnitude
    return out


def _alaw_table() -> np.ndarray:
    out = np.empty(256, dtype=np.int16)
    for code in range(256):
        a = code ^ 0x55  # A-law code words have their even bits inverted
        exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
        magnitude = (mantissa << 4) + 8
        if exponent:
            magnitude = (magnitude + 0x100) << (exponent - 1)
        out[code] = magnitude if a & 0x80 else -magnitude
    return out


ULAW_TO_LINEAR: np.ndarray = _ulaw_table()
ALAW_TO_LINEAR: np.ndarray = _alaw_table()


def ulaw_to_s16(payload: bytes | bytearray | memoryview) -> bytes:
    """mu-law bytes -> little-endian signed 16-bit PCM bytes (twice as long)."""
    return ULAW_TO_LINEAR.take(np.frombuffer(payload, dtype=np.uint8)).astype("<i2").tobytes()


def alaw_to_s16(payload: bytes | bytearray | memoryview) -> bytes:
    """A-law bytes -> little-endian signed 16-bit PCM bytes (twice as long)."""
    return ALAW_TO_LINEAR.take(np.frombuffer(payload, dtype=np.uint8)).astype("<i2").tobytes()
