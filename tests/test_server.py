"""WebSocket server, protocol v1: streams, refusals, HTTP routes, auth, origins, slow readers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.batcher import BatcherOptions
from realtime.connection import LINGER_S
from realtime.events import parse_event
from realtime.options import DetectorOptions, ServerOptions, WindowingOptions
from realtime.server import DetectorServer
from realtime.session import LiveDetector
from tests.conftest import speech
from tests.test_session import FakeEngine

# No shedding for lateness: a busy machine is slow, and these tests count every window
# (shedding has its own tests, in test_batcher.py).
DET = DetectorOptions(batching=BatcherOptions(max_wait_ms=1.0, max_delay_ms=600_000))
OPTS = ServerOptions(port=0, idle_timeout_s=5.0)


@contextlib.asynccontextmanager
async def running(engine=None, options: ServerOptions = OPTS, detector: DetectorOptions = DET,
                  **kwargs) -> AsyncIterator[DetectorServer]:
    det = LiveDetector(engine or FakeEngine(), detector).start()
    server = DetectorServer(det, options, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        server.shutdown()
        await server.wait_closed()


def url(server: DetectorServer, path: str = "/v1/stream") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def s16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


async def client(server: DetectorServer, start: dict | str | bytes, audio: bytes = b"", frame: int = 3200, *,
                 end: bool = True, **connect_kwargs) -> tuple[list, int | None]:
    """Stream and collect every event until the server closes; returns (events, close code)."""
    events = []
    async with connect(url(server), **connect_kwargs) as ws:
        await ws.send(start if isinstance(start, (str, bytes)) else json.dumps(start))
        with contextlib.suppress(ConnectionClosed):  # a refused client may be closed mid-send
            for i in range(0, len(audio), frame):
                await ws.send(audio[i:i + frame])
                await asyncio.sleep(0)
            if end:
                await ws.send(json.dumps({"type": "end"}))
        try:
            async for msg in ws:
                events.append(parse_event(msg))
        except ConnectionClosed:
            pass
    return events, ws.close_code


def check_stream(events: list, stream: str, n_scores: int, end_s: float) -> None:
    assert events[0].type == "ready" and events[0].stream == stream
    assert (events[0].window_s, events[0].hop_s) == (4.0, 0.5)
    scores = [e for e in events if e.type == "score"]
    assert [e.seq for e in scores] == list(range(n_scores))
    assert [(e.start_s, e.end_s) for e in scores] == [(0.5 * k, 4.0 + 0.5 * k) for k in range(n_scores)]
    assert scores[-1].end_s == end_s
    assert events[-1].type == "summary" and events[-1].windows == n_scores and events[-1].shed == 0
    assert len(events) == n_scores + 2


@pytest.fixture(scope="module")
def onnx_engine(checkpoints):
    import engines

    return engines.load(checkpoints["specrnet"], engine="onnx", threads=1, max_batch=16)


def test_two_real_clients_16k_s16_and_48k_f32_stereo(onnx_engine) -> None:
    x16 = speech(6.0, 0)
    x48 = soxr.resample(speech(6.0, 1), 16000, 48000).astype(np.float32)
    stereo = np.stack([x48, 0.5 * x48], axis=1).astype("<f4").tobytes()

    async def main() -> None:
        async with running(onnx_engine) as server:
            (a, code_a), (b, code_b) = await asyncio.gather(
                client(server, {"type": "start", "sample_rate": 16000, "format": "s16le", "stream": "a"},
                       s16(x16)),
                client(server, {"type": "start", "sample_rate": 48000, "channels": 2, "format": "f32le",
                                "stream": "b"}, stereo, frame=48000 * 8 // 10))
            assert (code_a, code_b) == (1000, 1000)
            check_stream(a, "a", 5, 6.0)
            check_stream(b, "b", 5, 6.0)
            assert a[0].model == onnx_engine.model_id
            # Each model has its own threshold: the page draws the one in "ready".
            assert a[0].threshold == pytest.approx(onnx_engine.threshold, abs=1e-4) and b[0].threshold == a[0].threshold
            assert all(0.0 <= e.spoof_probability <= 1.0 for e in a[1:-1] + b[1:-1])
            assert onnx_engine.model_id == a[-1].model

    asyncio.run(main())


@pytest.mark.parametrize("start, code, close, words", [
    ('{"type": "start", "sample_rate": 16000,', "bad_request", 1008, "not valid JSON"),
    ({"type": "start", "sample_rate": 16000, "format": "mp3"}, "bad_format", 1003, "accepted: s16le, f32le"),
    (b"\x00\x01" * 100, "bad_request", 1008, "binary frame (200 bytes) before the start message"),
    ({"type": "start", "sample_rate": 10 ** 9, "format": "s16le"}, "bad_format", 1003, "8000..192000"),
    ({"type": "start", "sample_rate": 16000.0, "format": "s16le"}, "bad_format", 1003, "an integer"),
    ({"type": "start", "sample_rate": 16000, "channels": 9, "format": "s16le"}, "bad_format", 1003, "1..8"),
    ({"type": "hello"}, "bad_request", 1008, "got type 'hello'"),
    ({"type": "start", "sample_rate": 16000, "format": "s16le", "stream": "a/b"}, "bad_request", 1008, "A-Z"),
])
def test_bad_start_is_refused_while_another_client_streams(start, code, close, words) -> None:
    audio = s16(speech(4.5, 0))

    async def main() -> None:
        async with running() as server:
            good = asyncio.create_task(client(server, {"type": "start", "sample_rate": 16000, "format": "s16le",
                                                       "stream": "good"}, audio, frame=1600))
            events, got_close = await client(server, start, end=False)
            assert got_close == close
            assert len(events) == 1 and events[0].type == "error" and events[0].code == code
            assert words in events[0].message
            ok, ok_close = await good
            assert ok_close == 1000
            check_stream(ok, "good", 2, 4.5)

    asyncio.run(main())


def test_errors_after_start() -> None:
    start = {"type": "start", "sample_rate": 16000, "format": "f32le"}
    bad = np.zeros(800, "<f4")
    bad[7] = np.nan

    async def main() -> None:
        opts = replace(OPTS, max_message_bytes=4096, idle_timeout_s=0.3)
        async with running(options=opts) as server:
            ev, close = await client(server, start, bad.tobytes(), frame=3200, end=False)
            assert close == 1003 and ev[-1].code == "bad_audio" and "sample 7" in ev[-1].message
            ev, close = await client(server, start, b"\x00" * 8192, frame=8192, end=False)
            assert close == 1009 and ev[-1].code == "too_big" and "at most 4096" in ev[-1].message
            ev, close = await client(server, start, end=False)  # then silence: idle timeout
            assert close == 1008 and ev[-1].code == "timeout"
            async with connect(url(server)) as ws:
                await ws.send(json.dumps(start))
                await ws.recv()
                await ws.send("pause please")
                err = parse_event(await ws.recv())
                assert err.code == "bad_request" and "not understood" in err.message
            ev, close = await client(server, start, b"")  # end without audio
            assert close == 1000 and [e.type for e in ev] == ["ready", "error"] and ev[1].code == "empty_stream"
            # A refused connection lingers half-closed for LINGER_S before its handler ends.
            for _ in range(int(100 * (LINGER_S + 3))):
                if server.health()["streams"] == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.health()["streams"] == 0

    asyncio.run(main())


def http_get(server: DetectorServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def test_http_routes(tmp_path: Path) -> None:
    web = tmp_path / "web"
    (web / "vendor").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>live</title>")
    (web / "app.js").write_text("console.log(1)")
    (web / "vendor" / "lib.js").write_text("//")
    (web / "notes.md").write_text("not served")
    (tmp_path / "secret.txt").write_text("secret")

    async def main() -> None:
        async with running(web_root=web) as server:
            loop = asyncio.get_running_loop()
            get = lambda p: loop.run_in_executor(None, http_get, server, p)  # noqa: E731
            status, ctype, body = await get("/healthz")
            assert status == 200 and ctype == "application/json"
            health = json.loads(body)
            assert health["status"] == "ok" and health["model"] == "fake-00000000" and health["streams"] == 0
            assert (await get("/"))[:2] == (200, "text/html; charset=utf-8")
            assert (await get("/index.html"))[2].startswith(b"<!doctype html>")
            assert (await get("/app.js"))[:2] == (200, "text/javascript; charset=utf-8")
            assert (await get("/vendor/lib.js"))[0] == 200
            for path in ("/notes.md", "/../secret.txt", "/%2e%2e/secret.txt", "/vendor/../../secret.txt", "/nope"):
                assert (await get(path))[0] == 404, path

    asyncio.run(main())


def test_over_max_connections_gets_503_then_a_slot_frees() -> None:
    start = {"type": "start", "sample_rate": 16000, "format": "s16le"}

    async def main() -> None:
        async with running(options=replace(OPTS, max_connections=2)) as server:
            async with connect(url(server)) as a, connect(url(server)) as b:
                for ws in (a, b):
                    await ws.send(json.dumps(start))
                    assert parse_event(await ws.recv()).type == "ready"
                with pytest.raises(InvalidStatus) as exc:
                    async with connect(url(server)):
                        pass
                assert exc.value.response.status_code == 503
            ev, close = await client(server, start, s16(speech(4.0, 0)))
            assert close == 1000 and ev[-1].type == "summary"

    asyncio.run(main())


def test_token_by_header_or_start_message() -> None:
    start = {"type": "start", "sample_rate": 16000, "format": "s16le"}
    audio = s16(speech(4.0, 0))

    async def main() -> None:
        async with running(options=replace(OPTS, token="s3cret-token")) as server:
            ev, close = await client(server, start, audio)
            assert close == 1008 and ev[0].code == "unauthorized"
            ev, close = await client(server, {**start, "token": "s3cret-tokeN"}, audio)
            assert close == 1008 and ev[0].code == "unauthorized"
            with pytest.raises(InvalidStatus) as exc:
                await client(server, start, audio, additional_headers={"Authorization": "Bearer wrong"})
            assert exc.value.response.status_code == 401
            ev, close = await client(server, {**start, "token": "s3cret-token"}, audio)
            assert close == 1000 and ev[-1].type == "summary"
            ev, close = await client(server, start, audio, additional_headers={"Authorization": "Bearer s3cret-token"})
            assert close == 1000 and ev[-1].type == "summary"

    asyncio.run(main())


def test_origins(caplog) -> None:
    start = {"type": "start", "sample_rate": 16000, "format": "s16le"}
    audio = s16(speech(4.0, 0))

    async def main() -> None:
        async with running() as server:
            with pytest.raises(InvalidStatus) as exc:
                await client(server, start, audio, origin="http://evil.example")
            assert exc.value.response.status_code == 403
            same = f"http://127.0.0.1:{server.port}"
            ev, close = await client(server, start, audio, origin=same)
            assert close == 1000
        async with running(options=replace(OPTS, allowed_origins=["https://app.example"])) as server:
            ev, close = await client(server, start, audio, origin="https://app.example")
            assert close == 1000
            with pytest.raises(InvalidStatus):
                await client(server, start, audio, origin=f"http://127.0.0.1:{server.port}")

    with caplog.at_level("WARNING", logger="realtime.server"):
        asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2 and all("HTTP 403" in m and "origin" in m for m in refusals)
    assert not any(r.exc_info for r in caplog.records)


def test_slow_reader_does_not_block_another_client() -> None:
    """Client A never reads; the server drops A's oldest score events, B is unaffected."""
    opts = replace(OPTS, send_queue=8)
    det = replace(DET, windowing=WindowingOptions(hop_s=0.0625), batching=replace(DET.batching, max_pending=64))
    start = {"type": "start", "sample_rate": 16000, "format": "s16le"}
    long_audio = s16(np.resize(speech(10.0, 0), 16000 * 40))

    async def main() -> None:
        async with running(options=opts, detector=det, flush_s=0.5) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            async with connect(url(server), sock=sock, max_queue=1, close_timeout=0.5) as slow:
                await slow.send(json.dumps({**start, "stream": "slow"}))
                for conn in server._server.connections:  # keep the server's side buffer small too
                    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                for i in range(0, len(long_audio), 32000):
                    await slow.send(long_audio[i:i + 32000])
                await asyncio.sleep(0.5)
                ev, close = await client(server, {**start, "stream": "fast"}, s16(speech(4.5, 1)), frame=1600)
                assert close == 1000 and ev[-1].type == "summary" and ev[-1].windows == 9
                # B finished while A still holds its stream (no timing bound: a busy machine is slow).
                assert server.health()["streams"] == 2  # the slow one is still being served
        assert server.dropped_events > 0

    asyncio.run(main())


def test_sigterm_drains_streams_and_closes_1001(checkpoints, tmp_path: Path) -> None:
    """Server in a subprocess (the CLI): SIGTERM -> each open stream gets its last windows,
    its summary and close 1001; every event also went to stdout as JSON lines and to the
    event log; exit 0."""
    import re
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime.cli", "--input", "ws", "--port", "0", "--json", "--max-delay-ms", "600000",
         "--model", str(checkpoints["specrnet"]), "--engine", "onnx", "--events", str(tmp_path / "events.jsonl")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/v1/stream", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "server did not start"
        audio = s16(speech(5.2, 0))

        async def one(name: str) -> tuple[list, int | None]:
            events = []
            async with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
                await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le", "stream": name}))
                events.append(parse_event(await ws.recv()))
                for i in range(0, len(audio), 3200):
                    await ws.send(audio[i:i + 3200])
                while len(events) < 2:  # the first window was scored: the stream is live
                    events.append(parse_event(await ws.recv()))
                if name == "b":
                    proc.send_signal(signal.SIGTERM)
                try:
                    async for msg in ws:  # no "end" from us: the server ends the stream
                        events.append(parse_event(msg))
                except ConnectionClosed:
                    pass
            return events, ws.close_code

        async def main() -> list:
            a = asyncio.create_task(one("a"))
            await asyncio.sleep(0.3)
            return await asyncio.gather(a, one("b"))

        results = asyncio.run(main())
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    for events, close in results:
        assert close == 1001
        assert [e.type for e in events] == ["ready"] + ["score"] * 4 + ["summary"]
        assert [e.end_s for e in events[1:5]] == [4.0, 4.5, 5.0, 5.2]  # the tail window ends at the last sample
        assert events[-1].windows == 4 and events[-1].duration_s == 5.2
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(e["stream"] for e in lines if e["type"] == "summary") == ["a", "b"]
    assert sum(e["type"] == "score" for e in lines) == 8
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert logged == [e for e in lines if e["type"] != "ready"]


def test_cli_refuses_a_public_address_without_token(capsys, monkeypatch) -> None:
    from realtime.cli import main

    monkeypatch.delenv("REALTIME_DETECT_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--input", "ws", "--host", "0.0.0.0"])
    assert exc.value.code == 2
    assert "without --token" in capsys.readouterr().err


def test_url_token_only_with_the_flag_and_no_token_is_ever_logged(caplog) -> None:
    start = {"type": "start", "sample_rate": 16000, "format": "s16le"}
    audio = s16(speech(4.0, 0))
    secret, wrong = "s3cret-token-1f2e", "guess-token-9a8b"

    async def main() -> None:
        opts = replace(OPTS, token=secret)
        async with running(options=opts) as server:
            with pytest.raises(InvalidStatus) as exc:  # right token, but in the URL: not accepted
                async with connect(url(server, f"/v1/stream?token={secret}")):
                    pass
            assert exc.value.response.status_code == 401
            assert b"token in the URL not accepted" in exc.value.response.body
            ev, close = await client(server, {**start, "token": wrong}, audio)
            assert close == 1008 and ev[0].code == "unauthorized"
            with pytest.raises(InvalidStatus):
                await client(server, start, audio, additional_headers={"Authorization": f"Bearer {wrong}"})
        async with running(options=replace(opts, allow_url_token=True)) as server:
            events, close = [], None
            async with connect(url(server, f"/v1/stream?token={secret}")) as ws:
                await ws.send(json.dumps(start))
                await ws.send(audio)
                await ws.send(json.dumps({"type": "end"}))
                events = [parse_event(m) async for m in ws]
            assert ws.close_code == 1000 and events[-1].type == "summary"
            with pytest.raises(InvalidStatus) as exc:
                async with connect(url(server, f"/v1/stream?token={wrong}")):
                    pass
            assert exc.value.response.status_code == 401

    caplog.set_level(logging.INFO)  # every logger at INFO (the CLI keeps websockets at WARNING) ...
    caplog.set_level(logging.DEBUG, logger="realtime")  # ... and ours at DEBUG
    asyncio.run(main())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in text and wrong not in text
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(refusals) == 4  # URL token, wrong start token, wrong header, wrong URL token


def raw_get(port: int, path: str, host: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers={"Host": host})
    status = conn.getresponse().status
    conn.close()
    return status


def test_host_header_must_be_loopback_without_a_token() -> None:
    """DNS rebinding: a page of evil.example that now resolves to 127.0.0.1 passes the
    same-origin check (its Origin matches its Host), so without a token the Host must be ours."""

    async def main() -> None:
        async with running() as server:
            loop = asyncio.get_running_loop()
            get = lambda path, host: loop.run_in_executor(None, raw_get, server.port, path, host)  # noqa: E731
            for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]:80"):
                assert await get("/healthz", host) == 200, host
            for host in ("evil.example", f"evil.example:{server.port}", "192.168.1.10:80", ""):
                assert await get("/healthz", host) == 403, host
            assert await get("/v1/stream", "evil.example") == 403
            # (a client library adds its own Host: two Host headers are refused too)
            with pytest.raises(InvalidStatus) as exc:
                async with connect(url(server), additional_headers={"Host": "evil.example"}):
                    pass
            assert exc.value.response.status_code == 400
        for opts in (replace(OPTS, token="t0ken"), replace(OPTS, insecure=True)):
            async with running(options=opts) as server:
                status = await asyncio.get_running_loop().run_in_executor(
                    None, raw_get, server.port, "/healthz", "detector.example")
                assert status == 200

    asyncio.run(main())


def test_server_refuses_a_public_address_without_token() -> None:
    from realtime.access import InsecureBindError

    async def main() -> None:
        for host in ("0.0.0.0", "::", "", "detector.example"):
            det = LiveDetector(FakeEngine(), DET)
            with pytest.raises(InsecureBindError, match="no token is set"):
                await DetectorServer(det, replace(OPTS, host=host)).start()
        for opts in (replace(OPTS, host="0.0.0.0", insecure=True), replace(OPTS, host="0.0.0.0", token="t")):
            async with running(options=opts) as server:
                assert server.port > 0

    asyncio.run(main())
