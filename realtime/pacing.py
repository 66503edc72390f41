"""Pacing a client's audio: a token bucket, the backlog between reading and scoring, and the
feed from the backlog to the stream.

The server reads every connection as fast as it can (so the library answers the client's pings
at once, whatever the client's pace) and feeds what it read to the stream at most
``max_realtime_factor`` times real time. Read-ahead costs memory, so the backlog is bounded in
bytes; past that bound the reader waits, and only then does TCP push back on the client.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import AudioFormatError
from .protocol import CLOSE_UNSUPPORTED, ProtocolError

if TYPE_CHECKING:
    from .pcm import PcmDecoder
    from .session import StreamSession

__all__ = ["AudioFeed", "Backlog", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up; starts full.

    :meth:`take` may go into debt and returns how long until the debt is repaid: the caller
    chooses to wait (throttle) or to refuse.
    """

    rate: float
    capacity: float
    tokens: float = -1.0  # -1: full at the first take
    stamp: float = 0.0

    def take(self, n: float, now: float) -> float:
        if self.tokens == -1.0:
            self.tokens, self.stamp = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Backlog:
    """Binary messages read and not yet fed, at most ``limit`` bytes (one message may pass it).

    One writer (:meth:`put`, :meth:`close`, :meth:`fail`), one reader (:meth:`get`). After
    :meth:`close` or :meth:`fail`, :meth:`get` returns what is left, then raises the failure
    (once) or returns ``None``: audio that arrived before a fault is still fed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._items: deque[bytes] = deque()
        self._changed = asyncio.Event()  # set on every put/get/close: both sides re-check
        self._closed = False
        self._failure: BaseException | None = None
        #: Since when the reader has been waiting on an empty backlog (None: it has audio to feed).
        self.starved_since: float | None = time.monotonic()

    async def put(self, message: bytes) -> None:
        """Queue ``message``; waits while the backlog is at its limit (TCP then pushes back)."""
        while self.bytes >= self.limit:
            self._changed.clear()
            await self._changed.wait()
        self._items.append(message)
        self.bytes += len(message)
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    def fail(self, exc: BaseException) -> None:
        self._failure = exc
        self.close()

    @property
    def ended(self) -> bool:
        """Closed (or failed): no more messages will come."""
        return self._closed

    async def get(self) -> bytes | None:
        """The oldest message; ``None`` once closed and empty (or the failure, raised)."""
        if not self._items and self.starved_since is None:
            self.starved_since = time.monotonic()
        while not self._items:
            if self._closed:
                if self._failure is None:
                    return None
                # Raised once, then forgotten, and no local keeps it: the exception's traceback
                # holds the frames that hold it, a cycle only the cyclic GC would free.
                failure, self._failure = self._failure, None
                try:
                    raise failure
                finally:
                    del failure
            self._changed.clear()
            await self._changed.wait()
        message = self._items.popleft()
        self.starved_since = None
        self.bytes -= len(message)
        self._changed.set()
        return message


class AudioFeed:
    """A stream's backlog into its session: at most ``pace``'s rate (None: as fast as the
    batcher takes it), one hop of audio at a time, each only when the stream has room for its
    windows. So a within-limits client never has windows shed for arriving together (one
    large message holds many); only an overloaded server sheds (``max_delay_ms``, ``max_queue``).
    """

    def __init__(self, session: StreamSession, decoder: PcmDecoder, backlog: Backlog, rate: int,
                 hop_s: float) -> None:
        self.session, self.decoder, self.backlog, self.rate = session, decoder, backlog, rate
        self.step = max(1, int(hop_s * rate))  # frames per push: at most two windows complete
        self.rest: np.ndarray | None = None  # frames taken from the backlog, not yet pushed

    async def run(self, pace: TokenBucket | None) -> None:
        """Until the backlog ends; raises its failure, or ProtocolError for bad audio. Safe to
        cancel: nothing taken is lost, a later run goes on from there."""
        loop = asyncio.get_running_loop()
        while True:
            if self.rest is None or not self.rest.shape[0]:
                msg = await self.backlog.get()
                if msg is None:
                    return
                self.rest = self.decoder.decode(msg)
                continue
            n = min(self.step, self.rest.shape[0])
            if pace is not None:
                wait = pace.take(n / self.rate, loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)
            await self.session.wait_room(2)
            piece, self.rest = self.rest[:n], self.rest[n:]  # no await between taking and pushing
            try:
                await self.session.push(piece)  # live streams shed, never wait
            except AudioFormatError as e:
                raise ProtocolError("bad_audio", CLOSE_UNSUPPORTED, str(e)) from None
