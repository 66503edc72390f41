"""The Source contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Source", "Chunk"]

#: One delivery: float32 frames of shape ``(n, channels)`` and their sample rate in Hz.
Chunk = tuple[np.ndarray, int]


@runtime_checkable
class Source(Protocol):
    """Where audio comes from: a file, a microphone, a WebSocket client, stdin.

    ``async for samples, rate in source`` yields float32 ``(n, channels)`` arrays the
    consumer may keep (a source never reuses a yielded array). The rate and channel
    count stay the same for the whole stream. Iteration ends at end of stream; errors
    are raised from the iteration (:class:`~realtime.errors.AudioInputError` for input
    that cannot be read). A source does not check sample values: the windower rejects
    NaN/Inf with the stream id and offset.
    """

    @property
    def stream_id(self) -> str:
        """Id copied into every event of this stream (``"mic"``, ``"call-42"``, a file name)."""
        ...

    def __aiter__(self) -> AsyncIterator[Chunk]: ...
