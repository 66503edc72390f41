"""The browser client end to end, against the real server (``realtime-detect --input ws``):
headless Chromium whose fake microphone plays real speech -> the page's AudioWorklet ->
f32le frames over /v1/stream -> the server's windows and model -> score events -> the
page's verdict and chart (marker ``browser``). Chromium is driven over CDP (tests/cdp.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf

from tests.cdp import Chromium, Page, find_chromium
from tests.conftest import REPO, speech

CLIP_S = 6.0
TOKEN = "browser-test-token"


@contextmanager
def real_server(checkpoint: Path, *extra: str) -> Iterator[int]:
    """The CLI's WebSocket server on a free port (serving realtime/web/ at /); yields the port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime.cli", "--input", "ws", "--port", "0", "--quiet",
         "--model", str(checkpoint), "--engine", "onnx", "--max-delay-ms", "600000", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            log.append(line)
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/v1/stream", line)
            if m:
                port = int(m.group(1))
                break
        assert port, f"server did not start: {''.join(log)}"
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fake_mic_args(wav: Path) -> list[str]:
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not found (apt-get install chromium)")
    return exe


@pytest.fixture
def speech_wav(tmp_path) -> Path:
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech(CLIP_S, 1), 16000, subtype="PCM_16")  # Chrome's fake capture device reads PCM WAV
    return wav


def save_screenshot(shot: Path) -> None:
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RTD_SCREENSHOT_DIR"):
        out = Path(os.environ["RTD_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)


async def stream_and_stop(page: Page, until_s: float) -> None:
    """Start the microphone, wait for windows up to ``until_s`` of stream time, stop, wait for the close."""
    await page.click("#start")
    await page.wait_for("window.__rtd.state() === 'streaming'", timeout=30)
    await page.wait_for(f"window.__rtd.events.some(e => e.end_s >= {until_s})", timeout=60)
    await page.click("#stop")
    await page.wait_for("window.__rtd.state() === 'closed'", timeout=30)
    await page.wait_for("window.__rtd.drawnPoints() === window.__rtd.events.length", timeout=10)


@pytest.mark.browser
def test_page_streams_fake_microphone_and_charts_scores(chromium, checkpoints, speech_wav, tmp_path):
    async def run(port: int):
        async with Chromium(chromium, tmp_path / "profile", fake_mic_args(speech_wav)) as browser:
            page = await browser.open_page(f"http://127.0.0.1:{port}/")
            assert await page.evaluate("window.__rtd.state()") == "idle"
            await stream_and_stop(page, CLIP_S)  # the fake device loops the clip; stop once it was heard
            state = await page.evaluate(
                "({events: window.__rtd.events, summary: window.__rtd.summary, close: window.__rtd.closeCode,"
                " rate: window.__rtd.sampleRate(), drawn: window.__rtd.drawnPoints(),"
                " points: document.getElementById('chart').dataset.points,"
                " verdict: document.getElementById('verdict').dataset.label,"
                " meta: document.getElementById('meta').textContent,"
                " threshold: document.getElementById('threshold').textContent,"
                " errors: window.__rtd.errors, message: document.getElementById('message').hidden})")
            shot = await page.screenshot(tmp_path / "browser.png")
            return state, shot, list(browser.console)

    # Not 0.50, the page's fallback: the threshold drawn is the one the server's "ready" sent.
    with real_server(checkpoints["specrnet"], "--threshold", "0.3") as port:
        state, shot, console = asyncio.run(asyncio.wait_for(run(port), 240))
    events = state["events"]
    assert state["threshold"] == "0.30"
    assert not [c for c in console if c.startswith("exception")], console
    assert state["errors"] == [] and state["message"] is True  # no error shown
    # Score events from the real server for the whole clip: 4-s windows every 0.5 s, in order,
    # then the tail window at the end of what was sent.
    assert len(events) >= 5 and [e["seq"] for e in events] == list(range(len(events)))
    assert [(e["start_s"], e["end_s"]) for e in events[:-1]] == [(0.5 * k, 4.0 + 0.5 * k) for k in range(len(events) - 1)]
    assert events[-1]["end_s"] >= CLIP_S and events[-1]["end_s"] - events[-1]["start_s"] == pytest.approx(4.0)
    model = events[0]["model"]
    assert state["meta"].startswith(f"model {model} · window 4")
    for e in events:
        assert e["type"] == "score" and e["stream"].startswith("ws-") and e["model"] == model
        assert e["label"] in ("bonafide", "spoof", "no_speech") and e["latency_ms"] >= 0
        assert e["spoof_probability"] is None or 0 <= e["spoof_probability"] <= 1
    assert any(e["label"] != "no_speech" for e in events)  # the speech was heard as speech
    assert state["verdict"] == events[-1]["label"]
    summary = state["summary"]
    assert summary["type"] == "summary" and summary["windows"] == len(events) and state["close"] == 1000
    assert summary["duration_s"] == pytest.approx(events[-1]["end_s"], abs=0.01)
    # The chart drew one point per event.
    assert state["drawn"] == len(events) and state["points"] == str(len(events))
    assert state["rate"] >= 8000
    save_screenshot(shot)


@pytest.mark.browser
def test_page_shows_a_refusal_then_streams_with_the_token(chromium, checkpoints, speech_wav, tmp_path):
    async def run(port: int):
        async with Chromium(chromium, tmp_path / "profile", fake_mic_args(speech_wav)) as browser:
            page = await browser.open_page(f"http://127.0.0.1:{port}/")
            await page.click("#start")  # no token: the server refuses the start message
            await page.wait_for("window.__rtd.state() === 'error'", timeout=30)
            refused = await page.evaluate(
                "({close: window.__rtd.closeCode, errors: window.__rtd.errors,"
                " status: document.getElementById('status').textContent,"
                " message: document.getElementById('message').textContent,"
                " start: document.getElementById('start').disabled})")
            shot = await page.screenshot(tmp_path / "browser-refused.png")
            await page.evaluate(f"document.getElementById('token').value = {TOKEN!r}")
            await stream_and_stop(page, 4.0)
            n, close = await page.evaluate("[window.__rtd.events.length, window.__rtd.closeCode]")
            return refused, shot, n, close

    with real_server(checkpoints["specrnet"], "--token", TOKEN) as port:
        refused, shot, n, close = asyncio.run(asyncio.wait_for(run(port), 240))
    assert refused["close"] == 1008 and refused["status"] == "closed 1008"
    assert [e["code"] for e in refused["errors"]] == ["unauthorized"]
    assert "server error unauthorized: a token is required" in refused["message"]
    assert "1008" in refused["message"] and refused["start"] is False  # visible, and ready to retry
    save_screenshot(shot)
    assert n >= 1 and close == 1000
