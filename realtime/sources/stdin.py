"""Raw PCM from standard input (or any binary pipe): ``--input - --format s16le --rate 8000``.

A daemon thread does the blocking reads, so the event loop never waits on the pipe and an
exit is never held up by a producer that keeps its end open. The thread hands each read to
the loop through a small bounded queue and waits while it is full: a slow consumer makes the
pipe fill up and the producer wait (backpressure), nothing is dropped.

Reads return as soon as some bytes are there (``os.read``, or ``read1`` of a stream without a
descriptor), so latency does not depend on ``chunk_s`` for a live producer; a read may end
inside a frame, which :class:`PcmDecoder` completes with the next read. End of input ends the
iteration; an incomplete last frame is dropped and counted in ``dropped_bytes``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

import numpy as np

from ..errors import AudioInputError
from ..pcm import PcmDecoder
from ..resample import check_rate

__all__ = ["StdinSource"]

log = logging.getLogger(__name__)


class StdinSource:
    """Interleaved little-endian PCM (``s16le`` or ``f32le``) from a binary stream.

    Args:
        format: ``s16le`` or ``f32le``.
        sample_rate: Hz (4000..384000); must be an integer.
        channels: 1..32, interleaved.
        stream_id: id in events (default ``stdin``).
        chunk_s: most audio per read (a read returns earlier when less is available).
        file: binary stream to read (default ``sys.stdin.buffer`` at iteration time).
    """

    def __init__(self, format: str = "s16le", sample_rate: int = 16000, channels: int = 1, *,
                 stream_id: str = "stdin", chunk_s: float = 0.1, file: BinaryIO | None = None) -> None:
        self.decoder = PcmDecoder(format, channels)  # validates format and channels
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
            raise ValueError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
        check_rate(sample_rate)
        if isinstance(chunk_s, bool) or not isinstance(chunk_s, (int, float)) or not math.isfinite(chunk_s) \
                or not 0 < chunk_s <= 10:
            raise ValueError(f"chunk_s must be a number of seconds in (0, 10], got {chunk_s!r}")
        self.sample_rate = sample_rate
        self.channels = self.decoder.channels
        self.format = format
        self.chunk_bytes = max(1, round(chunk_s * sample_rate)) * self.decoder.frame_bytes
        self._stream_id = stream_id
        self._file = file
        self.dropped_bytes = 0

    @property
    def stream_id(self) -> str:
        return self._stream_id

    def __aiter__(self) -> AsyncIterator[tuple[np.ndarray, int]]:
        return self._chunks()

    def _reader(self, f: BinaryIO, loop: asyncio.AbstractEventLoop, q: asyncio.Queue) -> None:
        read = _reader_of(f)
        try:
            while True:
                data = read(self.chunk_bytes)
                # Blocks this thread (not the loop) while the queue is full.
                asyncio.run_coroutine_threadsafe(q.put(data), loop).result()
                if not data:
                    return
        except OSError as e:
            asyncio.run_coroutine_threadsafe(q.put(AudioInputError("<stdin>", f"read failed: {e}")), loop)
        except (RuntimeError, concurrent.futures.CancelledError):
            return  # the consumer stopped (error, or the loop closed): nobody is listening any more

    async def _chunks(self) -> AsyncIterator[tuple[np.ndarray, int]]:
        f = self._file if self._file is not None else sys.stdin.buffer
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[bytes | AudioInputError] = asyncio.Queue(maxsize=4)
        threading.Thread(target=self._reader, args=(f, loop, q), name="stdin-reader", daemon=True).start()
        while True:
            data = await q.get()
            if isinstance(data, AudioInputError):
                raise data
            if not data:
                break
            frames = self.decoder.decode(data)
            if frames.shape[0]:
                yield frames, self.sample_rate
        self.dropped_bytes = self.decoder.pending_bytes
        if self.dropped_bytes:
            log.warning("stdin: input ended inside a frame; dropped the last %d bytes (frame = %d bytes)",
                        self.dropped_bytes, self.decoder.frame_bytes)

    def __repr__(self) -> str:
        return (f"StdinSource(format={self.format!r}, sample_rate={self.sample_rate}, "
                f"channels={self.channels}, stream_id={self.stream_id!r})")


def _reader_of(f: BinaryIO) -> Callable[[int], bytes]:
    """``read(n)``: what is there, up to ``n`` bytes; ``b""`` at end of input.

    A file with a descriptor is read through it: blocked in ``read1``, the thread would hold the
    buffered reader's lock, and the interpreter aborts at exit on a lock held by a daemon thread
    (a run stopped by Ctrl+C while the producer keeps the pipe open)."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return getattr(f, "read1", f.read)
    return functools.partial(os.read, fd)
