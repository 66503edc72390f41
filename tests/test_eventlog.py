"""Durable event log: formats, batching, full queue, failures, fsync policy, and SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.eventlog import EventLogError, EventLogOptions, open_event_log
from realtime.eventlog_jsonl import JsonlEventLog
from realtime.eventlog_sqlite import SqliteEventLog
from realtime.events import ErrorEvent, ReadyEvent, ScoreEvent, SummaryEvent, parse_event
from tests.conftest import accounted_seqs, speech
from tests.server_process import ServerProcess


def score(stream: str, seq: int, p: float = 0.25) -> ScoreEvent:
    return ScoreEvent(stream=stream, seq=seq, start_s=0.5 * seq, end_s=4 + 0.5 * seq, spoof_probability=p,
                      label="bonafide", alert=False, latency_ms=3.0, model="m")


def summary(stream: str, windows: int) -> SummaryEvent:
    return SummaryEvent(stream=stream, windows=windows, spoof_probability=0.25, label="bonafide")


def jsonl_events(path: Path) -> list:
    return [parse_event(line) for line in path.read_text().splitlines()]


def sqlite_events(path: Path) -> list:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, stream, seq, json FROM events ORDER BY id").fetchall()
    out = []
    for kind, stream, seq, text in rows:
        ev = parse_event(text)
        assert (ev.type, getattr(ev, "stream", None), getattr(ev, "seq", None)) == (kind, stream, seq)
        out.append(ev)
    return out


def read_log(spec: str) -> list:
    return sqlite_events(Path(spec[7:])) if spec.startswith("sqlite:") else jsonl_events(Path(spec))


@pytest.fixture(params=["jsonl", "sqlite"])
def spec(request, tmp_path: Path) -> str:
    return str(tmp_path / "events.jsonl") if request.param == "jsonl" else f"sqlite:{tmp_path / 'events.db'}"


def test_records_scores_summaries_errors_not_ready_and_appends_on_reopen(spec: str) -> None:
    first = [score("a", 0), score("a", 1, 0.9), ErrorEvent(code="engine_error", message="x", stream="a"),
             summary("a", 2)]
    with open_event_log(spec) as log:
        log(ReadyEvent(stream="a", window_s=4.0, hop_s=0.5, model="m"))
        for ev in first:
            log(ev)
    assert read_log(spec) == first
    with open_event_log(spec) as log:  # a restart appends
        log(summary("b", 0))
    assert read_log(spec) == [*first, summary("b", 0)]
    assert log.stats().written == 1 and log.stats().dropped == 0


def test_sqlite_is_wal_with_indexes(tmp_path: Path) -> None:
    with open_event_log(f"sqlite:{tmp_path / 'e.db'}") as log:
        assert isinstance(log, SqliteEventLog)
        log(score("a", 0))
    with sqlite3.connect(tmp_path / "e.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in db.execute("PRAGMA table_info(events)")]
        assert cols == ["id", "logged_at", "type", "stream", "seq", "json"]
        indexes = {r[1] for r in db.execute("PRAGMA index_list(events)")}
        assert {"events_stream_seq", "events_type"} <= indexes
        plan = " ".join(str(r) for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT json FROM events WHERE stream = 'a' AND seq > 3"))
        assert "events_stream_seq" in plan


def test_torn_last_line_is_cut_off_then_appending_goes_on(tmp_path: Path, caplog) -> None:
    path = tmp_path / "e.jsonl"
    good = score("a", 0).to_json() + "\n"
    path.write_text(good + score("a", 1).to_json()[:37])  # a write cut short by a crash
    with caplog.at_level(logging.WARNING, logger="realtime.eventlog"):
        with JsonlEventLog(path) as log:
            log(score("a", 1))
    assert jsonl_events(path) == [score("a", 0), score("a", 1)]
    assert any("torn last line of 37 bytes" in r.getMessage() for r in caplog.records)


def test_bad_paths_fail_at_open(tmp_path: Path) -> None:
    with pytest.raises(EventLogError, match="cannot open"):
        open_event_log(str(tmp_path / "missing-dir" / "e.jsonl"))
    (tmp_path / "not.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(EventLogError, match="not usable"):
        open_event_log(f"sqlite:{tmp_path / 'not.db'}")
    with pytest.raises(EventLogError, match="needs a path"):
        open_event_log("sqlite:")


class HeldLog(JsonlEventLog):
    """The writer blocks in its first write until released; its writes can fail on demand."""

    def __init__(self, *args, **kwargs) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail_next = False
        super().__init__(*args, **kwargs)

    def _write(self, batch) -> None:
        self.entered.set()
        self.release.wait(5)
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        super()._write(batch)


def test_full_queue_drops_scores_never_summaries_and_says_so(tmp_path: Path, caplog) -> None:
    path = tmp_path / "e.jsonl"
    log = HeldLog(path, EventLogOptions(max_queue=3))
    with caplog.at_level(logging.WARNING, logger="realtime.eventlog"):
        log(score("a", 0))
        assert log.entered.wait(5)  # the writer holds seq 0; the queue is empty again
        for seq in range(1, 9):
            log(score("a", seq))
        log(ErrorEvent(code="bad_audio", message="NaN", stream="a"))
        log(summary("a", 9))
        assert log.stats().dropped == 5 and log.stats().queued == 5  # 3 scores + error + summary
        log.release.set()
        log.close()
    events = jsonl_events(path)
    assert [e.seq for e in events if e.type == "score"] == [0, 1, 2, 3]
    assert [e.type for e in events[4:]] == ["error", "summary", "error"]
    gap = events[-1]
    assert gap.code == "events_dropped" and "5 score events were not recorded" in gap.message
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "writer behind" in warnings[0]  # once per warn_every_s
    assert log.stats().written == 7


def test_a_batch_that_cannot_be_written_is_counted_and_logged(tmp_path: Path, caplog) -> None:
    path = tmp_path / "e.jsonl"
    log = HeldLog(path)
    log.fail_next = True
    with caplog.at_level(logging.ERROR, logger="realtime.eventlog"):
        log(score("a", 0))
        assert log.entered.wait(5)
        log.release.set()
        for _ in range(200):
            if log.stats().failed:
                break
            threading.Event().wait(0.01)
        log(score("a", 1))
        log.close()
    assert log.stats().failed == 1 and log.stats().written == 1
    assert jsonl_events(path) == [score("a", 1)]
    assert any("1 events not written so far (OSError" in r.getMessage() and "No space left" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("interval, syncs_before_close", [(0.0, 3), (3600.0, 0)])
def test_fsync_policy(tmp_path: Path, monkeypatch, interval: float, syncs_before_close: int) -> None:
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    log = HeldLog(tmp_path / "e.jsonl", EventLogOptions(fsync_interval_s=interval))
    log.release.set()
    for seq in range(3):
        log(score("a", seq))
        for _ in range(200):  # one batch at a time
            if log.stats().written == seq + 1:
                break
            threading.Event().wait(0.01)
    assert log.stats().batches == 3
    for _ in range(100):
        if len(calls) >= syncs_before_close:
            break
        threading.Event().wait(0.01)
    assert len(calls) == syncs_before_close
    log.close()
    assert len(calls) == syncs_before_close + (interval > 0)  # what is unsynced is synced at close


def test_events_after_close_are_counted_not_lost_quietly(tmp_path: Path, caplog) -> None:
    log = open_event_log(tmp_path / "e.jsonl")
    log.close()
    with caplog.at_level(logging.WARNING, logger="realtime.eventlog"):
        log(score("a", 0))
    assert log.stats().dropped == 1 and "closed" in caplog.records[0].getMessage()


# -- the server, killed -------------------------------------------------------------------------------

def s16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


async def stream_until(url: str, name: str, audio: bytes, received: list, end: bool = False) -> None:
    """Stream ``audio`` in 0.1-s frames; collect events until the connection dies."""
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le", "stream": name}))

        async def send() -> None:
            for i in range(0, len(audio), 3200):
                await ws.send(audio[i:i + 3200])
                await asyncio.sleep(0.01)
            if end:
                await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        try:
            async for msg in ws:
                received.append(parse_event(msg))
        except ConnectionClosed:
            pass
        sender.cancel()


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_committed_event_and_restart_appends(checkpoints, spec: str) -> None:
    audio = [s16(np.resize(speech(10.0, i), 16000 * 14)) for i in range(2)]

    async def run_and_kill(server: ServerProcess) -> list[list]:
        received: list[list] = [[], []]
        clients = [asyncio.create_task(stream_until(server.url, f"s{i}", audio[i], received[i])) for i in range(2)]
        async with asyncio.timeout(60):
            while min(sum(e.type == "score" for e in r) for r in received) < 12:
                await asyncio.sleep(0.005)
        server.kill()  # SIGKILL: no drain, no close, no flush
        await asyncio.wait_for(asyncio.gather(*clients), 30)
        return received

    with ServerProcess(checkpoints["specrnet"], "--events", spec, "--hop", "0.25") as server:
        received = asyncio.run(run_and_kill(server))
    assert server.proc.returncode == -9
    logged = read_log(spec)  # every line / row parses
    for i, got in enumerate(received):
        client_scores = {e.seq: e for e in got if e.type == "score"}
        assert len(client_scores) >= 12
        mine = [e for e in logged if e.type == "score" and e.stream == f"s{i}"]
        # The log holds a gap-free prefix of the stream, each window once (so every score the
        # client got up to the last committed batch is there). A busy machine sheds windows: a
        # shed window has no event, and the next event counts it in ``shed`` - not a loss.
        assert mine and [e.seq for e in mine] == accounted_seqs([e.shed for e in mine])
        # ... identical to what the client got (the log may also hold scores the client had not
        # read yet when the server died).
        assert all(e == client_scores[e.seq] for e in mine if e.seq in client_scores)

    # The server starts again on the same file and appends.
    async def one_more(server: ServerProcess) -> list:
        got: list = []
        await stream_until(server.url, "after", s16(speech(4.5, 0)), got, end=True)
        return got

    with ServerProcess(checkpoints["specrnet"], "--events", spec) as server:
        got = asyncio.run(one_more(server))
        assert server.stop() == 0
    assert [e.type for e in got] == ["ready", "score", "score", "summary"]
    again = read_log(spec)
    assert again[:len(logged)] == logged
    assert again[len(logged):] == got[1:]


def test_a_full_disk_is_counted_and_reported_and_shutdown_stays_clean(checkpoints) -> None:
    """``--events /dev/full``: every batch fails (ENOSPC), is counted (/healthz) and reported in
    a few lines; SIGTERM still drains the stream and exits 0, without a traceback."""
    import subprocess

    from tests.server_process import connect_when_listening

    with ServerProcess(checkpoints["specrnet"], "--events", "/dev/full", stdout=subprocess.DEVNULL) as server:
        ws = connect_when_listening(server.port)
        with ws:
            ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le", "stream": "full"}))
            ws.send(s16(speech(6.0, 0)))
            ws.send(json.dumps({"type": "end"}))
            got = []
            while not got or got[-1].type != "summary":
                got.append(parse_event(ws.recv(timeout=60)))
        for _ in range(500):  # the writer's batches reach the disk shortly after the events
            if server.health()["event_log"]["failed"] >= 6:
                break
            threading.Event().wait(0.01)
        assert server.health()["event_log"]["failed"] == 6  # 5 scores and the summary
        assert server.stop() == 0
    assert not [line for line in server.log if "Traceback" in line or "Exception in thread" in line], server.log
    failures = [line for line in server.log if "event log /dev/full" in line]
    assert failures and len(failures) <= 3 and "No space left" in failures[0], server.log
