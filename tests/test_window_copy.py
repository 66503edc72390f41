"""One copy per window: the ring's view -> a batch buffer row at submit, and what keeps samples later.

A window's samples from the windower are a view of its stream's ring, which writes over them as the
stream goes on; these tests let the ring move on a long way (a held engine, a held clip writer, a
display that keeps what it drained) and check that every consumer still has the window's own audio.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import realtime.alerts
from realtime.alerts import AlertOptions
from realtime.batcher import BatcherOptions, MicroBatcher, WindowResult
from realtime.dashboard.bridge import Bridge
from realtime.options import DetectorOptions, OutputOptions
from realtime.session import LiveDetector
from realtime.windowing import StreamWindower, WindowOptions
from tests.conftest import speech

W, CHUNK = 64000, 1600
PROBE = np.random.default_rng(7).standard_normal(W)  # a window's fingerprint: its dot product with this


def fingerprint(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ PROBE


class HeldEngine:
    """Returns each window's fingerprint as its logit; holds every call until ``gate`` is set."""

    window_samples, preferred_batch, model_id, threshold = W, 4, "held-00000000", 0.5

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10), "the test never released the engine"
        return fingerprint(x)


async def wait_for(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def test_windows_queued_while_the_ring_moves_on_are_scored_on_their_own_samples() -> None:
    """Two streams, the engine held while 20 s of each are cut (the ring keeps at most 7 s): every
    window waits in the queue long after the ring has written over its samples. Stream a (a window
    every 0.5 s) overflows its queue, so its oldest are shed: their rows are refilled from the end
    of their batch, among the windows of stream b (one every 3 s), which all stay. Each scored
    window is still scored on, and comes back with, its own audio."""
    audio = {"a": speech(20.0, 0), "b": speech(20.0, 1)}
    hops = {"a": 0.5, "b": 3.0}
    eng = HeldEngine()
    results: dict[str, list[WindowResult]] = {s: [] for s in audio}

    async def main() -> None:
        b = MicroBatcher(eng, BatcherOptions(max_wait_ms=0, max_pending=6, max_delay_ms=600_000)).start()
        streams = {s: b.open_stream(s, results[s].append, keep_samples=s == "a") for s in audio}
        windowers = {s: StreamWindower(s, 16000, options=WindowOptions(hop_s=hops[s])) for s in audio}
        for i in range(0, len(audio["a"]), CHUNK):
            for s, x in audio.items():
                for w in windowers[s].push(x[i:i + CHUNK, None]):
                    streams[s].submit(w)
            if i == W:  # window 0 of each stream is in the engine (or queued behind it): hold it there
                await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 10)
        assert all(w._ring.written > 2.5 * w._ring.capacity for w in windowers.values())
        eng.gate.set()
        await wait_for(lambda: all(st.in_flight == 0 for st in streams.values()))
        await b.aclose()

    asyncio.run(main())
    for s, x in audio.items():
        rs = results[s]
        assert [r.window.seq for r in rs] == list(range(len(range(0, len(x) - W + 1, round(hops[s] * 16000)))))
        scored = [r for r in rs if r.status == "scored"]
        shed = [r for r in rs if r.status == "shed"]
        # a: window 0 (in the held engine) and the 6 newest; b: all of its 6
        assert (len(scored), len(shed)) == ((7, 26) if s == "a" else (6, 0))
        for r in scored:
            start = round(r.window.start_s * 16000)
            assert r.logit == pytest.approx(fingerprint(x[start:start + W]), rel=1e-9, abs=1e-9)
            if s == "a":  # opened with keep_samples: its row comes back
                np.testing.assert_array_equal(r.window.samples, x[start:start + W])
            else:
                assert r.window.samples.size == 0
        assert all(r.window.samples.size == 0 for r in shed)


def test_an_alert_clip_keeps_its_audio_after_the_batch_buffer_is_reused(tmp_path, monkeypatch) -> None:
    """The clip writer is held while 12 s of spoof-scored speech go through: every window alerts, the
    batch buffers are reused all along (a clip keeps a copy of its window, not the buffer), and each
    clip written afterwards holds its own window's audio."""
    release = threading.Event()
    write = sf.write

    def held_write(*args, **kwargs):
        assert release.wait(10), "the test never released the clip writer"
        return write(*args, **kwargs)

    monkeypatch.setattr(realtime.alerts.sf, "write", held_write)
    x = speech(12.0, 2)
    events: list = []

    class Spoof(HeldEngine):
        def batch_logits(self, x: np.ndarray) -> np.ndarray:
            return np.full(len(x), 5.0)

    opts = DetectorOptions(batching=BatcherOptions(max_wait_ms=0, max_pending=2),
                           output=OutputOptions(save_alerts=tmp_path), alerts=AlertOptions(n=1, k_on=1))

    async def main() -> None:
        det = LiveDetector(Spoof(), opts, sinks=[events.append]).start()
        s = det.open_stream("t", 16000, policy="block")
        for i in range(0, len(x), CHUNK):
            await s.push(x[i:i + CHUNK, None])
        await s.finish()
        assert len(det.batcher._buffers) <= 5  # 2 windows in flight; none kept for the 17 queued clips
        release.set()
        await det.aclose()

    asyncio.run(main())
    scores = [e for e in events if getattr(e, "type", "") == "score"]
    assert len(scores) == 17 and all(e.alert for e in scores)
    for e in scores:
        y, sr = sf.read(tmp_path / f"t-{e.seq:06d}.wav", dtype="float32")
        start = round(e.start_s * 16000)
        np.testing.assert_array_equal(y, x[start:start + W])


def test_the_dashboard_keeps_the_audio_of_the_windows_it_drained() -> None:
    """The display drains the latest window of each stream and keeps it (the spectrogram is drawn
    later, in another thread) while the stream goes on: what it holds is still that window's audio."""
    x = speech(16.0, 3)
    bridge = Bridge()
    held = []

    class Neutral(HeldEngine):
        def batch_logits(self, x: np.ndarray) -> np.ndarray:
            return np.zeros(len(x))

    async def main() -> None:
        det = LiveDetector(Neutral(), DetectorOptions(batching=BatcherOptions(max_wait_ms=0)),
                           on_window=bridge.window).start()
        s = det.open_stream("t", 16000, policy="block")
        for k, i in enumerate(range(0, len(x), CHUNK)):
            await s.push(x[i:i + CHUNK, None])
            if k % 7 == 0:
                held.extend(bridge.drain().windows.values())
        await s.finish()
        await det.aclose()

    asyncio.run(main())
    assert len(held) >= 10
    for w in held:
        start = round(w.start_s * 16000)
        np.testing.assert_array_equal(w.samples, x[start:start + W])
