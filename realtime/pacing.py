"""Pacing a WebSocket client's audio: a token bucket, and the backlog between reading and scoring.

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

__all__ = ["TokenBucket", "Backlog"]


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
