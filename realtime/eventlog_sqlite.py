"""Event log in a SQLite database: ``--events sqlite:PATH`` (see :mod:`realtime.eventlog`).

WAL journal, one transaction per batch. Table ``events(id, logged_at, type, stream, seq,
json)`` with indexes on ``(stream, seq)`` and ``type``; ``json`` is the event line.
``synchronous=NORMAL`` (a committed batch survives the process dying; an OS crash may roll
back the last ones: SQLite's WAL trade-off), ``FULL`` when ``fsync_interval_s`` is 0. Readers
(a dashboard, ``sqlite3``) can query while it runs.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .eventlog_base import EventLog, EventLogError, EventLogOptions, log
from .events import Event, ScoreEvent

__all__ = ["SqliteEventLog", "SQLITE_PREFIX", "SCHEMA"]

SQLITE_PREFIX = "sqlite:"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,       -- insertion order
    logged_at REAL NOT NULL,      -- unix time of the commit
    type TEXT NOT NULL,           -- score | summary | error
    stream TEXT,                  -- null for errors that concern no stream
    seq INTEGER,                  -- score events: the window number within the stream
    json TEXT NOT NULL            -- the event exactly as sent to clients
);
CREATE INDEX IF NOT EXISTS events_stream_seq ON events (stream, seq);
CREATE INDEX IF NOT EXISTS events_type ON events (type);
"""


class SqliteEventLog(EventLog):
    """SQLite in WAL mode, one transaction per batch (see the module doc)."""

    _errors = (OSError, sqlite3.Error)  # a batch SQLite refuses is lost, like one a full disk refuses

    def __init__(self, path: str | Path, options: EventLogOptions | None = None) -> None:
        self.path = Path(path)
        options = options if options is not None else EventLogOptions()
        try:
            # Opened here so that a bad path fails at start-up; used only by the writer thread.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise EventLogError(f"--events sqlite:{path}: WAL journal not available (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if options.fsync_interval_s == 0 else 'NORMAL'}")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise EventLogError(f"--events sqlite:{path}: not usable as an event log ({e})") from None
        super().__init__(SQLITE_PREFIX + str(self.path), options)

    def _write(self, batch: list[Event]) -> None:
        now = time.time()
        rows = []
        for ev in batch:
            seq = ev.seq if isinstance(ev, ScoreEvent) else None
            rows.append((now, ev.type, getattr(ev, "stream", None), seq, ev.to_json()))
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO events (logged_at, type, stream, seq, json) VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _sync(self) -> None:
        pass  # SQLite syncs on commit/checkpoint according to PRAGMA synchronous

    def _close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as e:
            log.error("event log %s: close failed (%s)", self.target, e)
