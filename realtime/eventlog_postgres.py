"""Event log in a PostgreSQL table, shared by many servers: ``--events postgresql://...``.

One transaction per batch (psycopg 3, pipelined inserts): a batch is committed whole or not at
all, and a committed batch is as durable as PostgreSQL makes it (``synchronous_commit``).
Table ``detector_events`` (created if missing, with its indexes)::

    id         bigserial    insertion order
    uid        text unique  the writer's event id: a batch retried after a lost commit
                            acknowledgement is skipped (ON CONFLICT DO NOTHING), so each event
                            is stored exactly once
    logged_at  timestamptz  time of the transaction
    source     text         which server wrote it (host:pid; a pod's name on Kubernetes)
    type       text         score | summary | error
    stream     text         null for errors that concern no stream
    seq        integer      score events: the window number within the stream
    event      jsonb        the event as sent to clients

Indexes: ``(stream, seq)`` (one call's events), ``(logged_at)`` (time ranges, retention by
``DELETE ... WHERE logged_at < ...``) and ``(type, logged_at)`` (recent alerts, errors).
A stream that moved to another server after a failover has events from two ``source``s;
``seq`` restarts at 0 on the new one (order by ``logged_at, id``).

When PostgreSQL is down or restarting, the writer holds the events and reconnects (see
:mod:`realtime.eventlog_base`). URL: anything libpq accepts, ``postgresql://USER@HOST:PORT/DB``
(``postgres://`` too); prefer ``PGPASSWORD`` or ``~/.pgpass`` to a password in the URL.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from .eventlog_base import EventLog, EventLogError, EventLogOptions, SinkUnavailable
from .events import Event, ScoreEvent

__all__ = ["PostgresEventLog", "PG_SCHEMA", "PG_TABLE", "PG_PREFIXES"]

PG_PREFIXES = ("postgresql://", "postgres://")
PG_TABLE = "detector_events"
# The advisory lock serialises replicas that start at once: concurrent CREATE ... IF NOT EXISTS
# of the same table can still fail on PostgreSQL's catalog (a unique violation on pg_type).
PG_SCHEMA = f"""
SELECT pg_advisory_xact_lock(hashtext('{PG_TABLE}'));
CREATE TABLE IF NOT EXISTS {PG_TABLE} (
    id bigserial PRIMARY KEY,
    uid text NOT NULL UNIQUE,
    logged_at timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL,
    type text NOT NULL,
    stream text,
    seq integer,
    event jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS {PG_TABLE}_stream_seq ON {PG_TABLE} (stream, seq);
CREATE INDEX IF NOT EXISTS {PG_TABLE}_logged_at ON {PG_TABLE} (logged_at);
CREATE INDEX IF NOT EXISTS {PG_TABLE}_type_logged_at ON {PG_TABLE} (type, logged_at);
"""
_INSERT = (f"INSERT INTO {PG_TABLE} (uid, source, type, stream, seq, event) VALUES (%s, %s, %s, %s, %s, %s) "
           "ON CONFLICT (uid) DO NOTHING")
# Bounds every wait on the server: a hung or unreachable server is "unavailable", never a stuck writer.
_CONNECT = {"connect_timeout": 5, "tcp_user_timeout": 10_000, "keepalives": 1, "keepalives_idle": 10,
            "keepalives_interval": 5, "keepalives_count": 2, "application_name": "realtime-detect"}


def _redact(url: str) -> str:
    """``url`` with any password replaced (it goes into logs)."""
    try:
        u = urlsplit(url)
    except ValueError:
        return url.split("@")[-1]
    if u.password is None:
        return url
    return url.replace(f":{u.password}@", ":***@", 1)


class PostgresEventLog(EventLog):
    """Inserts each batch in one transaction (see the module doc)."""

    def __init__(self, url: str, options: EventLogOptions | None = None) -> None:
        shown = _redact(url)
        try:
            import psycopg
        except ImportError:
            raise EventLogError(f"--events {shown}: needs the Python package 'psycopg': "
                                "pip install 'realtime-detect[sinks]' -c constraints.txt") from None
        self._pg = psycopg
        self._url = url
        self._source = f"{socket.gethostname()}:{os.getpid()}"
        self._conn: psycopg.Connection | None = None
        self._errors = (psycopg.Error,)
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise EventLogError(f"--events {shown}: not a PostgreSQL URL ({_first_line(e)}); "
                                "accepted: postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE") from None
        try:  # at start-up, an unreachable server or a refused login is an error, like a bad path
            with self._connect().transaction():
                self._conn.execute(PG_SCHEMA)  # type: ignore[union-attr]
        except psycopg.Error as e:
            self._drop_conn()
            raise EventLogError(f"--events {shown}: cannot use PostgreSQL ({_first_line(e)})") from None
        super().__init__(shown, options)

    def _connect(self):  # -> psycopg.Connection
        if self._conn is None or self._conn.closed:
            self._conn = self._pg.connect(self._url, **_CONNECT)
        return self._conn

    def _write(self, batch: list[Event]) -> None:
        rows = [(uid, self._source, ev.type, getattr(ev, "stream", None),
                 ev.seq if isinstance(ev, ScoreEvent) else None, self._pg.types.json.Jsonb(ev.to_dict()))
                for ev, uid in zip(batch, self.uids(batch), strict=True)]
        try:
            conn = self._connect()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT, rows)
        except (self._pg.OperationalError, self._pg.InterfaceError) as e:  # refused, lost, shutting down
            self._drop_conn()
            raise SinkUnavailable(_first_line(e)) from None

    def _drop_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._pg.Error:
                pass
            self._conn = None

    def _sync(self) -> None:
        pass  # a commit is durable per the server's synchronous_commit

    def _close(self) -> None:
        self._drop_conn()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
