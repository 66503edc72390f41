"""A client's outbound events, bounded: a client that does not read them costs bounded memory
and only delays itself, never the server or anybody else.
"""

from __future__ import annotations

import asyncio
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .events import Event, ScoreEvent

__all__ = ["Outbox"]


class Outbox:
    """A connection's outbound events: bounded queue + one sender task.

    Used as the session's sink. When ``limit`` events are queued, the oldest score event is
    dropped (never ready/summary/error), counted in :attr:`dropped`. After :meth:`stop` (the
    client is gone, or was refused), further events are not for it and are ignored.
    """

    def __init__(self, ws: ServerConnection, limit: int) -> None:
        self._ws = ws
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = False
        self.dropped = 0
        self.task = asyncio.create_task(self._run())

    def __call__(self, event: Event) -> None:
        if self._stopped:
            return
        if len(self._queue) >= self._limit:
            for i, queued in enumerate(self._queue):
                if isinstance(queued, ScoreEvent):
                    del self._queue[i]
                    self.dropped += 1
                    break
        self._queue.append(event)
        self._wake.set()

    def stop(self) -> None:
        """Accept no more events (what is queued is still sent by :meth:`close`)."""
        self._stopped = True

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    await self._ws.send(self._queue.popleft().to_json())
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            return

    async def close(self, code: int, reason: str, flush_s: float) -> None:
        """Send what is queued (for at most ``flush_s``), then close the connection."""
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(flush_s):
                await asyncio.shield(self.task)
        except TimeoutError:
            self.task.cancel()
        await self._ws.close(code, reason)
