"""HAProxy (deploy/haproxy/haproxy.cfg) in front of two servers on loopback: 20 streams split by
leastconn, one server gets SIGTERM mid-stream, every stream gets its summary, the streams on it
reconnect with the same stream id and finish on the survivor, and the health check marks the
drained server down (the client contract of docs/deployment.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from realtime.events import parse_event
from tests.conftest import speech
from tests.server_process import ServerProcess
from tests.services import HAProxy
from tests.test_eventlog import jsonl_events, s16

STREAMS = 20
FRAME = 1600 * 2  # 0.1 s of 16-kHz s16le
SECONDS = 9.0  # audio per stream: a window (4 s) before the SIGTERM, more after it
PACE_S = 0.05  # one 0.1-s frame every 50 ms: twice real time
HOLD_BYTES = int(16000 * 5.0) * 2  # each stream pauses after 5 s of audio until the SIGTERM is sent, so
# that no stream can finish first however slowly the 20 streams open on a busy machine


@dataclass
class Call:
    """One stream as a client sees it: a list of connections, each (close code, events)."""

    name: str
    audio: bytes
    connections: list[list] = field(default_factory=list)  # [close code (None while open), events]
    sent: int = 0  # bytes of audio handed to a connection so far
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def scores(self) -> int:
        return sum(e.type == "score" for _, events in self.connections for e in events)


async def run_call(url: str, call: Call, released: asyncio.Event) -> None:
    """Stream ``call.audio``; on close 1001 reconnect (same stream id) and send the rest.

    The contract: after 1001 the old server's summary has arrived; audio sent after the cut may
    not have been scored; the new connection is a fresh stream on another server."""
    for _ in range(5):  # bounded: a stream moves at most a few times
        try:
            ws_cm = connect(url, open_timeout=15)
            ws = await ws_cm.__aenter__()
        except (OSError, InvalidHandshake, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        events: list = []
        call.connections.append([None, events])
        try:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le", "stream": call.name}))

            async def send() -> None:
                while call.sent < len(call.audio):
                    if call.sent >= HOLD_BYTES:
                        await released.wait()
                    await ws.send(call.audio[call.sent:call.sent + FRAME])
                    call.sent += FRAME
                    await asyncio.sleep(PACE_S)
                await ws.send(json.dumps({"type": "end"}))

            sender = asyncio.create_task(send())
            try:
                async for msg in ws:
                    ev = parse_event(msg)
                    events.append(ev)
                    if ev.type == "ready":
                        call.ready.set()
            except ConnectionClosed:
                pass
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
        finally:
            await ws_cm.__aexit__(None, None, None)
        call.connections[-1][0] = ws.close_code
        if ws.close_code != 1001:  # 1000: the stream is done; anything else is a failure (asserted)
            return
    raise AssertionError(f"{call.name}: no clean end in 5 connections: {[c for c, _ in call.connections]}")


def wait_until(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigterm_behind_haproxy_every_stream_finishes_on_the_survivor(checkpoints, tmp_path: Path) -> None:
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b")}
    with ThreadPoolExecutor(2) as pool:  # both servers start at once
        futures = {name: pool.submit(ServerProcess, checkpoints["specrnet"], "--hop", "1.0", "--idle-timeout", "240",
                                     "--events", str(log))
                   for name, log in logs.items()}
        servers = {name: f.result() for name, f in futures.items()}
    haproxy = None
    try:
        haproxy = HAProxy({name: s.port for name, s in servers.items()})
        haproxy.wait_all_up()
        audio = [s16(np.resize(speech(SECONDS, i % 2), int(16000 * SECONDS))) for i in range(STREAMS)]
        calls = [Call(f"call-{i:02d}", audio[i]) for i in range(STREAMS)]

        async def scenario() -> None:
            tasks = []
            released = asyncio.Event()
            for call in calls:  # one at a time, so that leastconn sees each stream open
                tasks.append(asyncio.create_task(run_call(haproxy.url, call, released)))
                await asyncio.wait_for(call.ready.wait(), 30)
            async with asyncio.timeout(90):
                while min(c.scores() for c in calls) < 1 and not any(t.done() for t in tasks):
                    await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks), "a stream ended before the SIGTERM"
            servers["a"].proc.terminate()  # mid-stream: every stream has a score and audio left to send
            released.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 120)

        asyncio.run(scenario())
        assert servers["a"].proc.wait(30) == 0  # drained and exited cleanly
        wait_until("server a marked DOWN", lambda: haproxy.server_states()["a"].startswith("DOWN"), 30)
        assert haproxy.server_states()["b"] == "UP"
    finally:
        if haproxy is not None:
            haproxy.close()
        for s in servers.values():
            s.stop() if s.proc.poll() is None else s.kill()

    logged = {name: jsonl_events(path) for name, path in logs.items()}
    on_a = {e.stream for e in logged["a"] if e.type == "summary"}
    assert len(on_a) == STREAMS // 2  # leastconn: streams opened one at a time alternate
    for call in calls:
        codes = [code for code, _ in call.connections]
        for _, events in call.connections:  # every connection: ready, its scores, its summary
            assert events[0].type == "ready" and events[-1].type == "summary", (call.name, events)
            assert all(e.stream == call.name for e in events)
        if call.name in on_a:
            # Moved: its summary from a (close 1001), then reconnected under the same id to b.
            assert codes == [1001, 1000], (call.name, codes)
            first, second = call.connections[0][1], call.connections[1][1]
            assert first[-1] in [e for e in logged["a"] if e.type == "summary"]
            assert second[-1] in [e for e in logged["b"] if e.type == "summary"]
            assert second[-1].windows >= 1
        else:
            assert codes == [1000], (call.name, codes)
        assert call.sent == len(call.audio)  # every byte was handed to a server
    assert {e.stream for e in logged["b"] if e.type == "summary"} == {c.name for c in calls}
    assert not [e for log in logged.values() for e in log if e.type == "error"]
