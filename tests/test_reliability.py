"""Limits and faults of the live server: throttling, idle hordes, non-reading clients, vanishing
clients, a failing engine. (SIGTERM: tests/test_server.py; SIGKILL: tests/test_eventlog.py;
protocol abuse: tests/test_protocol_fuzz.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the dashboard test: before Qt is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from realtime.errors import AudioInputError  # noqa: E402
from realtime.eventlog import open_event_log  # noqa: E402
from realtime.events import parse_event  # noqa: E402
from realtime.session import JsonLinesSink, LiveDetector  # noqa: E402
from tests.conftest import REPO, speech  # noqa: E402
from tests.raw_websocket import client_frame, open_raw  # noqa: E402
from tests.server_process import ServerProcess, connect_when_listening  # noqa: E402
from tests.test_server import DET, OPTS, client, running, s16, url  # noqa: E402
from tests.test_session import FakeEngine  # noqa: E402

START = {"type": "start", "sample_rate": 16000, "format": "s16le"}


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def test_audio_faster_than_the_realtime_factor_is_throttled_not_refused() -> None:
    """10 s of audio sent at once: at 8x real time after a 1-s burst it takes >= 9/8 s to be
    read; every window is still scored (backpressure, nothing shed), close 1000."""
    audio = s16(np.resize(speech(10.0, 0), 160000))

    async def main() -> None:
        opts = replace(OPTS, max_realtime_factor=8.0, realtime_burst_s=1.0)
        detector = replace(DET, batching=replace(DET.batching, max_pending=64))
        async with running(options=opts, detector=detector) as server:
            t0 = time.monotonic()
            ev, close = await client(server, START, audio, frame=3200)
            took = time.monotonic() - t0
            assert close == 1000 and ev[-1].type == "summary"
            assert ev[-1].windows == 13 and ev[-1].shed == 0 and ev[-1].duration_s == 10.0
            assert took >= 9 / 8
        async with running(options=replace(opts, max_realtime_factor=0.0), detector=detector) as server:  # no limit
            ev, close = await client(server, START, audio, frame=3200)
            assert close == 1000 and ev[-1].windows == 13 and ev[-1].shed == 0

    asyncio.run(main())


def test_client_vanishing_mid_stream_still_gets_its_summary_recorded(tmp_path: Path) -> None:
    """The client drops the TCP connection without "end": what it sent is scored, and its
    score events and summary reach --json and the event log (not the client, who is gone)."""
    from realtime.session import LiveDetector
    from realtime.server import DetectorServer

    log_path = tmp_path / "events.jsonl"
    json_out = io.StringIO()
    audio = s16(speech(6.0, 0))

    async def main() -> None:
        event_log = open_event_log(log_path)
        det = LiveDetector(FakeEngine(), DET, sinks=[JsonLinesSink(json_out), event_log]).start()
        server = DetectorServer(det, OPTS)
        await server.start()
        try:
            received = []
            async with connect(url(server)) as ws:
                await ws.send(json.dumps({**START, "stream": "vanishing"}))
                for i in range(0, len(audio), 3200):
                    await ws.send(audio[i:i + 3200])
                while sum(e.type == "score" for e in received) < 2:
                    received.append(parse_event(await ws.recv()))
                ws.transport.abort()  # gone: no close frame, no "end"
            await wait_for(lambda: '"type":"summary"' in json_out.getvalue())
            assert server.health()["streams"] == 0
        finally:
            server.shutdown()
            await server.wait_closed()
            await asyncio.to_thread(event_log.close)

    asyncio.run(main())
    printed = [parse_event(line) for line in json_out.getvalue().splitlines()]
    assert [e.type for e in printed] == ["ready"] + ["score"] * 5 + ["summary"]
    assert printed[-1].stream == "vanishing" and printed[-1].windows == 5 and printed[-1].duration_s == 6.0
    logged = [parse_event(line) for line in log_path.read_text().splitlines()]
    assert logged == printed[1:]  # the log has everything but "ready"


class FailingOnce:
    """Wraps an engine; its ``fail_at``-th call raises (as ONNX Runtime does, untyped)."""

    def __init__(self, engine, fail_at: int) -> None:
        self.engine, self.fail_at, self.calls, self.failed = engine, fail_at, 0, 0
        self.window_samples, self.model_id, self.threshold = engine.window_samples, engine.model_id, engine.threshold
        self.preferred_batch = engine.preferred_batch

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            self.failed = len(x)
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected")
        return self.engine.batch_logits(x)


def test_engine_exception_on_one_batch_reports_those_windows_and_the_rest_go_on() -> None:
    engine = FailingOnce(FakeEngine(), fail_at=3)
    audio = [s16(speech(7.0, i)) for i in range(2)]
    # Batches of at most 2 of the 14 windows: at least 7 engine calls however the windows bunch
    # up on a busy machine, so the third call (the injected fault) always happens.
    detector = replace(DET, batching=replace(DET.batching, max_batch=2))

    async def main() -> list:
        async with running(engine=engine, detector=detector) as server:
            return await asyncio.gather(*(client(server, {**START, "stream": f"s{i}"}, audio[i], frame=1600)
                                          for i in range(2)))

    results = asyncio.run(main())
    assert 1 <= engine.failed <= 2 and engine.calls >= 7
    errors = 0
    for events, close in results:
        assert close == 1000 and events[-1].type == "summary"
        scores = [e for e in events if e.type == "score"]
        failed = [e for e in events if e.type == "error"]
        assert all(e.code == "engine_error" and "injected" in e.message and "not scored" in e.message for e in failed)
        # Every window is accounted for: scored, or reported as an error; numbering goes on after it.
        assert len(scores) + len(failed) == 7
        assert events[-1].windows == len(scores)
        errors += len(failed)
    assert errors == engine.failed


# -- many connections, and a client that never reads (the server in a subprocess, for its RSS) -----------

async def idle_connections(server_url: str, n: int) -> list:
    """``n`` connections that sent "start", got "ready" and then say nothing."""
    async def one(i: int):
        ws = await connect(server_url, open_timeout=20, close_timeout=1)
        await ws.send(json.dumps({**START, "stream": f"idle-{i}"}))
        assert parse_event(await ws.recv()).type == "ready"
        return ws

    conns = []
    for k in range(0, n, 25):  # in waves: a 2-core box, and a listen backlog
        conns += await asyncio.gather(*(one(i) for i in range(k, min(n, k + 25))))
    return conns


def never_reading_client(port: int, seconds: int, hold_s: float) -> None:
    """Start a stream and send ``seconds`` of audio as fast as the kernel takes it, never reading a
    reply; keep the connection open ``hold_s`` (while the throttled server reads and scores it).
    A blocking socket with a small receive buffer, speaking WebSocket by hand."""
    s = open_raw(port, rcvbuf=4096, timeout=60)
    s.sendall(client_frame(1, json.dumps({**START, "stream": "never-reads"}).encode()))
    chunk = s16(speech(2.0, 1))[:32000]  # 1 s per message
    for _ in range(seconds):
        s.sendall(client_frame(2, chunk))
    time.sleep(hold_s)
    s.close()


@pytest.mark.slow
def test_200_idle_connections_and_a_client_that_never_reads(checkpoints) -> None:
    """RSS of a server subprocess, after a first round has set its high-water mark (ONNX
    Runtime's arena grows to the largest batch seen, which --max-batch bounds): 200
    idle streams cost < 0.5 MB each and leave nothing behind; a client that never reads its
    replies costs next to nothing; /healthz and other clients are served throughout."""
    n = 200
    with ServerProcess(checkpoints["specrnet"], "--max-connections", str(n + 8), "--idle-timeout", "120",
                       "--hop", "0.25", "--max-batch", "16") as server:

        async def main() -> dict:
            loop = asyncio.get_running_loop()
            health = lambda: loop.run_in_executor(None, server.health)  # noqa: E731
            # Round 1: the high-water marks.
            ev, close = await stream(server.url, "warm-up", 5.0)
            assert close == 1000
            # Four at once, each 8 s ahead (the burst): windows queue up, batches reach --max-batch.
            await asyncio.gather(*(loop.run_in_executor(None, never_reading_client, server.port, 30, 6.0)
                                   for _ in range(4)))
            conns = await idle_connections(server.url, n)
            for ws in conns:
                await ws.close()
            await wait_for(lambda: server.health()["streams"] == 0, 20)
            rss = {"base": server.rss_mb()}
            # Round 2: measured.
            conns = await idle_connections(server.url, n)
            h = await health()
            assert h["status"] == "ok" and h["streams"] == n
            rss["idle"] = server.rss_mb()
            t0 = time.monotonic()
            ev, close = await stream(server.url, "while-idle", 5.0)  # still served, promptly
            assert close == 1000 and ev[-1].type == "summary" and ev[-1].shed == 0
            assert time.monotonic() - t0 < 20
            await loop.run_in_executor(None, never_reading_client, server.port, 30, 6.0)
            ev, close = await stream(server.url, "after-never-reader", 4.5)
            assert close == 1000 and ev[-1].type == "summary"
            rss["never_reader"] = server.rss_mb()
            for ws in conns:
                await ws.close()
            await wait_for(lambda: server.health()["streams"] == 0, 20)
            rss["after"] = server.rss_mb()
            rss["health"] = await health()
            return rss

        r = asyncio.run(main())
        print(f"RSS {r['base']:.1f} MB -> {r['idle']:.1f} MB with {n} idle streams -> {r['never_reader']:.1f} MB "
              f"with a never-reading client -> {r['after']:.1f} MB when all are gone")
        assert (r["idle"] - r["base"]) / n < 0.5, r
        assert r["never_reader"] - r["idle"] < 20, r
        assert r["after"] - r["base"] < 20, r  # nothing left behind per connection
        assert r["health"]["status"] == "ok" and r["health"]["refused"] == 0
        assert server.stop() == 0
    assert not [line for line in server.log if "Traceback" in line]


async def stream(server_url: str, name: str, seconds: float) -> tuple[list, int | None]:
    audio = s16(speech(seconds, 0))
    events = []
    async with connect(server_url) as ws:
        await ws.send(json.dumps({**START, "stream": name}))
        for i in range(0, len(audio), 3200):
            await ws.send(audio[i:i + 3200])
        await ws.send(json.dumps({"type": "end"}))
        try:
            async for msg in ws:
                events.append(parse_event(msg))
        except ConnectionClosed:
            pass
    return events, ws.close_code


# -- a microphone that disappears -------------------------------------------------------------------------

class VanishingMic:
    """A Source that delivers ``seconds`` of speech in 50-ms blocks, then fails as MicSource does
    when its device is unplugged (AudioDeviceError is an AudioInputError)."""

    stream_id, sample_rate, channels = "mic", 16000, 1

    def __init__(self, seconds: float) -> None:
        self.audio = speech(seconds, 2)[:, None]

    async def __aiter__(self):
        for i in range(0, len(self.audio), 800):
            yield self.audio[i:i + 800], self.sample_rate
            await asyncio.sleep(0)
        raise AudioInputError("input device 3 'USB Audio Mic'", "stopped delivering audio (unplugged?)")


def test_a_source_failing_mid_stream_keeps_what_it_gave(tmp_path: Path) -> None:
    events: list = []
    log_path = tmp_path / "events.jsonl"

    async def main() -> None:
        with open_event_log(log_path) as event_log:
            det = LiveDetector(FakeEngine(), DET, sinks=[events.append, event_log]).start()
            session = det.open_stream("mic", 16000)
            with pytest.raises(AudioInputError, match="stopped delivering audio"):
                await session.run(VanishingMic(6.0))
            await det.aclose()

    asyncio.run(main())
    kinds = [e.type for e in events]
    assert kinds.count("score") == 5 and kinds.count("error") == 1 and kinds[-1] == "summary", kinds
    error = events[kinds.index("error")]
    assert error.code == "input_error" and "USB Audio Mic" in error.message
    assert events[-1].windows == 5 and events[-1].duration_s == 6.0
    assert [json.loads(line) for line in log_path.read_text().splitlines()] == [e.to_dict() for e in events]


@pytest.mark.audio
def test_cli_microphone_that_disappears_mid_run(tmp_path: Path, checkpoints) -> None:
    """A real PortAudio -> PulseAudio capture whose sound server dies: the CLI reports an
    input_error naming the device, scores what was captured, records the summary, exits 1."""
    import subprocess
    import sys

    from tests import pulse_helpers
    from tests.test_mic import _stack_or_skip

    _stack_or_skip()
    log_path = tmp_path / "events.jsonl"
    with pulse_helpers.PulseAudio(tmp_path / "pulse", rate=48000, channels=1) as pa:
        cli = subprocess.Popen(
            [sys.executable, "-m", "realtime.cli", "--input", "mic", "--device", pulse_helpers.PORTAUDIO_DEVICE,
             "--json", "--model", str(checkpoints["specrnet"]), "--engine", "onnx", "--events", str(log_path)],
            env={**os.environ, **pa.env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert cli.stdout is not None
            first = cli.stdout.readline()  # the first window: 4 s of capture are in
            assert json.loads(first)["type"] == "score", first
            pa.stop()  # the device vanishes
            out, err = cli.communicate(timeout=60)
        finally:
            if cli.poll() is None:
                cli.kill()
    assert cli.returncode == 1, err
    events = [parse_event(line) for line in (first + out).splitlines()]
    kinds = [e.type for e in events]
    assert kinds.count("error") == 1 and kinds[-1] == "summary" and kinds.count("score") >= 1, kinds
    error = events[kinds.index("error")]
    assert error.code == "input_error" and "'pulse'" in error.message
    assert events[-1].windows == kinds.count("score")
    assert [parse_event(line) for line in log_path.read_text().splitlines()] == events
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "[input_error]" in errors[0] and "Traceback" not in err


# -- a dashboard closed mid-run ------------------------------------------------------------------------------

def test_dashboard_closed_mid_run_drains_like_sigterm(qtbot, tmp_path: Path, checkpoints) -> None:
    """`--input ws --dashboard`: the window is closed while a client streams in real time. The
    stream is finished as on SIGTERM (what arrived is scored, summary, close 1001), the event
    log has it all, the CLI exits 0."""
    pytest.importorskip("pyqtgraph", reason="dashboard extra not installed (pyqtgraph)")
    from PySide6 import QtCore, QtWidgets

    from realtime.cli import main
    from realtime.dashboard.window import DashboardWindow

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    received: list = []
    closed_with: list = []

    def streaming_client() -> None:
        with connect_when_listening(port) as ws:
            ws.send(json.dumps({**START, "stream": "live"}))
            pcm = s16(speech(30.0, 0))
            try:
                for i in range(0, len(pcm), 3200):  # real time: 0.1 s per 0.1-s frame
                    ws.send(pcm[i:i + 3200])
                    time.sleep(0.1)
                    while True:
                        try:
                            received.append(parse_event(ws.recv(timeout=0)))
                        except TimeoutError:
                            break
                for msg in ws:
                    received.append(parse_event(msg))
            except ConnectionClosed:
                pass
            try:
                for msg in ws:  # what was queued before the close
                    received.append(parse_event(msg))
            except ConnectionClosed:
                pass
        closed_with.append(ws.close_code)

    t = threading.Thread(target=streaming_client, daemon=True)
    t.start()

    def close_mid_stream() -> None:
        for w in QtWidgets.QApplication.topLevelWidgets():
            x = w.curve.getData()[0] if isinstance(w, DashboardWindow) and w.isVisible() else None
            if x is not None and len(x) >= 2:  # two windows plotted: the stream is live
                w.close()
                return
        QtCore.QTimer.singleShot(50, close_mid_stream)

    QtCore.QTimer.singleShot(0, close_mid_stream)
    log_path = tmp_path / "events.jsonl"
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", "ws", "--port", str(port), "--json", "--model", str(checkpoints["specrnet"]),
                 "--engine", "onnx", "--dashboard", "--events", str(log_path)], stdout=out, stderr=err)
    t.join(30)
    assert code == 0, err.getvalue()
    assert closed_with == [1001]
    kinds = [e.type for e in received]
    assert kinds[0] == "ready" and kinds[-1] == "summary" and set(kinds[1:-1]) == {"score"}, kinds
    summary = received[-1]
    assert 2 <= summary.windows < 53 and summary.duration_s < 30.0  # stopped mid-stream
    logged = [parse_event(line) for line in log_path.read_text().splitlines()]
    assert logged == received[1:]


def test_a_finished_stream_is_freed_at_once_not_by_the_cyclic_gc(monkeypatch) -> None:
    """However a stream ends (end, vanished client, refusal), its session and buffers are freed
    by reference counting when the handler returns: a server under steady churn must not hold
    minutes of finished streams until the cyclic GC happens to run (the soak's RSS saw-tooth)."""
    import gc
    import weakref

    sessions: list[weakref.ref] = []
    open_stream = LiveDetector.open_stream

    def tracked(self, *args, **kwargs):
        s = open_stream(self, *args, **kwargs)
        sessions.append(weakref.ref(s))
        return s

    monkeypatch.setattr(LiveDetector, "open_stream", tracked)
    audio = s16(speech(4.5, 0))
    nan = np.zeros(800, "<f4")
    nan[3] = np.nan

    async def main() -> None:
        async with running() as server:
            await client(server, START, audio)  # end
            await client(server, {**START, "format": "f32le"}, nan.tobytes(), end=False)  # refused
            await client(server, START, audio + b"\x00")  # summary, then refused (partial frame)
            async with connect(url(server)) as ws:  # vanishes
                await ws.send(json.dumps(START))
                await ws.send(audio)
                await ws.recv()
                ws.transport.abort()
            await wait_for(lambda: server.health()["streams"] == 0)
            await asyncio.sleep(0.2)  # the last batch's results reach the loop
            assert len(sessions) == 4
            assert [r() for r in sessions] == [None] * 4

    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()
