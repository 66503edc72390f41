"""Durable event log: every score, summary and error event in a store, written off the event loop.

    log = open_event_log("events.jsonl")          # or "sqlite:events.db", "redis://...", "postgresql://..."
    detector = LiveDetector(engine, sinks=[log])  # the log is a sink like any other
    ...
    log.close()                                   # writes what is queued, syncs, closes

CLI: ``--events FILE.jsonl``, ``--events sqlite:PATH`` (``--events-fsync SECONDS``), or a store
shared by many servers: ``--events redis://HOST:PORT/STREAM`` (:mod:`realtime.eventlog_redis`) or
``--events postgresql://...`` (:mod:`realtime.eventlog_postgres`).

What is recorded: ``score`` events (alerts are score events with ``"alert": true``),
``summary`` and ``error`` events, exactly as the clients get them (docs/protocol.md);
``ready`` replies are not. Restarting on the same file appends.

Every store is an :class:`~realtime.eventlog_base.EventLog`: the event loop only queues, a
writer thread commits batches (full queues, failing disks and unreachable stores:
:mod:`realtime.eventlog_base`). What is durable when depends on the store: the JSONL file
(:mod:`realtime.eventlog_jsonl`), SQLite (:mod:`realtime.eventlog_sqlite`), Redis, PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path

from .eventlog_base import EventLog, EventLogError, EventLogOptions
from .eventlog_jsonl import JsonlEventLog
from .eventlog_postgres import PostgresEventLog
from .eventlog_redis import RedisEventLog
from .eventlog_sqlite import SQLITE_PREFIX, SqliteEventLog

# What callers of open_event_log need: the function, what it returns and raises, its options.
__all__ = ["open_event_log", "EventLog", "EventLogError", "EventLogOptions"]


def open_event_log(spec: str | Path, options: EventLogOptions | None = None) -> EventLog:
    """``PATH`` (JSON lines), ``sqlite:PATH``, ``redis://HOST:PORT/STREAM`` or ``postgresql://...``;
    raises :class:`EventLogError` if unusable."""
    s = str(spec)
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", s)
    scheme = m.group(1).lower() if m else ""
    if scheme in ("redis", "rediss"):
        return RedisEventLog(s, options)
    if scheme in ("postgresql", "postgres"):
        return PostgresEventLog(s, options)
    if scheme:
        raise EventLogError(f"--events {scheme}://...: not a known store; accepted: FILE.jsonl, sqlite:PATH, "
                            "redis://HOST:PORT/STREAM, postgresql://USER@HOST:PORT/DB")
    if s.startswith(SQLITE_PREFIX):
        path = s[len(SQLITE_PREFIX):]
        if not path:
            raise EventLogError("--events sqlite: needs a path, e.g. sqlite:events.db")
        return SqliteEventLog(path, options)
    if not s:
        raise EventLogError("--events needs a path: FILE.jsonl or sqlite:PATH")
    return JsonlEventLog(s, options)
