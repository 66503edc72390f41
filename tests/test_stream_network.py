"""The network once per hop (engines.stream_network) for a streaming student (specrnet_stream): through
the batcher's per-hop path, each window's logit is its whole window's (interleaved streams, a gap, a
flush window), each stream's trunk frames are freed with it, and a hop off the trunk's stride falls
back to the front end alone. Random weights: mechanics, not accuracy."""
from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import engines
from engines.checkpoint import read_config, save_checkpoint
from engines.hop_frontend import HopLayout
from engines.models import build_detector
from engines.stream_network import StreamGeometry, StreamTrunk
from realtime.batch_stream import WindowResult
from realtime.batcher import BatcherOptions, MicroBatcher
from realtime.hop_scoring import hop_scoring
from realtime.session import model_window
from realtime.windowing import StreamWindower, Window, WindowOptions
from tests.conftest import kept_windows, speech

STREAMS = ("a", "b", "c")


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised specrnet_stream checkpoint with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    det = build_detector("specrnet_stream")
    det.train()
    with torch.no_grad():
        for _ in range(2):
            det(torch.from_numpy(np.stack([speech(4.0, i) for i in range(2)])))
    folder = tmp_path_factory.mktemp("student")
    save_checkpoint(det.eval(), folder, architecture="specrnet_stream", training_data={"note": "random init"})
    return folder


@pytest.fixture(scope="module")
def engine(student: Path) -> engines.Engine:
    return engines.load(student, engine="onnx", split=True)


def _windows(engine: engines.Engine) -> dict[str, list[Window]]:
    """Each stream's windows as a live session cuts them (10.3 s of its own speech: 13 windows a hop
    apart, then the final flush window)."""
    out = {}
    for i, name in enumerate(STREAMS):
        w = StreamWindower(name, 16000, 1, model_window(engine))
        out[name] = [*kept_windows(w.push(speech(10.3, i)[:, None])), *kept_windows(w.finish())]
    return out


async def _wait(cond, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def test_per_hop_logits_equal_whole_windows(engine: engines.Engine) -> None:
    """Three streams interleaved; stream b skips every sixth window (its next one catches up two
    hops); each ends with its flush window (off the hop grid: restarts). The whole window's graph
    never runs on the per-hop path."""
    windows = _windows(engine)
    flat = [w for ws in windows.values() for w in ws]
    reference = dict(zip(((w.stream, w.seq) for w in flat), engine.logits(np.stack([w.samples for w in flat]))))
    hop, scoring = hop_scoring(engine, model_window(engine), "on")
    assert hop is not None and hop.trunk is not None and scoring.startswith("front end and network trunk once per hop")
    rows: list[int] = []
    trunk = hop.trunk._trunk
    hop.trunk._trunk = lambda x: rows.append(len(x)) or trunk(x)  # type: ignore[method-assign]

    def whole(x: np.ndarray) -> np.ndarray:
        raise AssertionError("the whole-window graph ran on the per-hop path")

    engine_calls = engine.batch_logits
    engine.batch_logits = whole  # type: ignore[method-assign]

    async def main() -> dict[str, list[WindowResult]]:
        b = MicroBatcher(engine, BatcherOptions(max_batch=64, max_wait_ms=1, max_delay_ms=600_000), hop=hop)
        b.start()
        results: dict[str, list[WindowResult]] = {n: [] for n in STREAMS}
        handles = {n: b.open_stream(n, results[n].append, policy="block") for n in STREAMS}
        for k in range(len(windows["a"])):
            for n in STREAMS:
                for w in windows[n][k : k + 1]:
                    handles[n].submit(w, score=not (n == "b" and w.seq % 6 == 5))
            await _wait(lambda: all(h.in_flight == 0 for h in handles.values()))  # a batch per round
        await b.aclose()
        return results

    try:
        results = asyncio.run(asyncio.wait_for(main(), 240))
    finally:
        engine.batch_logits = engine_calls  # type: ignore[method-assign]
    for n in STREAMS:
        scored = [r for r in results[n] if r.status == "scored"]
        assert [r.window.seq for r in results[n]] == [w.seq for w in windows[n]]
        assert len(scored) == len(windows[n]) - (2 if n == "b" else 0)
        np.testing.assert_allclose([r.logit for r in scored], [reference[n, r.window.seq] for r in scored],
                                   rtol=0, atol=1e-4)
    g = hop.trunk.geometry
    # Whole windows: each stream's first and its flush window; one row per other, two after b's skips.
    restarts = 3 + 3
    assert sum(rows) == restarts * len(g.tiles) + (len(flat) - 2 - restarts) + 2


# Which of a stream's windows (seq, a hop apart) are submitted: the rest never reach the batcher (shed
# or skipped upstream). "gap" also holds a window off the hop grid (GAP), which must restart both caches.
GAP = -1
CATCH_UP = {
    "k2": list(range(0, 21, 2)),  # each window two hops on: catches up
    "k3": list(range(0, 21, 3)),
    "k7": [0, 7, 14],  # seven: the most that still shares frames (7 * 5 < 39 trunk, 7 * 50 < 397 interior)
    "k8": [0, 8, 16],  # eight: shares none, restarts
    "gap": [0, 1, GAP, 12, 14, 15],  # 0.1 s off the grid, then back on it: restarts twice
}
RESTARTS = {"k2": 1, "k3": 1, "k7": 1, "k8": 3, "gap": 3}


def _skipping_windows(engine: engines.Engine) -> dict[str, list[Window]]:
    """Each stream's submitted windows, of 14 s of its own speech (windows 0..20)."""
    out = {}
    for i, name in enumerate(CATCH_UP):
        audio = speech(14.0, i % 4)
        w = StreamWindower(name, 16000, 1, model_window(engine))
        cut = kept_windows(w.push(audio[:, None]))
        start = 9 * 8000 + 1600
        off_grid = Window(name, 9, start / 16000, start / 16000 + 4.0, audio[start : start + 64000], time.monotonic())
        out[name] = [off_grid if seq == GAP else cut[seq] for seq in CATCH_UP[name]]
    return out


@pytest.mark.parametrize(("parallel", "together"), [(1, False), (2, False), (2, True)])
def test_windows_after_skipped_ones_catch_up_and_equal_whole_windows(engine: engines.Engine, parallel: int,
                                                                     together: bool) -> None:
    """A window k hops after its stream's last scored one computes only its last k hops' frames and
    k trunk tiles while k hops still share some, else restarts; a window off the hop grid restarts.
    Through the batcher, on real speech; ``together``: all submitted at once, so a batch holds
    several windows of one stream (each catching up from the one before it in the batch). With
    ``parallel`` 2 the spectral transform and the trunk graph run in parts on the engine pool too."""
    windows = _skipping_windows(engine)
    flat = [w for ws in windows.values() for w in ws]
    reference = engine.logits(np.stack([w.samples for w in flat]))
    hop, _ = hop_scoring(engine, model_window(engine), "on")
    assert hop is not None and hop.trunk is not None
    plans: list[int] = []
    fe_rows, rows = hop.frontend._rows, []
    hop.frontend._rows = lambda window, hops: plans.append(hops) or fe_rows(window, hops)  # type: ignore[method-assign]
    trunk, spectral, threads = hop.trunk._trunk, hop.frontend._spectral, set()

    def on_thread(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        """``fn``, noting each thread it runs on."""
        return lambda x: threads.add((fn, threading.current_thread().name)) or fn(x)

    hop.trunk._trunk = on_thread(lambda x: rows.append(len(x)) or trunk(x))  # type: ignore[method-assign]
    hop.frontend._spectral = on_thread(spectral)  # type: ignore[assignment]

    async def main() -> dict[str, list[WindowResult]]:
        opts = BatcherOptions(max_wait_ms=1, max_pending=64, max_delay_ms=600_000, parallel=parallel)
        b = MicroBatcher(engine, opts, hop=hop)
        b.start()
        results: dict[str, list[WindowResult]] = {n: [] for n in windows}
        handles = {n: b.open_stream(n, results[n].append, policy="block") for n in windows}
        for k in range(max(map(len, windows.values()))):
            for n, ws in windows.items():
                for w in ws[k : k + 1]:
                    handles[n].submit(w)
            if not together:
                await _wait(lambda: all(h.in_flight == 0 for h in handles.values()))
        await b.aclose()
        return results

    results = asyncio.run(asyncio.wait_for(main(), 240))
    got = {(r.window.stream, r.window.start_s): r.logit for rs in results.values() for r in rs}
    assert [r.status for rs in results.values() for r in rs] == ["scored"] * len(flat)
    np.testing.assert_allclose([got[w.stream, w.start_s] for w in flat], reference, rtol=0, atol=1e-4)
    hops = {"k2": 2, "k3": 3, "k7": 7}
    expected = [0] * sum(RESTARTS.values()) + [hops[n] for n, ws in windows.items() if n in hops
                                                for _ in ws[1:]] + [1, 2, 1]  # gap: windows 1, 14, 15
    assert sorted(plans) == sorted(expected)
    g = hop.trunk.geometry
    assert sum(rows) == sum(k if k else len(g.tiles) for k in expected)
    pooled = {fn for fn, name in threads if name.startswith("engine")}
    assert len(pooled) == (2 if parallel == 2 else 0)  # both pure computations split over the engine pool


def test_trunk_frames_are_freed_when_streams_close(engine: engines.Engine) -> None:
    async def main() -> None:
        b = MicroBatcher(engine, BatcherOptions(max_wait_ms=1),
                         hop=hop_scoring(engine, model_window(engine), "on")[0]).start()
        handles = [b.open_stream(f"s{k}", lambda r: None, policy="block") for k in range(40)]
        for h in handles:
            h.submit(Window(h.name, 0, 0.0, 4.0, np.zeros(64000, np.float32), time.monotonic()))
        await _wait(lambda: all(h.in_flight == 0 for h in handles))
        assert all(isinstance(h.trunk, StreamTrunk) for h in handles)
        for h in handles:
            h.submit(Window(h.name, 1, 0.5, 4.5, np.zeros(64000, np.float32), time.monotonic()))
            h.close()  # with its window still in flight: freed once delivered
        await _wait(lambda: all(h.in_flight == 0 for h in handles))
        assert all(h.trunk is None and h.frames is None for h in handles)
        await b.aclose()
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o) is StreamTrunk]

    asyncio.run(asyncio.wait_for(main(), 120))


def test_geometry_is_recorded_and_a_hop_off_the_stride_falls_back(student: Path, engine: engines.Engine) -> None:
    cfg = read_config(student)
    assert cfg.stream is not None and cfg.stream["geometry"] == {
        "frames": 39, "first": 5, "stride": 10, "context": 14, "channels": 64, "window_frames": 401}
    g = StreamGeometry.from_record(cfg.stream, HopLayout.for_model(cfg))
    assert (g.step, g.tile, g.tiles) == (5, 54, (0, 5, 10, 15, 20, 25, 30, 34))
    with pytest.raises(ValueError, match=r"hop \(25 frames\) is not a multiple of the network trunk's stride"):
        StreamGeometry.from_record(cfg.stream, HopLayout.for_model(cfg, hop=4000))
    hop, scoring = hop_scoring(engine, WindowOptions(16000, 4.0, 0.25), "auto")
    assert hop is not None and hop.trunk is None
    assert "network whole: the window hop (25 frames) is not a multiple" in scoring
    assert engine.info()["stream"] and not engines.load(student, engine="onnx").info()["stream"]
