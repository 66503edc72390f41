"""The browser client end to end: headless Chromium with a fake microphone playing real speech,
the page's AudioWorklet -> WebSocket -> server -> score events -> chart (marker ``browser``)."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from tests.cdp import Chromium, find_chromium
from tests.conftest import speech

WEB = Path(__file__).resolve().parents[1] / "realtime" / "web"
CLIP_S = 6.0


# ---- DEVELOPMENT STUB (replaced by the real server once it lands) ------------------------
async def stub_server(received: list[np.ndarray]):
    async def process_request(connection, request):
        if request.path.startswith("/v1/stream"):
            return None
        name = request.path.split("?")[0].lstrip("/") or "index.html"
        f = WEB / name
        if not f.is_file():
            return connection.respond(404, "not found\n")
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        return Response(200, "OK", Headers([("Content-Type", ctype)]), f.read_bytes())

    async def handler(ws):
        start = json.loads(await ws.recv())
        rate = start["sample_rate"]
        await ws.send(json.dumps({"type": "ready", "stream": "browser", "window_s": 4.0, "hop_s": 0.5,
                                  "model": "stub"}))
        total, seq, hop, win = 0, 0, rate // 2, 4 * rate
        async for msg in ws:
            if isinstance(msg, str):
                assert json.loads(msg)["type"] == "end"
                await ws.send(json.dumps({"type": "summary", "stream": "browser", "windows": seq,
                                          "spoof_probability": 0.1, "label": "bonafide"}))
                await ws.close(1000)
                return
            x = np.frombuffer(msg, "<f4")
            received.append(x)
            total += len(x)
            while total >= win + seq * hop:
                end = win + seq * hop
                p = float(min(1.0, np.sqrt(np.mean(x ** 2)) * 5))
                await ws.send(json.dumps({"type": "score", "stream": "browser", "seq": seq,
                                          "start_s": (end - win) / rate, "end_s": end / rate,
                                          "spoof_probability": p, "label": "spoof" if p > 0.5 else "bonafide",
                                          "alert": p > 0.5, "latency_ms": 1.0, "model": "stub"}))
                seq += 1

    return serve(handler, "127.0.0.1", 0, process_request=process_request)
# ---- END STUB ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not found (apt-get install chromium)")
    return exe


@pytest.mark.browser
def test_page_streams_fake_microphone_and_charts_scores(chromium, tmp_path):
    clip = speech(CLIP_S, 1)
    wav = tmp_path / "speech.wav"
    sf.write(wav, clip, 16000, subtype="PCM_16")  # Chrome's fake capture device reads PCM WAV
    received: list[np.ndarray] = []

    async def run():
        async with await stub_server(received) as server:
            port = server.sockets[0].getsockname()[1]
            args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={wav}"]
            async with Chromium(chromium, tmp_path / "profile", args) as browser:
                page = await browser.open_page(f"http://127.0.0.1:{port}/")
                assert await page.evaluate("window.__rtd.state()") == "idle"
                await page.click("#start")
                await page.wait_for("window.__rtd.state() === 'streaming'", timeout=30)
                rate = await page.evaluate("window.__rtd.sampleRate()")
                # Windows up to the end of the clip (the fake device then loops it).
                await page.wait_for(f"window.__rtd.events.some(e => e.end_s >= {CLIP_S})", timeout=60)
                await page.click("#stop")
                await page.wait_for("window.__rtd.state() === 'closed'", timeout=30)
                await page.wait_for("window.__rtd.drawnPoints() === window.__rtd.events.length", timeout=10)
                events = await page.evaluate("window.__rtd.events")
                summary = await page.evaluate("window.__rtd.summary")
                close = await page.evaluate("window.__rtd.closeCode")
                points = await page.evaluate("[window.__rtd.drawnPoints(), document.getElementById('chart').dataset.points]")
                shot = await page.screenshot(tmp_path / "browser.png")
                return rate, events, summary, close, points, shot, list(browser.console)

    rate, events, summary, close, points, shot, console = asyncio.run(asyncio.wait_for(run(), 180))
    assert rate >= 8000
    assert events and [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["end_s"] >= CLIP_S
    assert all(e["type"] == "score" and 0 <= e["spoof_probability"] <= 1 for e in events)
    assert summary is not None and summary["type"] == "summary" and close == 1000
    assert points == [len(events), str(len(events))]
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RTD_SCREENSHOT_DIR"):
        out = Path(os.environ["RTD_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "browser.png")
    assert not [c for c in console if c.startswith("exception")], console
