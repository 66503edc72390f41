"""Display data and the Qt-free half of the dashboard: timeline spans, level, bridge, worker threads."""
from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from engines.features import log_features
from engines.frontend_config import SPECRNET_FRONTEND
from realtime.dashboard import DashboardUnavailableError, check_available
from realtime.dashboard.bridge import Bridge, SpectrogramWorker
from realtime.dashboard.runner import DetectionThread
from realtime.events import ScoreEvent, SummaryEvent
from realtime.timeline import SILENCE_DBFS, Timeline, arrival_cells, centre_cells, level_dbfs, merge_spans
from realtime.windowing import Window
from tests.conftest import REPO, speech


def score(seq: int, p: float, alert: bool, hop: float = 0.5, stream: str = "s") -> ScoreEvent:
    return ScoreEvent(stream=stream, seq=seq, start_s=seq * hop, end_s=seq * hop + 4.0, spoof_probability=p,
                      label="spoof" if alert else "bonafide", alert=alert, latency_ms=1.0 + seq, model="m")


def test_live_alert_spans_are_the_audio_that_arrived_with_alerting_windows() -> None:
    tl = Timeline("s")
    for i, a in enumerate([True, False, True, True, False, True]):
        tl.add(score(i, 0.9 if a else 0.1, a))
    # First window: its whole extent; later ones: (previous end, own end].
    assert tl.live_alert_spans() == [(0.0, 4.0), (4.5, 5.5), (6.0, 6.5)]


def test_centre_alert_spans_use_midpoint_cells() -> None:
    tl = Timeline("s")
    for i, a in enumerate([False, True, True, False]):
        tl.add(score(i, 0.5, a))
    # centres 2.0, 2.5, 3.0, 3.5; cells of points 1 and 2: [2.25, 2.75] and [2.75, 3.25]
    assert tl.centre_alert_spans() == [(2.25, 3.25)]
    single = Timeline("s")
    single.add(score(0, 0.9, True))
    assert single.centre_alert_spans() == [(0.0, 4.0)], "a lone window owns its whole extent"


def test_cells_and_merge_edge_cases() -> None:
    left, right = centre_cells(np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(left, [0.5, 1.5, 3.0])
    np.testing.assert_allclose(right, [1.5, 3.0, 5.0])
    left, right = arrival_cells(np.array([0.0, 0.5, 7.0]), np.array([4.0, 4.5, 11.0]))
    np.testing.assert_allclose(left, [0.0, 4.0, 7.0])  # a gap (next window starts later) is not bridged
    assert merge_spans(left, right, np.array([True, True, True])) == [(0.0, 4.5), (7.0, 11.0)]
    assert merge_spans(left, right, np.zeros(3, bool)) == []


def test_history_trims_old_points_without_widening_the_first_cell() -> None:
    tl = Timeline("s", history_s=2.0)
    for i in range(20):
        tl.add(score(i, 0.9, True))
    assert tl.end_times()[0] >= tl.end_times()[-1] - 2.0
    assert tl.windows == 20 and len(tl.events) == 5
    assert tl.live_alert_spans() == [(tl.end_times()[0] - 0.5, tl.end_times()[-1])]


def test_probabilities_nan_for_no_speech() -> None:
    tl = Timeline("s")
    tl.add(score(0, 0.2, False))
    tl.add(ScoreEvent(stream="s", seq=1, start_s=0.5, end_s=4.5, spoof_probability=None, label="no_speech",
                      alert=False, latency_ms=1.0, model="m"))
    p = tl.probabilities()
    assert p[0] == 0.2 and np.isnan(p[1])


def test_level_dbfs() -> None:
    t = np.arange(16000) / 16000
    assert level_dbfs(np.sin(2 * np.pi * 440 * t)) == pytest.approx(-3.01, abs=0.01)
    assert level_dbfs(0.1 * np.ones(100)) == pytest.approx(-20.0)
    assert level_dbfs(np.zeros(100)) == SILENCE_DBFS
    assert level_dbfs(np.zeros(0)) == SILENCE_DBFS


def test_bridge_drops_oldest_when_full_and_counts() -> None:
    b = Bridge(max_events=4)
    for i in range(10):
        b(score(i, 0.1, False))
    d = b.drain()
    assert [e.seq for e in d.events] == [6, 7, 8, 9]
    assert d.dropped == 6 and not d.done
    assert b.drain().events == [] and b.dropped == 6


def test_bridge_keeps_only_the_latest_window_per_stream() -> None:
    b = Bridge()
    wins = [Window(s, i, 0.0, 4.0, np.full(64000, i, np.float32), 0.0) for s in ("a", "b") for i in range(3)]
    for w in wins:
        b.window(w)
    d = b.drain()
    assert {s: w.seq for s, w in d.windows.items()} == {"a": 2, "b": 2}
    assert b.drain().windows == {}


def test_bridge_never_waits_on_a_slow_reader() -> None:
    b = Bridge(max_events=8)
    done = threading.Event()

    def produce() -> None:
        for i in range(5000):
            b(score(i, 0.1, False))
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    t.join(30)  # nobody drains: the producer still finishes
    assert done.is_set()
    assert b.dropped == 5000 - 8


def test_spectrogram_worker_computes_the_front_end_features() -> None:
    x = speech(4.0, 0)
    w = SpectrogramWorker()
    try:
        w.request(("s", 0), x, SPECRNET_FRONTEND)
        deadline = time.monotonic() + 30
        result = None
        while result is None and time.monotonic() < deadline:
            result = w.take()
            time.sleep(0.01)
    finally:
        w.close()
    assert result is not None
    key, feats = result
    assert key == ("s", 0) and feats.shape == (80, 401)
    np.testing.assert_array_equal(feats, log_features(x, SPECRNET_FRONTEND))
    assert not w._thread.is_alive()


def test_detection_thread_stop_cancels_and_joins() -> None:
    b = Bridge()
    started = threading.Event()
    cleaned = threading.Event()

    async def detect(bridge: Bridge) -> int:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()  # the detection's finally blocks run on cancel
        return 0

    t = DetectionThread(detect, b)
    t.start()
    assert started.wait(10)
    assert t.stop(timeout=10)
    assert cleaned.is_set() and t.cancelled and t.error is None
    assert b.drain().done


def test_detection_thread_hands_errors_over_and_finishes() -> None:
    async def detect(bridge: Bridge) -> int:
        bridge(SummaryEvent(stream="s", windows=0, spoof_probability=None, label="no_speech"))
        raise ValueError("bad model")

    b = Bridge()
    t = DetectionThread(detect, b)
    t.start()
    t.join(10)
    assert isinstance(t.error, ValueError) and b.error is t.error
    d = b.drain()
    assert d.done and len(d.events) == 1


def test_detection_thread_stopped_before_it_runs() -> None:
    async def detect(bridge: Bridge) -> int:
        raise AssertionError("must not run")

    t = DetectionThread(detect, Bridge())
    t.stop()
    t.start()
    t.join(10)
    assert t.cancelled and t.error is None


def test_missing_dashboard_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PySide6" else real(name, *a))
    with pytest.raises(DashboardUnavailableError) as e:
        check_available()
    msg = str(e.value)
    assert msg.startswith("the dashboard needs pyqtgraph and PySide6-Essentials (missing: PySide6-Essentials)")
    assert "pip install 'realtime-detect[dashboard]' -c constraints.txt" in msg


def test_cli_reports_missing_dashboard_and_still_runs_without_it(monkeypatch: pytest.MonkeyPatch,
                                                                 checkpoints, tmp_path) -> None:
    import io

    import soundfile as sf

    from realtime.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pyqtgraph", "PySide6") else real(name, *a))
    clip = tmp_path / "c.wav"
    sf.write(clip, speech(5.0, 0), 16000)
    args = ["--input", str(clip), "--offline", "--json", "--model", str(checkpoints["specrnet"])]
    out, err = io.StringIO(), io.StringIO()
    assert main(args + ["--dashboard"], stdout=out, stderr=err) == 1
    assert "missing: pyqtgraph, PySide6-Essentials" in err.getvalue() and out.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert main(args, stdout=out, stderr=err) == 0, err.getvalue()
    assert '"type":"summary"' in out.getvalue()


def test_display_modules_import_no_gui_plotting_or_torch() -> None:
    """The detection side of the dashboard and --plot's module load neither Qt nor matplotlib until used."""
    code = ("import sys, realtime.dashboard, realtime.dashboard.bridge, realtime.dashboard.runner, "
            "realtime.timeline, realtime.plot, realtime.cli\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('PySide6', 'pyqtgraph', 'matplotlib', 'torch', 'training'))\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
