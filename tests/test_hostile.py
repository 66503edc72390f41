"""Hostile or careless WebSocket clients (issue 13): a fast sender with keepalive, one huge
message, ping and fragment floods, lone surrogates. Real server on 127.0.0.1, real clients,
every wait bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from dataclasses import replace

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.events import parse_event
from tests.conftest import speech
from tests.raw_websocket import client_frame, open_raw
from tests.server_process import ServerProcess
from tests.test_server import DET, OPTS, client, running, s16, url

START = {"type": "start", "sample_rate": 16000, "format": "s16le"}


def speech_at(rate: int, seconds: float) -> np.ndarray:
    """``seconds`` of real speech (tiled) at ``rate`` Hz."""
    return soxr.resample(np.resize(speech(10.0, 0), int(16000 * seconds)), 16000, rate).astype(np.float32)


def test_fast_sender_with_keepalive_is_throttled_not_cut() -> None:
    """A standard client with keepalive (pinging every 0.5 s, giving up after 1 s without a
    pong) sends 40 s of 8 kHz audio as fast as TCP allows. The server feeds it at 8x real time
    (after a 1-s burst) yet answers the pings throughout: every window scored, a summary, 1000."""
    seconds = 40.0
    audio = s16(speech_at(8000, seconds))

    async def main() -> None:
        opts = replace(OPTS, max_realtime_factor=8.0, realtime_burst_s=1.0)
        async with running(options=opts) as server:
            t0 = time.monotonic()
            events, close = await client(server, {**START, "sample_rate": 8000}, audio, frame=8000,
                                         ping_interval=0.5, ping_timeout=1.0)
            took = time.monotonic() - t0
        assert close == 1000, events[-3:]
        summary = events[-1]
        assert summary.type == "summary" and summary.duration_s == seconds and summary.shed == 0
        assert summary.windows == 73 == len([e for e in events if e.type == "score"])  # ends 4.0, 4.5, ... 40.0
        assert took >= (seconds - 1.0) / 8.0  # still throttled (a lower bound: safe under load)

    asyncio.run(main())


def test_one_large_message_sheds_no_window(checkpoints) -> None:
    """10 s of 48 kHz speech in a single ~1 MB message: its 13 windows arrive together, past
    --max-pending 8; none is shed (the real ONNX engine, so scoring takes real time)."""
    import engines

    engine = engines.load(checkpoints["specrnet"], engine="onnx", threads=1, max_batch=16)
    message = s16(speech_at(48000, 10.0))
    assert len(message) == 960000

    async def main() -> None:
        # No shedding for lateness (a busy machine is slow): only --max-pending is put to the test.
        batching = replace(DET.batching, max_pending=8, max_delay_ms=600_000)
        async with running(engine, detector=replace(DET, batching=batching)) as server:
            events, close = await client(server, {**START, "sample_rate": 48000}, message, frame=len(message))
        assert close == 1000
        scores = [e for e in events if e.type == "score"]
        assert [e.seq for e in scores] == list(range(13)) and not any(e.shed for e in scores)
        assert events[-1].type == "summary" and events[-1].windows == 13 and events[-1].shed == 0

    try:
        asyncio.run(main())
    finally:
        engine.close()


def raw_stream(port: int) -> socket.socket:
    """A socket past the handshake that has sent ``start`` (and never reads again)."""
    s = open_raw(port, rcvbuf=4096)
    s.sendall(client_frame(1, json.dumps({**START, "stream": "flood"}).encode()))
    return s


def flood(s: socket.socket, frames: bytes, limit_bytes: int) -> int:
    """Send ``frames`` over and over until the server drops us or ``limit_bytes`` went out."""
    sent = 0
    try:
        while sent < limit_bytes:
            s.sendall(frames)
            sent += len(frames)
    except OSError:  # reset or broken pipe: the server closed the connection
        return sent
    return sent


def warm_up(port: int) -> None:
    """One ordinary stream, start to summary."""
    from websockets.sync.client import connect as sync_connect

    deadline = time.monotonic() + 30
    while True:  # a server that cannot accept yet (no descriptors) is retried
        try:
            ws = sync_connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=5)
            break
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with ws:
        ws.send(json.dumps(START))
        ws.send(s16(speech(4.0, 0)))
        ws.send(json.dumps({"type": "end"}))
        while parse_event(ws.recv(timeout=60)).type != "summary":
            pass


@pytest.mark.slow
@pytest.mark.parametrize("rate_limit", ["500", "0"])
def test_ping_flood_from_a_client_that_never_reads_is_bounded(checkpoints, rate_limit: str) -> None:
    """Pings (125-byte payloads), never reading the pongs. With the frame rate limit the flood
    is refused within its burst; without it (0), the unread pongs pass the server's bound and
    the client is dropped. Either way the server's RSS barely moves (it grew one for one)."""
    limit = 64 << 20
    frames = client_frame(0x9, b"p" * 125) * 8000  # ~1 MB of pings per sendall
    with ServerProcess(checkpoints["specrnet"], "--max-message-rate", rate_limit) as server:
        warm_up(server.port)  # the first stream's one-time allocations (~40 MB) are not the flood's
        before = server.rss_mb()
        s = raw_stream(server.port)
        try:
            sent = flood(s, frames, limit)
        finally:
            s.close()
        grown = server.rss_mb() - before
        assert server.health()["status"] == "ok"
        server.stop()
    assert sent < limit, "the server never closed a connection flooding it with pings"
    assert grown < 20, f"RSS grew {grown:.0f} MB"
    why = "rate_limited" if rate_limit != "0" else "not_reading"
    refusals = [line for line in server.log if "refused" in line]
    assert len(refusals) == 1 and f": {why} (" in refusals[0], server.log[-5:]
    assert not any("Traceback" in line for line in server.log)


def test_fragment_flood_is_refused_and_others_are_served(caplog) -> None:
    """A message of 100,000 empty fragments: every fragment counts against the frame rate, so
    it is refused within its burst (rate_limited, 1008); /healthz and a good client meanwhile
    are served, the good one with every window."""
    audio = s16(speech(6.0, 1))

    async def flooder(server) -> tuple[list, int | None]:
        events = []

        async def fragments():
            for i in range(100_000):
                if i % 50 == 0:  # the client shares the server's loop: let it read what we sent
                    await asyncio.sleep(0)
                yield b""

        async with connect(url(server)) as ws:
            await ws.send(json.dumps({**START, "stream": "flood"}))
            events.append(parse_event(await ws.recv()))
            try:
                await ws.send(fragments())
            except ConnectionClosed:
                pass
            try:
                async with asyncio.timeout(10):
                    async for msg in ws:
                        events.append(parse_event(msg))
            except ConnectionClosed:
                pass
        return events, ws.close_code

    async def main() -> None:
        async with running(options=replace(OPTS, max_messages_per_s=100.0)) as server:
            good = asyncio.create_task(client(server, {**START, "stream": "good"}, audio, frame=3200))
            (events, close) = await flooder(server)
            health = await asyncio.wait_for(asyncio.to_thread(server.health), 10)
            ok, ok_close = await asyncio.wait_for(good, 60)
        assert [e.type for e in events] == ["ready", "error"] and events[1].code == "rate_limited"
        assert "frames per second" in events[1].message and close == 1008
        assert health["status"] == "ok"
        assert ok_close == 1000 and ok[-1].type == "summary" and ok[-1].windows == 5 and ok[-1].shed == 0

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage() and "rate_limited" in r.getMessage()], [r.getMessage() for r in caplog.records]
    assert not any(r.exc_info for r in caplog.records)


LONE = "\ud800"


@pytest.mark.parametrize("start, code, close", [
    ({**START, "token": LONE}, "unauthorized", 1008),
    ({**START, "token": "right" + LONE}, "unauthorized", 1008),
    ({**START, "stream": LONE}, "bad_request", 1008),
    ({**START, "format": LONE}, "bad_format", 1003),
    ({**START, "sample_rate": LONE}, "bad_format", 1003),
    ({**START, "channels": LONE}, "bad_format", 1003),
    ({"type": LONE}, "bad_request", 1008),
    ({**START, LONE: LONE, "token": "right"}, None, 1000),  # unknown keys are ignored
])
def test_lone_surrogates_in_every_text_field(start: dict, code: str | None, close: int, caplog) -> None:
    """json.dumps writes "\\ud800", which decodes to a lone surrogate: a wrong value like any
    other (its error event, one log line), never a 1011 and a traceback."""
    audio = s16(speech(4.0, 0))

    async def main() -> tuple[list, int | None]:
        async with running(options=replace(OPTS, token="right")) as server:
            return await client(server, json.dumps(start), audio)

    with caplog.at_level(logging.WARNING):
        events, got = asyncio.run(main())
    assert got == close
    if code is None:
        assert events[-1].type == "summary"
    else:
        assert [e.type for e in events] == ["error"] and events[0].code == code
        assert len([r for r in caplog.records if r.getMessage().startswith("refused ")]) == 1
    assert not any(r.exc_info for r in caplog.records)


def test_lone_surrogates_after_start() -> None:
    """In a text message after start: bad_request naming it (escaped), and the server goes on."""
    audio = s16(speech(4.0, 0))

    async def main() -> None:
        async with running() as server:
            async with connect(url(server)) as ws:
                await ws.send(json.dumps(START))
                assert parse_event(await ws.recv()).type == "ready"
                await ws.send(json.dumps({"type": LONE}))
                err = parse_event(await ws.recv())
                assert err.code == "bad_request" and "\\ud800" in err.message
            events, close = await client(server, START, audio)
            assert close == 1000

    asyncio.run(main())


@pytest.mark.slow
def test_out_of_file_descriptors_is_one_line_and_service_resumes(checkpoints) -> None:
    """``ulimit -n 32`` and 50 connections: accept() fails for lack of descriptors. One log line
    per interval, no traceback; once the connections close, a stream is served again."""
    with ServerProcess(checkpoints["specrnet"], max_open_files=32) as server:
        socks = []
        try:
            for _ in range(50):
                socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            time.sleep(3.0)  # asyncio retries every second: three rounds of failures
        finally:
            for s in socks:
                s.close()
        warm_up(server.port)  # retried until accepted: the service is back
        assert server.stop() == 0
    failures = [line for line in server.log if "cannot accept connections" in line]
    assert len(failures) == 1 and "Too many open files" in failures[0], server.log[-5:]
    assert not any("Traceback" in line for line in server.log)


def test_a_client_waiting_for_its_scores_is_not_idle() -> None:
    """20 s of audio at once, then the client waits for every score before sending "end" (the
    feed at 4x takes ~5 s, past the 2-s idle timeout): not refused as idle, all windows scored."""
    audio = s16(speech_at(16000, 20.0))

    async def main() -> None:
        opts = replace(OPTS, max_realtime_factor=4.0, realtime_burst_s=1.0, idle_timeout_s=2.0)
        async with running(options=opts) as server:
            async with connect(url(server)) as ws:
                await ws.send(json.dumps(START))
                await ws.send(audio[: len(audio) // 2])
                await ws.send(audio[len(audio) // 2:])
                events = []
                async with asyncio.timeout(60):
                    while sum(e.type == "score" for e in events) < 33:
                        events.append(parse_event(await ws.recv()))
                        assert events[-1].type != "error", events[-1]
                    await ws.send(json.dumps({"type": "end"}))
                    events += [parse_event(m) async for m in ws]
            assert ws.close_code == 1000 and events[-1].type == "summary" and events[-1].windows == 33

    asyncio.run(main())
