"""The batcher's per-hop path (realtime.hop_scoring): the scores of whole windows, each stream's
frames advanced in stream order (interleaved streams, shed and skipped windows, parallel calls),
state freed with its stream, and the option that turns it off or insists on it."""
from __future__ import annotations

import asyncio
import gc
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import engines
from engines.checkpoint import read_config
from engines.hop_frontend import StreamFrames
from realtime.batch_stream import BatchStream, QueuedItem, WindowResult
from realtime.batcher import BatcherOptions, MicroBatcher
from realtime.cli import main as cli_main
from realtime.hop_scoring import HopScoring, hop_scoring, split_request
from realtime.options import DetectorOptions, EngineOptions, WindowingOptions
from realtime.session import LiveDetector, model_window
from realtime.windowing import StreamWindower, Window
from tests.conftest import kept_windows, speech, speech_files

STREAMS = ("a", "b", "c")


@pytest.fixture(scope="module")
def engine() -> engines.Engine:
    return engines.load("specrnet", engine="onnx", split=True)


@pytest.fixture(scope="module")
def windows(engine: engines.Engine) -> dict[str, list[Window]]:
    """Each stream's windows as a live session cuts them (10.3 s of its own speech: 13 windows a
    hop apart, then the final flush window), samples copied."""
    out = {}
    for i, name in enumerate(STREAMS):
        w = StreamWindower(name, 16000, 1, model_window(engine))
        audio = speech(10.3, i)[:, None]
        out[name] = [*kept_windows(w.push(audio)), *kept_windows(w.finish())]
    return out


@pytest.fixture(scope="module")
def reference(engine: engines.Engine, windows: dict[str, list[Window]]) -> dict[tuple[str, int], float]:
    """Each window's logit through the whole-window graph."""
    flat = [w for ws in windows.values() for w in ws]
    logits = engine.logits(np.stack([w.samples for w in flat]))
    return {(w.stream, w.seq): float(z) for w, z in zip(flat, logits)}


async def _wait(cond, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def _spy(b: MicroBatcher) -> tuple[list[int], threading.Event, threading.Event]:
    """Record each window's front-end plan (hops on from its stream's last window, 0: whole) and hold
    the network at a gate (open unless cleared); the whole-window entry point must not run at all."""
    assert b.hop is not None
    plans: list[int] = []
    fe, rows = b.hop.frontend, b.hop.frontend._rows
    fe._rows = lambda window, hops: plans.append(hops) or rows(window, hops)  # type: ignore[method-assign]
    gate, entered = threading.Event(), threading.Event()
    gate.set()
    network = b.hop.network

    def held(features: np.ndarray) -> np.ndarray:
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        return network(features)

    b.hop.network = held

    def whole(x: np.ndarray) -> np.ndarray:
        raise AssertionError("the whole-window graph ran on the per-hop path")

    b.engine.batch_logits = whole  # type: ignore[method-assign]
    return plans, gate, entered


@pytest.mark.parametrize("parallel", [1, 2])
@pytest.mark.parametrize("shed", [False, True])
def test_per_hop_scores_equal_whole_windows(engine, windows, reference, parallel: int, shed: bool) -> None:
    """Three streams interleaved; stream b's speech gate skips every sixth window (its next one catches
    up two hops); with ``shed``, rounds of five windows per stream queue behind a held batch with room
    for three, so each round sheds and a shed row is refilled from the batch's end (rows out of order):
    the window after a shed one catches up too. Each stream's first and flush windows restart."""
    async def main() -> None:
        opts = BatcherOptions(max_batch=64, max_wait_ms=1, max_pending=3 if shed else 64,
                              max_delay_ms=600_000, parallel=parallel)
        b = MicroBatcher(engine, opts, hop=hop_scoring(engine, model_window(engine), "on")[0])
        plans, gate, entered = _spy(b)
        b.start()
        results: dict[str, list[WindowResult]] = {n: [] for n in STREAMS}
        handles = {n: b.open_stream(n, results[n].append) for n in STREAMS}
        order = [(n, w) for k in range(len(windows["a"])) for n in STREAMS for w in windows[n][k : k + 1]]
        rounds = [order[i : i + 15] for i in range(0, len(order), 15)] if shed else [order]
        loop = asyncio.get_running_loop()
        for chunk in rounds:
            if shed:
                gate.clear()
                entered.clear()
            for i, (n, w) in enumerate(chunk):
                handles[n].submit(w, score=not (n == "b" and w.seq % 6 == 5))
                if shed and i == 0:  # the worker is in the network with this one: the rest queue
                    assert await loop.run_in_executor(None, entered.wait, 30)
            gate.set()
            await _wait(lambda: all(h.in_flight == 0 for h in handles.values()))
        await b.aclose()
        for n in STREAMS:
            got = results[n]
            assert [r.window.seq for r in got] == [w.seq for w in windows[n]]
            scored = [r for r in got if r.status == "scored"]
            np.testing.assert_allclose([r.logit for r in scored], [reference[n, r.window.seq] for r in scored],
                                       rtol=0, atol=1e-4)
            assert {r.status for r in got} <= {"scored", "skipped", "shed"}
        shed_count = b.stats().shed
        assert (shed_count > 0) == shed
        assert plans.count(1) >= (10 if shed else 30)  # mostly one hop on when nothing is shed
        assert plans.count(2) >= 2 and (max(plans) >= 3) == shed  # after b's skipped windows; after shed ones
        assert plans.count(0) == 2 * len(STREAMS)  # each stream's first and flush window, whatever was shed

    asyncio.run(asyncio.wait_for(main(), 240))


def test_a_batch_out_of_row_order_is_fed_to_the_front_end_in_submit_order(engine, windows) -> None:
    """A shed window's row is taken by the batch's last: the front end still sees each stream's
    windows in order (computing them incrementally), and the features come back in row order."""
    hop, _ = hop_scoring(engine, model_window(engine), "on")
    assert hop is not None
    stream = BatchStream.__new__(BatchStream)
    stream.frames = None  # made at its first window
    ws = windows["a"][:3]
    items = [QueuedItem(stream, w, True, 0.0) for w in ws]
    rows = [0, 2, 1]  # window 1 sits in row 2, window 2 in row 1
    for it, r in zip(items, rows):
        it.row = r
    data = np.stack([ws[0].samples, ws[2].samples, ws[1].samples])
    plans: list[int] = []
    fe_rows = hop.frontend._rows
    hop.frontend._rows = lambda window, hops: plans.append(hops) or fe_rows(window, hops)  # type: ignore
    feats = hop.features(items, data)
    whole = HopScoring(engine, hop.frontend.layout)  # each window computed whole, on its own
    expected = np.concatenate([whole.frontend.features([whole.stream()], [0], w.samples[None]) for w in ws])
    np.testing.assert_allclose(feats[[0, 2, 1]], expected, rtol=0, atol=1e-5)
    assert plans == [0, 1, 1]


def test_stream_state_is_freed_when_streams_close(engine) -> None:
    async def main() -> None:
        b = MicroBatcher(engine, BatcherOptions(max_wait_ms=1),
                         hop=hop_scoring(engine, model_window(engine), "on")[0]).start()
        # "block": never shed (a busy machine would shed live windows queued past max_delay_ms, and a
        # shed first window makes no frames); this test is about freeing them.
        idle = b.open_stream("idle", lambda r: None, policy="block")
        handles = [b.open_stream(f"s{k}", lambda r: None, policy="block") for k in range(40)]
        for h in handles:
            h.submit(Window(h.name, 0, 0.0, 4.0, np.zeros(64000, np.float32), time.monotonic()))
        await _wait(lambda: all(h.in_flight == 0 for h in handles))
        assert all(isinstance(h.frames, StreamFrames) for h in handles) and idle.frames is None
        for h in handles:
            h.submit(Window(h.name, 1, 0.5, 4.5, np.zeros(64000, np.float32), time.monotonic()))
            h.close()  # with its window still in flight: freed once delivered
        idle.close()
        await _wait(lambda: all(h.in_flight == 0 for h in handles))
        assert all(h.frames is None for h in handles)
        assert b.stats().streams == 0
        await b.aclose()
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o) is StreamFrames]  # type(): isinstance would wake lazy module attributes

    asyncio.run(asyncio.wait_for(main(), 120))


def test_detector_uses_the_per_hop_path_where_it_applies(engine) -> None:
    default = LiveDetector(engine)  # auto
    assert default.batcher.hop is not None and default.scoring == "front end once per hop (127 KB per stream)"
    off = LiveDetector(engine, DetectorOptions(engine=EngineOptions(hop_frontend="off")))
    assert off.batcher.hop is None and off.scoring == "whole windows (--hop-frontend off)"
    plain = engines.load("specrnet", engine="onnx")
    assert LiveDetector(plain).batcher.hop is None  # auto: whole windows, and why
    assert LiveDetector(plain).scoring.startswith("whole windows: engine 'onnx' runs no network graph alone")
    with pytest.raises(ValueError, match="--hop-frontend on cannot apply: engine 'onnx' runs no network"):
        LiveDetector(plain, DetectorOptions(engine=EngineOptions(hop_frontend="on")))
    odd = DetectorOptions(windowing=WindowingOptions(hop_s=0.505))  # 50.5 frames of 10 ms
    assert LiveDetector(engine, odd).batcher.hop is None
    with pytest.raises(ValueError, match=r"on cannot apply: the window hop \(8080 samples\) is not a multiple"):
        LiveDetector(engine, replace(odd, engine=EngineOptions(hop_frontend="on")))
    with pytest.raises(ValueError, match="hop_frontend 'yes' not accepted; accepted: auto, on, off"):
        EngineOptions(hop_frontend="yes")


def test_split_is_loaded_only_where_it_will_be_used(checkpoints: dict[str, Path]) -> None:
    cfg = read_config(checkpoints["resmax"])
    assert split_request(DetectorOptions(), cfg) is False  # 0.5 s is not a whole number of 16-ms frames
    assert split_request(DetectorOptions(windowing=WindowingOptions(hop_s=0.512)), cfg) == "auto"
    with pytest.raises(ValueError, match=r"frame hop \(256 samples, 16 ms\)"):
        split_request(DetectorOptions(engine=EngineOptions(hop_frontend="on")), cfg)
    spec = read_config(engines.resolve_model("specrnet"))
    assert split_request(DetectorOptions(engine=EngineOptions(hop_frontend="on")), spec) is True
    assert split_request(DetectorOptions(engine=EngineOptions(hop_frontend="off")), spec) is False
    assert engines.load("specrnet", "onnx", split="auto").split
    assert not engines.load("specrnet", "torch", split="auto").split  # no split path: whole windows


def test_cli_refuses_hop_frontend_on_in_one_line(checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    clip = str(speech_files(1)[0])
    assert cli_main(["--input", clip, "--offline", "--model", str(checkpoints["resmax"]), "--hop-frontend", "on"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--hop-frontend on cannot apply: the window hop (8000 samples)" in err


def test_per_hop_batcher_warms_up_the_network_graph_alone() -> None:
    """The whole window's graph never runs on the per-hop path: its arena is never filled."""
    engine = engines.load("specrnet", engine="onnx", split=True)
    runs: list[str] = []
    for name in ("session", "network_session"):
        run = getattr(engine, name).run
        setattr(getattr(engine, name), "run", lambda out, feeds, run=run, name=name: runs.append(name) or run(out, feeds))
    b = MicroBatcher(engine, BatcherOptions(parallel=2), hop=hop_scoring(engine, model_window(engine), "on")[0])
    b.start()
    b.stop()
    b.join(60)
    assert runs == ["network_session", "network_session"]
    with pytest.raises(engines.EngineError, match="loaded without split=True"):
        engines.load("specrnet", engine="onnx").warm_up(1, network_only=True)
