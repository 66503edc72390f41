"""One stream's side of the micro-batcher: its handle (:class:`BatchStream`), the queue entry of
each window it submits, and the result that comes back for each (:class:`WindowResult`).

The batcher (:mod:`realtime.batcher`) owns the queue and the worker; this module is what a stream
sees of it: ``submit`` never blocks, results arrive on the stream's own event loop, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .aggregate import sigmoid
from .windowing import Window

if TYPE_CHECKING:  # pragma: no cover
    from engines.hop_frontend import StreamFrames
    from engines.stream_network import StreamTrunk

    from .batch_rows import BatchRows
    from .batcher import MicroBatcher

__all__ = ["BatchStream", "WindowResult", "BatcherClosedError", "Status", "Policy", "POLICIES"]

Status = Literal["scored", "skipped", "shed", "error"]
Policy = Literal["shed", "block"]
POLICIES = ("shed", "block")


class BatcherClosedError(RuntimeError):
    """A window was submitted to a batcher (or stream) that is closed."""


@dataclass(frozen=True, slots=True)
class WindowResult:
    """The outcome of one submitted window.

    ``status``: ``scored`` (``logit`` set), ``skipped`` (submitted with
    ``score=False``: passed through in order without inference), ``shed`` (dropped under
    overload), ``error`` (the engine raised; ``error`` holds its message). ``done_at`` is the
    ``time.monotonic()`` at which the outcome was known (for ``scored``: when the engine
    returned).

    ``window.samples``: for ``scored`` and ``error`` windows of a stream opened with
    ``keep_samples=True``, the window's row of the batch buffer (a view: it keeps that whole
    buffer from reuse while held, so copy it to keep it for long); else empty.
    """

    window: Window
    status: Status
    logit: float | None
    done_at: float
    error: str | None = None

    @property
    def probability(self) -> float | None:
        """The spoof probability of a scored window: the sigmoid of its logit."""
        return None if self.logit is None else sigmoid(self.logit)

    @property
    def latency_ms(self) -> float:
        """Window arrival (its last sample) -> outcome, in milliseconds."""
        return max(0.0, (self.done_at - self.window.arrival) * 1000.0)



class QueuedItem:
    """A submitted window in the batcher's queues (``dropped``: shed, kept as a tombstone).

    A window to score has its samples in row ``row`` of ``rows`` (None once shed); ``window``
    is the window as submitted, whose samples (a view of the stream's ring) are not read again.
    """

    __slots__ = ("stream", "window", "score", "enqueued", "dropped", "rows", "row")

    def __init__(self, stream: BatchStream, window: Window, score: bool, enqueued: float) -> None:
        self.stream = stream
        self.window = window
        self.score = score
        self.enqueued = enqueued
        self.dropped = False
        self.rows: BatchRows | None = None
        self.row = 0


class BatchStream:
    """One stream's handle on a :class:`MicroBatcher` (from :meth:`MicroBatcher.open_stream`).

    Use it from the event loop it was opened on. ``in_flight`` counts windows submitted and
    not yet delivered; ``shed`` counts this stream's windows dropped under overload. ``frames``:
    its spectrogram frames when the batcher scores per hop (made and read by the worker at its first
    scored window; freed at release); ``trunk``: likewise its trunk frames, for a streaming network.
    """

    __slots__ = ("name", "policy", "keep_samples", "_batcher", "_deliver", "_loop", "_queued", "_room",
                 "in_flight", "submitted", "shed", "closed", "frames", "trunk")

    def __init__(self, batcher: MicroBatcher, name: str, deliver: Callable[[WindowResult], None],
                 loop: asyncio.AbstractEventLoop, policy: Policy, keep_samples: bool = False) -> None:
        self.name = name
        self.policy = policy
        self.keep_samples = keep_samples
        self._batcher = batcher
        self._deliver = deliver
        self._loop = loop
        self._queued: deque[QueuedItem] = deque()  # not yet taken by the worker (guarded by the batcher lock)
        self._room: asyncio.Event | None = None
        self.in_flight = 0
        self.submitted = 0
        self.shed = 0
        self.closed = False
        self.frames: StreamFrames | None = None
        self.trunk: StreamTrunk | None = None

    def submit(self, window: Window, *, score: bool = True) -> None:
        """Queue ``window``; never blocks. Its samples are copied now (so they may be a view that the
        caller overwrites next). ``score=False`` passes it through in order, unscored, uncopied."""
        if self.closed:
            raise BatcherClosedError(f"stream {self.name!r}: submit() after close()")
        self._batcher._submit(self, window, score)
        self.in_flight += 1
        self.submitted += 1

    async def wait_room(self, windows: int = 1) -> None:
        """Wait until ``windows`` more fit under ``max_pending`` in flight (backpressure for
        producers that can wait, such as files read faster than real time and pipes)."""
        limit = max(1, self._batcher.options.max_pending - windows + 1)
        while self.in_flight >= limit:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    async def drain(self) -> None:
        """Wait until every submitted window has been delivered."""
        while self.in_flight > 0:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        """No more windows from this stream; what is queued is still delivered."""
        self.closed = True
        self._batcher._forget(self)
        if self.in_flight == 0:
            self._release()

    def _on_result(self, result: WindowResult) -> None:  # on the stream's loop
        self.in_flight -= 1
        if result.status == "shed":
            self.shed += 1
        if self._room is not None:
            self._room.set()
        self._deliver(result)
        if self.closed and self.in_flight == 0:
            self._release()

    def _release(self) -> None:
        # The consumer (a StreamSession) holds this handle and the handle holds the consumer's
        # bound method: a reference cycle, which only the cyclic GC would free, minutes later,
        # with the stream's buffers in it. Nothing is left to deliver: cut it now, and free the
        # frames (nothing of it is in the worker either).
        self._deliver = _ignore
        self.frames = None
        self.trunk = None


def _ignore(result: WindowResult) -> None:
    pass


def dispatch(results: list[tuple[BatchStream, WindowResult]]) -> None:
    for stream, result in results:
        stream._on_result(result)
