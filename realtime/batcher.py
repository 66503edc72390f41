"""Micro-batcher: the windows of every stream go through one engine, in one worker thread.

    batcher = MicroBatcher(engine, BatcherOptions(max_batch=64, max_wait_ms=5))
    batcher.start()
    stream = batcher.open_stream("call-42", on_result)   # inside the running event loop
    stream.submit(window)                                 # never blocks the loop
    ...  on_result(WindowResult) is called on the loop, in window order (r.logit, r.probability)
    await batcher.aclose()                                # drains what is queued

A batch holds at most ``max_batch`` windows and never more than the engine's
``preferred_batch`` per engine call (``preferred_batch * parallel`` in all): ``--max-batch 64``
on an ONNX CPU engine (fastest at runs of 4) builds batches of 4. A window's samples are copied
once, at submit, from the stream's ring into a row of the batch being assembled
(realtime.batch_rows), and each batch is scored in place through the engine's trusted entry
point (``batch_logits``: no copy, no finiteness pass; windowing rejects non-finite audio at
input, and a non-finite logit is still caught here). Per hop (``hop=``, realtime.hop_scoring),
the worker first computes the batch's features, only each window's new hops, from each stream's
frames: one worker takes batches in queue order, so every stream's frames advance in order (the
pure computation in that step, split like an engine call, see below).

Why one worker: ONNX Runtime (and torch) release the GIL while they compute, so the event loop
keeps receiving audio while a batch runs. Parallelism comes from the engine's intra-op threads
(``threads=``) or, with ``parallel=N``, from the worker splitting each batch into N parts scored
concurrently (:meth:`MicroBatcher.split`: it runs one itself, a pool of N-1 threads the rest; per hop,
the front end's transform and the trunk graph are split the same way; ``parallel="auto"``, the default:
N from the cores, see realtime.sizing): for SpecRNet on ONNX Runtime,
two single-threaded runs of half a batch gave 1.6x the throughput of one run with two intra-op
threads. Batches form by themselves under load; ``max_wait_ms`` only delays a lone window when
the worker is idle, hoping for company.

Overload is explicit, never unbounded delay. The queue holds at most ``max_queue`` windows in
all and ``max_pending`` per stream; a window over either bound makes the batcher drop (shed) the
oldest queued window of its stream (or, when the whole queue is full, of the live stream with the
most queued windows). A live window that has waited ``max_delay_ms`` since its arrival when the worker
reaches it is shed too: its score would come too late to matter. A shed window still comes back,
in order, as a result with ``status="shed"``, so a consumer sees every seq exactly once. Streams
opened with ``policy="block"`` (files, pipes) are never shed.

Results carry the engine's logit, not a probability: the session aggregates logits, so a file's
verdict never goes through a clipped probability and back (``WindowResult.probability``).
Delivery: the worker hands each finished batch to every event loop concerned with one
``loop.call_soon_threadsafe``; results of one stream arrive in the order submitted. An exception
from the engine (or a non-finite logit) turns that batch's windows into ``status="error"``
results; the worker goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from .batch_rows import BatchRows, BufferPool
from .batch_stream import (
    POLICIES,
    BatcherClosedError,
    BatchStream,
    Policy,
    QueuedItem,
    WindowResult,
    dispatch,
)
from .hop_scoring import HopScoring
from .sizing import inference_workers
from .windowing import Window

__all__ = ["BatcherOptions", "MicroBatcher", "BatchStream", "WindowResult", "BatcherStats",
           "BatcherClosedError", "ScoringEngine"]

log = logging.getLogger(__name__)

_NO_SAMPLES = np.zeros(0, dtype=np.float32)


class ScoringEngine(Protocol):
    """What the batcher needs of :class:`engines.Engine`: its window length, the run size it is
    fastest at, and calibrated spoof logits [B] of one trusted run (no validation or re-splitting)."""

    window_samples: int
    preferred_batch: int

    def batch_logits(self, windows: np.ndarray) -> np.ndarray: ...


def _positive_int(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True, slots=True)
class BatcherOptions:
    """Micro-batching and overload limits.

    ``max_queue`` bounds memory: a 4-s window at 16 kHz is 256 KB, so 256 windows are 64 MB.
    ``max_pending`` bounds one stream's share and its latency: at a 0.5-s hop, 8 queued
    windows are 4 s of backlog.
    """

    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_pending: int = 8
    max_delay_ms: float = 1000.0  # live windows older than this when their turn comes are shed
    # Engine calls one batch is split over (see MicroBatcher); "auto": from the cores (realtime.sizing).
    parallel: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        _positive_int("max_batch", self.max_batch)
        if self.parallel != "auto" and (isinstance(self.parallel, bool) or not isinstance(self.parallel, int)
                                        or self.parallel < 1):
            raise ValueError(f"parallel must be an integer >= 1 or 'auto', got {self.parallel!r}")
        _positive_int("max_queue", self.max_queue)
        _positive_int("max_pending", self.max_pending)
        for name, hi in (("max_wait_ms", 1000.0), ("max_delay_ms", 600_000.0)):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 <= w <= hi:
                raise ValueError(f"{name} must be a number of milliseconds in 0..{hi:g}, got {w!r}")


@dataclass(slots=True)
class BatcherStats:
    """Counters for health checks and benchmarks (a snapshot, see :meth:`MicroBatcher.stats`)."""

    streams: int = 0
    queued: int = 0
    batches: int = 0
    scored: int = 0
    skipped: int = 0
    shed: int = 0
    errors: int = 0
    busy_s: float = 0.0  # time spent inside the engine
    pool_bytes: int = 0  # batch buffers held for reuse, shared by every stream

    @property
    def mean_batch(self) -> float:
        return self.scored / self.batches if self.batches else 0.0


class MicroBatcher:
    """Windows from all streams -> ``engine.batch_logits`` in batches, in one worker thread."""

    def __init__(self, engine: ScoringEngine, options: BatcherOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, hop: HopScoring | None = None) -> None:
        self.engine = engine
        self.hop = hop  # None: whole windows through engine.batch_logits
        options = options if options is not None else BatcherOptions()
        parallel, self.workers = inference_workers(engine, options.parallel)  # and why, in words
        self.options = replace(options, parallel=parallel)
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[QueuedItem] = deque()  # global FIFO; shed items stay as tombstones
        self._size = 0  # items in _queue that are not tombstones
        self._streams: set[BatchStream] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stats = BatcherStats()
        self._pool: ThreadPoolExecutor | None = None
        # Windows per batch: what one round of `parallel` engine calls of its preferred size takes.
        self._batch = min(self.options.max_batch, engine.preferred_batch * self.options.parallel)
        self._buffers = BufferPool((self._batch, engine.window_samples), clock=clock)
        self._batches: deque[BatchRows] = deque()  # of the queued windows to score, oldest first

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> MicroBatcher:
        if self._thread is not None:
            raise RuntimeError("MicroBatcher.start() called twice")
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting windows; the worker scores what is queued, then exits."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    async def aclose(self) -> None:
        """:meth:`stop`, then wait (off the loop) for the queue to drain and the worker to exit.

        Results of the drained windows are delivered while the loop runs this coroutine.
        """
        self.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def __enter__(self) -> MicroBatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # -- streams ---------------------------------------------------------------------------

    def open_stream(self, name: str, deliver: Callable[[WindowResult], None], *,
                    policy: Policy = "shed", keep_samples: bool = False) -> BatchStream:
        """Register a stream; ``deliver`` is called on the current running loop, in order.

        ``policy="shed"`` is for live audio (overload drops windows); ``"block"`` is for
        producers that await :meth:`BatchStream.wait_room` before each submit. ``keep_samples``:
        scored windows come back with their samples (their batch buffer then stays in use until
        the results are delivered, not only until scored: ask only when needed, for alert clips).
        """
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} not accepted; accepted: {', '.join(POLICIES)}")
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop: deliveries need one
        stream = BatchStream(self, name, deliver, loop, policy, keep_samples)
        with self._cond:
            if self._stopping:
                raise BatcherClosedError(f"stream {name!r}: the batcher is closed")
            self._streams.add(stream)
        return stream

    def _forget(self, stream: BatchStream) -> None:
        with self._cond:
            if not stream._queued:  # else the worker forgets it after taking its last window
                self._streams.discard(stream)

    def stats(self) -> BatcherStats:
        with self._cond:
            s = replace(self._stats)
            s.streams = len(self._streams)
            s.queued = self._size
            s.pool_bytes = self._buffers.nbytes
        return s

    # -- submission (event loop side) ------------------------------------------------------

    @staticmethod
    def _drop(item: QueuedItem) -> None:
        # Caller holds the lock. The item stays queued as a tombstone (its "shed" result is delivered in order).
        item.dropped = True
        if item.rows is not None:
            item.rows.remove(item)
            item.rows = None

    def _drop_oldest(self, stream: BatchStream) -> None:
        self._drop(stream._queued.popleft())  # caller holds the lock
        self._size -= 1

    def _submit(self, stream: BatchStream, window: Window, score: bool) -> None:
        if score and window.samples.shape != (self.engine.window_samples,):
            raise ValueError(f"stream {stream.name!r}: window of shape {window.samples.shape} not accepted; "
                             f"the engine takes ({self.engine.window_samples},)")
        opts = self.options
        with self._cond:
            if self._stopping:
                raise BatcherClosedError(f"stream {stream.name!r}: the batcher is closed")
            if len(stream._queued) >= opts.max_pending:
                self._drop_oldest(stream)
            elif self._size >= opts.max_queue:
                # The live stream with the most queued windows pays (ties: this one, if it has any).
                # "block" streams are never shed: they wait for room under max_pending each
                # (wait_room), so with only them queued the queue may pass max_queue by that much.
                live = [s for s in self._streams if s.policy == "shed" and s._queued]
                if live:
                    self._drop_oldest(max(live, key=lambda s: (len(s._queued), s is stream)))
            item = QueuedItem(stream, window, score, self._clock())
            if score:  # the one copy: ring -> the newest batch's next row (a new batch when full)
                if not self._batches or self._batches[-1].full:
                    self._batches.append(BatchRows(self._buffers.take()))
                item.rows = self._batches[-1]
                item.rows.add(item, window.samples)
            self._queue.append(item)
            stream._queued.append(item)
            self._size += 1
            if self._size == 1 or self._size == self._batch:
                self._cond.notify()

    # -- worker thread ---------------------------------------------------------------------

    def _take(self) -> tuple[list[QueuedItem], BatchRows | None] | None:
        """Block until a batch is due; return its items in queue order (tombstones too) and rows."""
        opts = self.options
        wait_s = opts.max_wait_ms / 1000.0
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                if not self._cond.wait(self._buffers.keep_s):  # idle this long: memory goes back
                    self._buffers.trim()
            # Wait for company, up to max_wait after the oldest queued window.
            deadline = self._queue[0].enqueued + wait_s
            while self._size < self._batch and not self._stopping:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            rows = self._batches.popleft() if self._batches else None  # new windows go to a new one
            batch: list[QueuedItem] = []
            too_old = self._clock() - opts.max_delay_ms / 1000.0
            # Batches fill in queue order: take everything up to the next batch's first window.
            while self._queue and self._queue[0].rows in (None, rows):
                item = self._queue.popleft()
                batch.append(item)
                if item.dropped:
                    continue
                item.stream._queued.popleft()  # always its stream's oldest: both queues are FIFO
                self._size -= 1
                if item.score and item.stream.policy == "shed" and item.window.arrival < too_old:
                    self._drop(item)
            return batch, rows

    def _score(self, batch: list[QueuedItem], x: np.ndarray) -> np.ndarray:
        run = self.engine.batch_logits
        if self.hop is not None:  # in this one worker, in queue order: each stream's frames advance in order
            x, run = self.hop.features(batch, x, self.split), self.hop.network
        return self.split(lambda part: np.asarray(run(part), dtype=np.float64).reshape(-1), x)

    def split(self, fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
        """``fn(x)`` as up to ``parallel`` concurrent calls on views of ``x``'s rows (this thread runs
        the first part), concatenated: for a batch, each at most preferred_batch long. ONNX Runtime
        sessions are thread-safe and release the GIL, as numpy's FFT and BLAS do. Worker thread only."""
        parts = min(self.options.parallel, len(x))
        if parts <= 1:
            return fn(x)
        chunks = np.array_split(x, parts)
        assert self._pool is not None
        futures = [self._pool.submit(fn, c) for c in chunks[1:]]
        first = fn(chunks[0])
        return np.concatenate([first, *(f.result() for f in futures)])

    def _run(self) -> None:
        if self.options.parallel > 1:
            self._pool = ThreadPoolExecutor(self.options.parallel - 1, thread_name_prefix="engine")
        self._warm_up()
        try:
            while (taken := self._take()) is not None:
                self._run_batch(*taken)
                del taken  # while waiting for the next batch, hold nothing of this one (its buffer)
        finally:
            self._buffers.clear()  # a closed batcher keeps no memory
            if self._pool is not None:
                self._pool.shutdown()

    def _warm_up(self) -> None:
        """Let the engine reach its memory high-water mark for ``parallel`` concurrent calls now."""
        warm_up = self.hop.warm_up if self.hop is not None else getattr(self.engine, "warm_up", None)  # doubles: none
        if warm_up is None:
            return
        try:
            warm_up(self.options.parallel)
        except Exception as e:  # noqa: BLE001 - a real batch will report the failure to its streams
            log.warning("engine warm-up failed (%s: %s); scoring goes on", type(e).__name__, e)

    def _run_batch(self, batch: list[QueuedItem], rows: BatchRows | None) -> None:
        logits: np.ndarray | None = None
        error: str | None = None
        done_at = self._clock()
        if rows is not None and (n := len(rows)):
            rows.items.clear()  # they refer to rows: cut the cycle so its buffer is free once delivered
            t0 = self._clock()
            try:
                logits = self._score(batch, rows.data[:n])
                if logits.shape != (n,):
                    raise ValueError(f"engine returned {logits.shape[0]} scores for {n} windows")
                if not np.isfinite(logits).all():  # would poison the stream's running aggregate
                    raise ValueError("engine returned a logit that is NaN or infinite")
            # Any engine failure (ONNX Runtime's are untyped) is reported on this batch's windows only.
            except Exception as e:  # noqa: BLE001
                error = f"{type(e).__name__}: {e}"
                log.error("engine failed on a batch of %d windows (%s)", n, error)
                logits = None
            done_at = self._clock()
            with self._cond:
                self._stats.batches += 1
                self._stats.busy_s += done_at - t0
        self._deliver(batch, rows, logits, error, done_at)

    def _deliver(self, batch: list[QueuedItem], rows: BatchRows | None, logits: np.ndarray | None,
                 error: str | None, done_at: float) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[BatchStream, WindowResult]]] = {}
        counts = {"scored": 0, "skipped": 0, "shed": 0, "error": 0}
        for it in batch:
            keep = it.stream.keep_samples and it.score and not it.dropped
            # The submitted window's samples are a stale view of the ring by now: never passed on.
            w = replace(it.window, samples=rows.data[it.row] if keep and rows is not None else _NO_SAMPLES)
            r = (WindowResult(w, "shed", None, it.enqueued) if it.dropped
                 else WindowResult(w, "skipped", None, done_at) if not it.score
                 else WindowResult(w, "error", None, done_at, error) if logits is None
                 else WindowResult(w, "scored", float(logits[it.row]), done_at))
            counts[r.status] += 1
            by_loop.setdefault(it.stream._loop, []).append((it.stream, r))
        with self._cond:
            self._stats.scored += counts["scored"]
            self._stats.skipped += counts["skipped"]
            self._stats.shed += counts["shed"]
            self._stats.errors += counts["error"]
            for it in batch:  # forget streams that are closed and fully delivered
                st = it.stream
                if st.closed and not st._queued and st in self._streams:
                    self._streams.discard(st)
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(dispatch, results)
            except RuntimeError:  # that loop is closed: nobody is left to receive these
                log.warning("dropped %d results: their event loop is closed", len(results))
