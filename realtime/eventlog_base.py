"""What every event log (:mod:`realtime.eventlog`) is built on: the sink side, the writer thread,
the options and the counts. Each store subclasses :class:`EventLog`.

Batches. The sink only appends the event to a queue (the event loop never touches the
store); one writer thread takes everything queued at once (a *batch*) and commits it (how,
and what is durable when: :mod:`realtime.eventlog_jsonl`, :mod:`realtime.eventlog_sqlite`,
:mod:`realtime.eventlog_redis`, :mod:`realtime.eventlog_postgres`).

A full queue is explicit, never silent: the queue holds at most ``max_queue`` score events;
past that, new *score* events are dropped, counted (:meth:`EventLog.stats`, ``/healthz``),
logged once per ``warn_every_s``, and written into the log itself as an ``error`` event
with code ``events_dropped`` as soon as the writer catches up. Summaries and errors are
never dropped (there are a few per stream, so they cannot grow without bound). A batch that
cannot be written (disk full, I/O error) is counted as ``failed`` and logged; the writer
goes on with the next one; its error line is repeated at most once per ``warn_every_s``, and
a store that cannot even be closed (``/dev/full``) is one more error line, never a traceback.

Network stores (Redis, PostgreSQL) can be down for a while (a restart, a failover). Their
``_write`` raises :class:`SinkUnavailable` then: the writer keeps the batch, reconnects with
backoff (one warning per ``warn_every_s``) and writes it again, in order, before anything
newer; meanwhile events queue under the same ``max_queue`` rule, so a long outage ends in
counted drops, never in unbounded memory. At close, an unreachable store is retried for at
most ``close_timeout_s``; what is still unwritten then is counted as ``failed`` and logged.
Every event carries a ``uid`` (this log's random id and a counter) so that a batch whose
commit was acknowledged but whose acknowledgement was lost is recognised when written again.

The log may trail the clients by the events still queued when the process dies: the clients
are never made to wait for the disk.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from .errors import RealtimeError
from .events import ErrorEvent, Event, ReadyEvent, ScoreEvent

__all__ = ["EventLog", "EventLogOptions", "EventLogStats", "EventLogError", "SinkUnavailable", "log"]

# One logger for every store, named after the front door: configuring "realtime.eventlog" covers them all.
log = logging.getLogger("realtime.eventlog")


class EventLogError(RealtimeError):
    """An event log that cannot be opened (bad path, not a log, locked database, bad URL)."""


class SinkUnavailable(Exception):
    """Raised by ``_write`` when the store cannot be reached: the batch is kept and retried."""


@dataclass(frozen=True, slots=True)
class EventLogOptions:
    fsync_interval_s: float = 1.0  # JSONL: fsync at most this often (0: every batch); SQLite: 0 -> FULL
    max_queue: int = 10_000  # score events waiting for the writer before new ones are dropped
    warn_every_s: float = 10.0  # at most one "dropped" / "unavailable" warning per this many seconds
    close_timeout_s: float = 10.0  # at close, how long an unreachable network store is retried
    retry_max_s: float = 2.0  # longest wait between reconnection attempts (backoff doubles up to it)

    def __post_init__(self) -> None:
        if not 0 <= self.fsync_interval_s <= 3600:
            raise ValueError(f"fsync_interval_s must be 0..3600 seconds, got {self.fsync_interval_s!r}")
        for name in ("close_timeout_s", "retry_max_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be > 0 and <= 3600 seconds, got {getattr(self, name)!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ValueError(f"max_queue must be an integer >= 1, got {self.max_queue!r}")


@dataclass(slots=True)
class EventLogStats:
    written: int = 0  # events committed
    batches: int = 0
    dropped: int = 0  # score events dropped on a full queue
    failed: int = 0  # events of batches that could not be written
    queued: int = 0  # waiting for the writer, including a batch held while the store is unreachable
    retries: int = 0  # batches written again after the store was unreachable
    available: bool = True  # False while a network store cannot be reached


class EventLog:
    """Base: the sink side (any thread, normally the event loop) and the writer thread.

    Subclasses open the store in ``__init__`` (so a bad path fails at start-up) and
    implement :meth:`_write` (commit one batch) and :meth:`_sync` / :meth:`_close`.
    """

    def __init__(self, target: str, options: EventLogOptions | None = None) -> None:
        self.target = target
        self.options = options if options is not None else EventLogOptions()
        self._cond = threading.Condition()
        self._queue: deque[Event] = deque()
        self._scores = 0  # score events in _queue (what max_queue bounds)
        self._dropped_unrecorded = 0  # dropped since the last events_dropped record
        self._last_warning = -float("inf")
        self._last_report: dict[str, float] = {}  # writer thread only
        self._closing = False
        self._stats = EventLogStats()
        self._held = 0  # events of the batch being retried (counted in stats().queued)
        self._last_unavailable_warning = -float("inf")  # writer thread only
        self._stop = threading.Event()  # set by close(): cuts a reconnection backoff short
        self._give_up_at: float | None = None  # after close(): when an unreachable store is given up on
        # Unique across processes and restarts: lets a store skip a batch it already committed.
        self._uid_prefix = uuid.uuid4().hex[:16]
        self._uids = itertools.count()
        self._batch_uids: tuple[list[Event] | None, list[str]] = (None, [])
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    # -- sink side ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, ReadyEvent):
            return
        is_score = isinstance(event, ScoreEvent)
        warn = 0
        with self._cond:
            # After close() nothing can be written any more: counted like a full queue.
            if self._closing or (is_score and self._scores >= self.options.max_queue):
                self._stats.dropped += 1
                self._dropped_unrecorded += not self._closing
                now = time.monotonic()
                if now - self._last_warning >= self.options.warn_every_s:
                    self._last_warning = now
                    warn = self._stats.dropped
            else:
                self._queue.append(event)
                self._scores += is_score
                self._cond.notify()
        if warn:
            log.warning("event log %s: %s; %d events dropped so far", self.target,
                        "closed" if self._closing else f"writer behind ({self.options.max_queue} score events queued)",
                        warn)

    def stats(self) -> EventLogStats:
        with self._cond:
            st = self._stats
            return EventLogStats(st.written, st.batches, st.dropped, st.failed, len(self._queue) + self._held,
                                 st.retries, st.available)

    def close(self) -> None:
        """Write what is queued, sync, close the store (blocks; call it off the event loop)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread --------------------------------------------------------------------

    def _take(self, timeout: float | None) -> list[Event] | None:
        """The next batch; ``[]`` when ``timeout`` passed with nothing queued; None at the end."""
        with self._cond:
            if not self._queue and not self._closing and not self._dropped_unrecorded:
                self._cond.wait(timeout)
            if not self._queue and not self._dropped_unrecorded:
                return None if self._closing else []
            batch = list(self._queue)
            self._queue.clear()
            self._scores = 0
            if self._dropped_unrecorded:
                batch.append(ErrorEvent(code="events_dropped", message=(
                    f"event log queue full ({self.options.max_queue} score events): "
                    f"{self._dropped_unrecorded} score events were not recorded")))
                self._dropped_unrecorded = 0
            return batch

    def _run(self) -> None:
        interval = self.options.fsync_interval_s
        last_sync = time.monotonic()
        dirty = False  # written since the last fsync
        try:
            while True:
                # While something is unsynced, wake up in time to sync it within the interval.
                timeout = max(0.0, last_sync + interval - time.monotonic()) if dirty else None
                batch = self._take(timeout)
                if batch is None:
                    break
                if batch:
                    if not self._commit(batch):
                        continue
                    dirty = True
                if dirty and time.monotonic() - last_sync >= interval:
                    self._sync_logged()
                    last_sync, dirty = time.monotonic(), False
            if dirty:
                self._sync_logged()
        finally:
            try:
                self._close()
            except OSError as e:  # the thread ends either way; say so once
                log.error("event log %s: close failed (%s: %s)", self.target, type(e).__name__, e)

    def _report(self, kind: str, message: str) -> None:
        """An error line for a failing disk, at most one per ``warn_every_s`` for each kind:
        a full disk fails every batch, and the counts are in :meth:`stats` anyway."""
        now = time.monotonic()
        if now - self._last_report.get(kind, -float("inf")) >= self.options.warn_every_s:
            self._last_report[kind] = now
            log.error("event log %s: %s", self.target, message)

    def uids(self, batch: list[Event]) -> list[str]:
        """Ids for the events of ``batch``, unique across logs and restarts, and the same each
        time the same batch is retried (writer thread only)."""
        if self._batch_uids[0] is not batch:
            self._batch_uids = (batch, [f"{self._uid_prefix}-{next(self._uids)}" for _ in batch])
        return self._batch_uids[1]

    def _commit(self, batch: list[Event]) -> bool:
        """Write one batch, retrying while the store is unreachable; False if it was not written."""
        delay, retried = 0.05, False
        while True:
            try:
                self._write(batch)
            except SinkUnavailable as e:
                now = time.monotonic()
                if self._stop.is_set():  # closing: retry for at most close_timeout_s, all batches together
                    if self._give_up_at is None:
                        self._give_up_at = now + self.options.close_timeout_s
                    if now >= self._give_up_at:
                        return self._lost(batch, e)
                self._unavailable(batch, e)
                retried = True
                if self._give_up_at is None:
                    self._stop.wait(delay)  # close() cuts the backoff short
                else:
                    time.sleep(min(delay, self._give_up_at - now))
                delay = min(2 * delay, self.options.retry_max_s)
                continue
            except self._errors as e:  # this batch cannot be written (full disk, a rejected row)
                return self._lost(batch, e)
            with self._cond:
                self._held = 0
                self._stats.written += len(batch)
                self._stats.batches += 1
                self._stats.retries += retried
                back = not self._stats.available
                self._stats.available = True
            if back:
                log.warning("event log %s: store reachable again; the held events are written", self.target)
            return True

    def _unavailable(self, batch: list[Event], e: SinkUnavailable) -> None:
        with self._cond:
            self._held = len(batch)
            self._stats.available = False
            queued = len(self._queue)
        now = time.monotonic()
        if now - self._last_unavailable_warning >= self.options.warn_every_s:
            self._last_unavailable_warning = now
            log.warning("event log %s: store unreachable (%s); %d events waiting, reconnecting",
                        self.target, e, len(batch) + queued)

    def _lost(self, batch: list[Event], e: BaseException) -> bool:
        with self._cond:
            self._held = 0
            self._stats.failed += len(batch)
            failed = self._stats.failed
        self._report("write", f"{failed} events not written so far ({type(e).__name__}: {e})")
        return False

    #: Errors of ``_write`` that lose the batch (counted as failed); others are bugs.
    _errors: tuple[type[BaseException], ...] = (OSError,)

    def _sync_logged(self) -> None:
        try:
            self._sync()
        except OSError as e:
            self._report("sync", f"fsync failed ({e})")

    def _write(self, batch: list[Event]) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
