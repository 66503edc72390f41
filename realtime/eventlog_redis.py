"""Event log on a Redis stream, shared by many servers: ``--events redis://HOST:PORT/STREAM``.

Each event is one stream entry (``XADD``) with the fields ``type``, ``stream``, ``seq`` (score
events; empty otherwise), ``source`` (which server wrote it), ``uid`` and ``json`` (the event
exactly as sent to clients). A batch is one ``MULTI``/``EXEC`` round trip: all of it is in
the stream or none of it. Readers use consumer groups (``XREADGROUP``) or ``XRANGE``.

The stream is capped (``XADD MAXLEN ~ N``; ``?maxlen=N`` in the URL, default 1,000,000
entries): Redis trims the oldest entries in whole nodes, so the length stays near N, and a
consumer that falls that far behind loses the oldest entries (Redis memory is the bound).

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an acknowledged
batch survives the Redis process being killed; ``everysec`` may lose the last second. When
Redis is down or restarting, the writer holds the events and reconnects (see
:mod:`realtime.eventlog_base`). If the connection breaks after ``EXEC`` ran but before its reply
arrived, the batch is written again: entries are at least once, and ``uid`` tells the
copies apart.

URL: ``redis://[[USER]:PASSWORD@]HOST[:PORT]/STREAM[?maxlen=N]`` (``rediss://`` for TLS);
STREAM is the key of the stream, percent-encoded if need be. Prefer the ``REDISCLI_AUTH``
environment variable to a password in the URL (a command line is visible to other users).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .eventlog_base import EventLog, EventLogError, EventLogOptions, SinkUnavailable
from .events import Event, ScoreEvent

__all__ = ["RedisTarget", "RedisEventLog", "parse_redis_url", "DEFAULT_MAXLEN"]

DEFAULT_MAXLEN = 1_000_000
TIMEOUT_S = 5.0  # connect and reply timeout: a hung Redis is "unavailable", never a stuck writer
_ACCEPTED = "accepted: redis://[[USER]:PASSWORD@]HOST[:PORT]/STREAM[?maxlen=N]"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    host: str
    port: int
    key: str  # the Redis stream's key
    maxlen: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def display(self) -> str:
        """The URL without the password (it goes into logs)."""
        auth = f"{self.username or ''}:***@" if self.password else (f"{self.username}@" if self.username else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{auth}{host}:{self.port}/{self.key}"


def parse_redis_url(url: str) -> RedisTarget:
    """Validate ``url``; raises :class:`EventLogError` naming what is wrong and what is accepted."""
    try:
        u = urlsplit(url)
        port = u.port or 6379
    except ValueError as e:  # a port that is not a number or out of range
        raise EventLogError(f"--events {_redact(url)}: {e}; {_ACCEPTED}") from None
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise EventLogError(f"--events {_redact(url)}: no host; {_ACCEPTED}")
    key = unquote(u.path[1:]) if u.path.startswith("/") else ""
    if not key:
        raise EventLogError(f"--events {_redact(url)}: no stream key after the host; {_ACCEPTED}")
    query = parse_qs(u.query, keep_blank_values=True)
    unknown = set(query) - {"maxlen"}
    if unknown:
        raise EventLogError(f"--events {_redact(url)}: unknown parameter {sorted(unknown)[0]!r}; {_ACCEPTED}")
    maxlen = DEFAULT_MAXLEN
    if "maxlen" in query:
        text = query["maxlen"][-1]
        if not text.isdigit() or not 1 <= int(text) <= 10**12:
            raise EventLogError(f"--events {_redact(url)}: maxlen {text!r} not accepted; an integer in 1..10^12")
        maxlen = int(text)
    password = unquote(u.password) if u.password else os.environ.get("REDISCLI_AUTH") or None
    return RedisTarget(u.hostname, port, key, maxlen, u.scheme == "rediss",
                       unquote(u.username) if u.username else None, password)


def _redact(url: str) -> str:
    """``url`` with any password replaced, for messages."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.partition(':')[0]}:***@{host}"


class RedisEventLog(EventLog):
    """Appends each batch to a Redis stream in one ``MULTI``/``EXEC`` (see the module doc)."""

    def __init__(self, url: str, options: EventLogOptions | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise EventLogError(f"--events {_redact(url)}: needs the Python package 'redis': "
                                "pip install 'realtime-detect[sinks]' -c constraints.txt") from None
        self._redis = redis
        self.redis_target = parse_redis_url(url)
        self._source = f"{socket.gethostname()}:{os.getpid()}"
        self._client: redis.Redis | None = None
        self._errors = (redis.RedisError,)
        try:  # at start-up, an unreachable or wrong server is an error, like a bad path
            self._connect().ping()
        except redis.RedisError as e:
            self._drop_client()
            raise EventLogError(f"--events {self.redis_target.display()}: cannot use Redis ({e})") from None
        super().__init__(self.redis_target.display(), options)

    def _connect(self):  # -> redis.Redis
        if self._client is None:
            t = self.redis_target
            # No retries inside the client: the writer retries whole batches, in order.
            self._client = self._redis.Redis(
                host=t.host, port=t.port, username=t.username, password=t.password, ssl=t.tls,
                socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                retry=self._redis.retry.Retry(self._redis.backoff.NoBackoff(), 0))
        return self._client

    def _write(self, batch: list[Event]) -> None:
        t = self.redis_target
        try:
            pipe = self._connect().pipeline(transaction=True)
            for ev, uid in zip(batch, self.uids(batch), strict=True):
                pipe.xadd(t.key, {
                    "type": ev.type, "stream": getattr(ev, "stream", None) or "",
                    "seq": ev.seq if isinstance(ev, ScoreEvent) else "",
                    "source": self._source, "uid": uid, "json": ev.to_json()},
                    maxlen=t.maxlen, approximate=True)
            pipe.execute()
        except (self._redis.ConnectionError, self._redis.TimeoutError) as e:
            self._drop_client()
            raise SinkUnavailable(str(e) or type(e).__name__) from None

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except self._redis.RedisError:
                pass
            self._client = None

    def _sync(self) -> None:
        pass  # Redis's appendfsync decides

    def _close(self) -> None:
        self._drop_client()
