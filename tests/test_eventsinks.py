"""Shared event sinks against a real redis-server and a real PostgreSQL on loopback: what is
stored, a restart of the store mid-stream (held, reconnected, nothing committed lost), giving
up at close, bad URLs, and the server writing to them end to end."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from realtime.eventlog import EventLogError, EventLogOptions, open_event_log
from realtime.events import ErrorEvent, ReadyEvent, parse_event
from tests.conftest import speech
from tests.server_process import ServerProcess
from tests.services import PostgresServer, RedisServer, free_port
from tests.test_eventlog import s16, score, stream_until, summary

pytest.importorskip("redis", reason="the 'sinks' extra is not installed")
pytest.importorskip("psycopg", reason="the 'sinks' extra is not installed")

FAST = EventLogOptions(retry_max_s=0.2, warn_every_s=0.0, close_timeout_s=5.0)


class Store:
    """One running store: the URL to log to, how to read back, how to crash and restart it."""

    def __init__(self, kind: str, server: RedisServer | PostgresServer, key: str) -> None:
        self.kind, self.server, self.key = kind, server, key
        self.url = f"{server.url}/{key}" if kind == "redis" else server.url

    def rows(self) -> list[dict]:
        """Every stored record (uid, type, stream, seq, event), in insertion order."""
        if self.kind == "redis":
            import redis

            with redis.Redis(host="127.0.0.1", port=self.server.port, decode_responses=True) as r:
                entries = r.xrange(self.key)
            return [{"uid": f["uid"], "type": f["type"], "stream": f["stream"] or None,
                     "seq": int(f["seq"]) if f["seq"] else None, "source": f["source"],
                     "event": parse_event(f["json"])} for _, f in entries]
        import psycopg

        with psycopg.connect(self.server.url) as conn:
            got = conn.execute("SELECT uid, type, stream, seq, source, event FROM detector_events ORDER BY id")
            return [{"uid": u, "type": t, "stream": s, "seq": q, "source": src, "event": parse_event(ev)}
                    for u, t, s, q, src, ev in got.fetchall()]

    def events(self) -> list:
        """The stored events, each uid once (Redis is at least once; see realtime/eventlog_redis.py)."""
        seen: set[str] = set()
        out = []
        for r in self.rows():
            assert (r["type"], r["stream"], r["seq"]) == (
                r["event"].type, getattr(r["event"], "stream", None), getattr(r["event"], "seq", None))
            if r["uid"] not in seen:
                seen.add(r["uid"])
                out.append(r["event"])
        return out

    def crash(self) -> None:
        self.server.kill() if self.kind == "redis" else self.server.crash()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


def ensure_running(server: RedisServer | PostgresServer) -> RedisServer | PostgresServer:
    """The module's server, started again if an earlier test crashed it on purpose."""
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    return server


@pytest.fixture(params=["redis", "postgresql"])
def store(request, tmp_path) -> Store:
    server = ensure_running(request.getfixturevalue("redis_server" if request.param == "redis" else "pg_server"))
    if request.param == "postgresql":
        import psycopg

        with psycopg.connect(server.url) as conn:  # a clean table for each test
            conn.execute("DROP TABLE IF EXISTS detector_events")
    return Store(request.param, server, f"events-{tmp_path.name}")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def test_records_events_with_fields_and_indexes(store: Store) -> None:
    sent = [score("a", 0), score("a", 1, 0.9), ErrorEvent(code="engine_error", message="x", stream="a"),
            summary("a", 2), ErrorEvent(code="events_dropped", message="no stream")]
    with open_event_log(store.url) as log:
        log(ReadyEvent(stream="a", window_s=4.0, hop_s=0.5, model="m"))  # not recorded
        for ev in sent:
            log(ev)
    assert log.stats().written == 5 and log.stats().failed == 0
    rows = store.rows()
    assert [r["event"] for r in rows] == sent == store.events()
    assert len({r["uid"] for r in rows}) == 5 and {r["source"] for r in rows} == {rows[0]["source"]}
    assert rows[-1]["stream"] is None and rows[0]["seq"] == 0 and rows[2]["seq"] is None
    with open_event_log(store.url) as log:  # a second writer (or a restart) appends
        log(summary("b", 0))
    assert store.events() == [*sent, summary("b", 0)]
    if store.kind == "postgresql":
        import psycopg

        with psycopg.connect(store.server.url) as conn:
            indexes = {r[0] for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'detector_events'")}
        assert {"detector_events_stream_seq", "detector_events_logged_at", "detector_events_type_logged_at",
                "detector_events_uid_key"} <= indexes


def test_redis_stream_is_capped(redis_server: RedisServer) -> None:
    import redis

    key = "capped"
    ensure_running(redis_server)
    with open_event_log(f"{redis_server.url}/{key}?maxlen=100") as log:
        for seq in range(1000):
            log(score("a", seq))
    assert log.stats().written == 1000
    with redis.Redis(host="127.0.0.1", port=redis_server.port) as r:
        length = r.xlen(key)
        last = json.loads(r.xrevrange(key, count=1)[0][1][b"json"])
    assert 100 <= length < 1000  # MAXLEN ~ trims whole nodes: near the cap, never unbounded
    assert last["seq"] == 999


def test_store_restart_mid_stream_holds_reconnects_and_loses_nothing(store: Store, caplog) -> None:
    first = [score("a", seq) for seq in range(50)]
    during = [score("a", seq) for seq in range(50, 100)]
    log = open_event_log(store.url, FAST)
    with caplog.at_level(logging.WARNING, logger="realtime.eventlog"):
        for ev in first:
            log(ev)
        wait_for("the first 50 events committed", lambda: log.stats().written == 50)
        store.crash()  # Redis: SIGKILL; PostgreSQL: immediate shutdown (no checkpoint)
        for ev in during:
            log(ev)
        wait_for("the writer to find the store down", lambda: not log.stats().available)
        st = log.stats()
        assert (st.written, st.queued, st.failed, st.dropped) == (50, 50, 0, 0)  # held, not lost
        store.server.start()  # same port, same data
        log(summary("a", 100))
        wait_for("the held events written after the restart", lambda: log.stats().written == 101)
        log.close()
    st = log.stats()
    assert st.available and st.retries >= 1 and (st.failed, st.dropped, st.queued) == (0, 0, 0)
    assert store.events() == [*first, *during, summary("a", 100)]  # in order, each once
    if store.kind == "postgresql":
        assert len(store.rows()) == 101  # the uid makes a retried batch exactly-once
    messages = [r.getMessage() for r in caplog.records]
    assert any("store unreachable" in m for m in messages) and any("reachable again" in m for m in messages)


def test_close_with_the_store_down_gives_up_after_close_timeout_and_counts(store: Store, caplog) -> None:
    log = open_event_log(store.url, EventLogOptions(retry_max_s=0.1, close_timeout_s=0.5))
    store.crash()
    with caplog.at_level(logging.ERROR, logger="realtime.eventlog"):
        log(score("a", 0))
        log(summary("a", 1))
        log.close()
    st = log.stats()
    assert (st.written, st.failed, st.queued) == (0, 2, 0)
    assert any("2 events not written so far (SinkUnavailable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:{port}", "no stream key after the host"),
    ("redis:///events", "no host"),
    ("redis://127.0.0.1:99999/events", "Port out of range"),
    ("redis://127.0.0.1:{port}/events?maxlen=-3", "maxlen '-3' not accepted"),
    ("redis://127.0.0.1:{port}/events?max=3", "unknown parameter 'max'"),
    ("redis://u:hunter2@127.0.0.1:{port}/events", "cannot use Redis"),
    ("postgresql://u:hunter2@127.0.0.1:{port}/db", "cannot use PostgreSQL"),
    ("postgresql://127.0.0.1:{port}/db?nonsense=1", "not a PostgreSQL URL"),
    ("kafka://127.0.0.1:{port}/events", "not a known store; accepted: FILE.jsonl"),
])
def test_bad_or_unreachable_urls_are_one_line_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(EventLogError) as e:
        open_event_log(url.format(port=free_port()))  # nothing listens on a fresh free port
    text = str(e.value)
    assert message in text and "\n" not in text and "hunter2" not in text and text.startswith("--events ")


def test_cli_names_a_bad_sink_in_one_line(tmp_path, capsys) -> None:
    from realtime.cli import main

    code = main(["--input", "demo", "--offline", "--events", f"redis://127.0.0.1:{free_port()}/e"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot use Redis" in err[0] and "Traceback" not in err[0]


def test_server_writes_every_event_to_the_shared_store(checkpoints, store: Store) -> None:
    audio = s16(np.resize(speech(4.5, 0), 16000 * 6))

    async def one_stream(server: ServerProcess) -> list:
        got: list = []
        await asyncio.wait_for(stream_until(server.url, "call-1", audio, got, end=True), 60)
        return got

    with ServerProcess(checkpoints["specrnet"], "--events", store.url) as server:
        got = asyncio.run(one_stream(server))
        health = server.health()["event_log"]
        assert server.stop() == 0
    assert [e.type for e in got] == ["ready", *["score"] * 5, "summary"]  # 6 s: windows at 0, 0.5, .. 2 s
    assert store.events() == got[1:]
    assert health["failed"] == 0 and health["dropped"] == 0 and health["available"] is True


def test_replicas_starting_at_once_share_one_postgres_table(pg_server: PostgresServer) -> None:
    import psycopg

    ensure_running(pg_server)
    with psycopg.connect(pg_server.url) as conn:
        conn.execute("DROP TABLE IF EXISTS detector_events")
    with ThreadPoolExecutor(6) as pool:  # six servers creating the schema at the same moment
        logs = list(pool.map(lambda _: open_event_log(pg_server.url), range(6)))
    for i, log in enumerate(logs):
        log(summary(f"r{i}", 0))
        log.close()
    with psycopg.connect(pg_server.url) as conn:
        streams = sorted(r[0] for r in conn.execute("SELECT stream FROM detector_events"))
    assert streams == [f"r{i}" for i in range(6)]
