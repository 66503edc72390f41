"""The live dashboard driven by real detection runs (random-weight checkpoints, real speech).

Headless: QT_QPA_PLATFORM=offscreen is set before Qt is imported. With RTD_SCREENSHOT_DIR set,
the window of the main test is saved there as dashboard.png (docs/dashboard.png comes from it).
"""
from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import threading
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

pytest.importorskip("PySide6.QtWidgets", reason="dashboard extra not installed (PySide6-Essentials)")
pytest.importorskip("pyqtgraph", reason="dashboard extra not installed (pyqtgraph)")
pytest.importorskip("pytestqt", reason="pytest-qt not installed")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from engines.features import log_features  # noqa: E402
from engines.frontend_config import FrontEndConfig  # noqa: E402
from realtime.alerts import AlertOptions  # noqa: E402
from realtime.cli import main  # noqa: E402
from realtime.dashboard import DashboardOptions  # noqa: E402
from realtime.dashboard.app import DashboardSession  # noqa: E402
from realtime.dashboard.gui_gc import GuiThreadCollection  # noqa: E402
from realtime.dashboard.window import NAMES, DashboardWindow  # noqa: E402
from realtime.events import ScoreEvent, SummaryEvent  # noqa: E402
from realtime.inputs import open_files  # noqa: E402
from realtime.options import DetectorOptions, EngineOptions, InputOptions  # noqa: E402
from realtime.run import run_inputs  # noqa: E402
from realtime.timeline import level_dbfs  # noqa: E402
from realtime.windowing import Window  # noqa: E402
from tests.conftest import speech  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "realtime" / "assets" / "demo.flac"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two clips of real speech: 10 s at 16 kHz, 7 s at 44.1 kHz stereo."""
    import soxr

    d = tmp_path_factory.mktemp("dash")
    a = d / "speech_a.wav"
    sf.write(a, np.concatenate([speech(5.0, 0), speech(5.0, 1)]), 16000)
    b = d / "speech_b.flac"
    sf.write(b, soxr.resample(np.stack([speech(7.0, 2), speech(7.0, 3)], axis=1), 16000, 44100), 44100)
    return [a, b]


class Recorder:
    """Output + observer: keeps every event, the engine facts and the last window per stream."""

    def __init__(self) -> None:
        self.events: list = []
        self.windows: dict[str, Window] = {}
        self.threshold: float | None = None
        self.frontend: FrontEndConfig | None = None

        self.stdout_closed = asyncio.Event()  # as the CLI's Output: never closed here

    def __call__(self, ev) -> None:  # as the CLI's Output
        self.events.append(ev)

    def model_line(self, model: str, threshold: float) -> None:  # as the CLI's Output
        pass

    def engine_ready(self, engine, threshold: float, hop_s: float) -> None:
        self.threshold = threshold
        self.frontend = FrontEndConfig.from_dict(engine.config.frontend)

    def window(self, w: Window) -> None:
        self.windows[w.stream] = w

    def event(self, ev) -> None:
        pass

    def scores(self, stream: str) -> list[ScoreEvent]:
        return [e for e in self.events if isinstance(e, ScoreEvent) and e.stream == stream]


def start_session(qtbot, files: list[Path], model: Path, rec: Recorder,
                  threshold: float | None = None) -> DashboardSession:
    options = DetectorOptions(engine=EngineOptions(str(model), "onnx"), input=InputOptions(offline=True),
                              alerts=AlertOptions(threshold=threshold))
    inputs = open_files([str(f) for f in files], options)
    session = DashboardSession(lambda bridge: run_inputs(inputs, options, rec, [rec, bridge]),
                               DashboardOptions(refresh_ms=20))
    qtbot.addWidget(session.window)
    session.start()
    qtbot.waitUntil(session.window.settled, timeout=120_000)
    return session


def test_window_shows_the_emitted_events(qtbot, checkpoints: dict[str, Path], clips: list[Path],
                                         tmp_path: Path) -> None:
    rec = Recorder()
    clip = clips[0]
    session = start_session(qtbot, [clip], checkpoints["specrnet"], rec)
    win: DashboardWindow = session.window
    stream = str(clip)
    scores = rec.scores(stream)
    assert len(scores) == 13  # 10 s: windows ending at 4.0, 4.5, ..., 10.0

    # The curve is exactly the emitted events: x = window end, y = spoof probability.
    x, y = win.curve.getData()
    np.testing.assert_array_equal(x, [e.end_s for e in scores])
    np.testing.assert_array_equal(y, [e.spoof_probability for e in scores])
    assert win.threshold_line.value() == pytest.approx(rec.threshold)
    last = scores[-1]
    assert win.verdict.text().startswith(NAMES[last.label])
    assert f"{last.spoof_probability:.2f}" in win.verdict.text()
    summary = [e for e in rec.events if isinstance(e, SummaryEvent)][0]
    assert "finished" in win.status.text() and f"over {summary.windows} windows" in win.status.text()

    # The spectrogram is the front end's features of the last window the engine scored.
    last_window = rec.windows[stream]
    assert win.spectrogram_key == (stream, last_window.seq)
    assert win.spectrogram.shape == (80, 401) == (rec.frontend.n_features, rec.frontend.n_frames(64000))
    assert win.image.image.shape == (80, 401)
    np.testing.assert_array_equal(win.spectrogram, log_features(last_window.samples, rec.frontend))
    assert win.level_db == pytest.approx(level_dbfs(last_window.samples[-8000:]))
    assert not win.stream_list.isVisible(), "one stream: no stream list"

    shot = win.grab()
    assert shot.save(str(tmp_path / "dashboard.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    if os.environ.get("RTD_SCREENSHOT_DIR"):
        out = Path(os.environ["RTD_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        assert shot.save(str(out / "dashboard.png"))

    # A finished run keeps the window open until it is closed; closing joins the threads.
    assert win.isVisible()
    win.close()
    assert not session.thread.is_alive() and not session.spectrograms._thread.is_alive()
    assert session.exit_code == 0


def test_alerts_are_shaded_and_shown(qtbot, checkpoints: dict[str, Path], clips: list[Path]) -> None:
    rec = Recorder()
    # Threshold below every probability: every window is spoof, and the alert rule (3 of the last 5)
    # turns on with the third and stays on: one span, from the end of the second window to the end.
    session = start_session(qtbot, [clips[0]], checkpoints["specrnet"], rec, threshold=0.001)
    win = session.window
    scores = rec.scores(str(clips[0]))
    assert all(e.label == "spoof" for e in scores)
    assert [e.alert for e in scores] == [False, False] + [True] * (len(scores) - 2)
    x, y = win.alert_fill.getData()
    np.testing.assert_allclose(x, [4.5, 10.0])
    np.testing.assert_allclose(y, [1.0])
    assert win.alert_fill.isVisible()
    assert win.verdict.text().startswith("SPOOF") and "ALERT" in win.verdict.text()
    win.close()


def test_several_streams_list_and_selection(qtbot, checkpoints: dict[str, Path], clips: list[Path]) -> None:
    rec = Recorder()
    session = start_session(qtbot, clips, checkpoints["resmax"], rec)
    win = session.window
    a, b = (str(c) for c in clips)
    assert win.stream_list.isVisible() and win.stream_list.count() == 2
    assert win.selected == b, "follows the newest stream until the user picks one"
    assert win.spectrogram.shape == (513, 251), "ResMax: log-power, 513 bins"
    x, y = win.curve.getData()
    np.testing.assert_array_equal(y, [e.spoof_probability for e in rec.scores(b)])

    win.stream_list.setCurrentRow(0)  # as a click does
    assert win.selected == a
    x, y = win.curve.getData()
    np.testing.assert_array_equal(x, [e.end_s for e in rec.scores(a)])
    np.testing.assert_array_equal(y, [e.spoof_probability for e in rec.scores(a)])
    qtbot.waitUntil(lambda: win.spectrogram_key == (a, rec.windows[a].seq), timeout=30_000)
    np.testing.assert_array_equal(win.spectrogram, log_features(rec.windows[a].samples, rec.frontend))
    assert "(file)" in win.stream_list.item(0).text()
    win.close()


def test_display_drops_are_counted(qtbot) -> None:
    """Events the GUI could not keep up with are dropped oldest first and counted on screen."""
    from realtime.dashboard.bridge import Bridge, SpectrogramWorker

    bridge = Bridge(max_events=5)
    worker = SpectrogramWorker()
    win = DashboardWindow(bridge, worker, DashboardOptions())
    qtbot.addWidget(win)
    for i in range(12):
        bridge(ScoreEvent(stream="s", seq=i, start_s=i / 2, end_s=i / 2 + 4, spoof_probability=0.3,
                          label="bonafide", alert=False, latency_ms=2.0, model="m", shed=1))
    win.tick()
    worker.close()
    x, _ = win.curve.getData()
    np.testing.assert_array_equal(x, [i / 2 + 4 for i in range(7, 12)])
    assert "display dropped 7" in win.counters_label.text() and "shed 5" in win.counters_label.text()


def _dashboard_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("detection", "spectrogram") or
            t.name.startswith("inference")]


def test_cli_dashboard_exit_closes_itself_and_exits_0(qtbot, checkpoints: dict[str, Path],
                                                      clips: list[Path]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", str(clips[0]), "--offline", "--json", "--model", str(checkpoints["specrnet"]),
                 "--dashboard", "--dashboard-exit"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["windows"] == 13
    assert not _dashboard_threads()


def test_cli_closing_the_window_stops_a_paced_run(qtbot, checkpoints: dict[str, Path], clips: list[Path]) -> None:
    closed: list[int] = []

    def close_after_first_point() -> None:
        for w in QtWidgets.QApplication.topLevelWidgets():
            if isinstance(w, DashboardWindow) and w.isVisible() and len(w.curve.getData()[0] or []) >= 1:
                closed.append(len(w.curve.getData()[0]))
                w.close()
                return
        QtCore.QTimer.singleShot(20, close_after_first_point)

    QtCore.QTimer.singleShot(0, close_after_first_point)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", str(clips[0]), "--json", "--model", str(checkpoints["specrnet"]), "--dashboard"],
                stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert closed and 1 <= len(events) < 13, "stopped mid-file: no summary, not all windows"
    assert all(e["type"] == "score" for e in events)
    assert not _dashboard_threads()


def test_cli_ctrl_c_closes_the_window_and_exits_130(qtbot, checkpoints: dict[str, Path], clips: list[Path]) -> None:
    import signal

    def interrupt_after_first_point() -> None:
        for w in QtWidgets.QApplication.topLevelWidgets():
            if isinstance(w, DashboardWindow) and w.isVisible() and len(w.curve.getData()[0] or []) >= 1:
                signal.raise_signal(signal.SIGINT)  # as Ctrl+C in the terminal
                return
        QtCore.QTimer.singleShot(20, interrupt_after_first_point)

    QtCore.QTimer.singleShot(0, interrupt_after_first_point)
    previous = signal.getsignal(signal.SIGINT)
    code = main(["--input", str(clips[0]), "--quiet", "--model", str(checkpoints["specrnet"]), "--dashboard"],
                stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 130
    assert signal.getsignal(signal.SIGINT) is previous, "the handler is restored"
    assert not _dashboard_threads()


def test_cli_dashboard_reports_a_model_that_cannot_load(qtbot, clips: list[Path], tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", str(clips[0]), "--model", str(tmp_path / "nope"), "--dashboard", "--dashboard-exit"],
                stdout=out, stderr=err)
    assert code == 1
    assert "nope" in err.getvalue() and err.getvalue().count("\n") == 1
    assert not _dashboard_threads()


@pytest.mark.skipif(not DEMO.is_file(), reason="bundled demo clip not in this checkout")
def test_demo_clip(qtbot, checkpoints: dict[str, Path]) -> None:
    rec = Recorder()
    session = start_session(qtbot, [DEMO], checkpoints["specrnet"], rec)
    x, y = session.window.curve.getData()
    np.testing.assert_array_equal(y, [e.spoof_probability for e in rec.scores(str(DEMO))])
    session.window.close()


def test_stream_list_is_bounded(qtbot) -> None:
    from realtime.dashboard.bridge import Bridge, SpectrogramWorker

    bridge = Bridge()
    worker = SpectrogramWorker()
    win = DashboardWindow(bridge, worker, DashboardOptions(max_streams=3))
    qtbot.addWidget(win)
    for i in range(5):
        s = f"call-{i}"
        bridge(ScoreEvent(stream=s, seq=0, start_s=0, end_s=4, spoof_probability=0.3, label="bonafide",
                          alert=False, latency_ms=2.0, model="m"))
        if i != 1:  # call-1 stays live
            bridge(SummaryEvent(stream=s, windows=1, spoof_probability=0.3, label="bonafide"))
        win.tick()
    worker.close()
    # Finished streams go first: call-0, then call-2; the live call-1 is kept.
    assert list(win.timelines) == ["call-1", "call-3", "call-4"]
    assert [win.stream_list.item(i).text().split()[0] for i in range(3)] == ["call-1", "call-3", "call-4"]
    assert win.selected == "call-4" and win.stream_list.currentRow() == 2


def test_stream_list_names_each_calls_track(qtbot) -> None:
    """A call's streams (telephony inputs) show their track; a plain stream shows none."""
    from realtime.dashboard.bridge import Bridge, SpectrogramWorker

    bridge = Bridge()
    worker = SpectrogramWorker()
    win = DashboardWindow(bridge, worker, DashboardOptions())
    qtbot.addWidget(win)
    for stream, track, p in (("CA1:caller", "caller", 0.9), ("CA1:agent", "agent", 0.1), ("ws-1", None, 0.2)):
        bridge(ScoreEvent(stream=stream, seq=0, start_s=0, end_s=4, spoof_probability=p,
                          label="spoof" if p > 0.5 else "bonafide", alert=False, latency_ms=2.0, model="m",
                          track=track))
    win.tick()
    win._refresh()
    worker.close()
    texts = [win.stream_list.item(i).text() for i in range(3)]
    assert texts[0].startswith("CA1:caller [caller]  0.90") and texts[1].startswith("CA1:agent [agent]  0.10")
    assert texts[2].startswith("ws-1  0.20")


def test_cli_stdin_with_dashboard(checkpoints: dict[str, Path]) -> None:
    """`--input - --dashboard --dashboard-exit` in a subprocess fed through a pipe (live session path)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    pcm = np.clip(np.round(speech(6.0, 1) * 32767), -32768, 32767).astype("<i2").tobytes()
    proc = subprocess.run(
        [sys.executable, "-m", "realtime.cli", "--input", "-", "--json", "--model", str(checkpoints["specrnet"]),
         "--engine", "onnx", "--dashboard", "--dashboard-exit"],
        cwd=REPO, input=pcm, capture_output=True, timeout=180,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr.decode()
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["stream"] == "stdin" and events[-1]["windows"] == 5


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ws_client(port: int, stream: str, audio: np.ndarray, out: dict[str, list]) -> None:
    """Stream ``audio`` as s16le to the server (retrying until it listens) and keep every event."""
    from tests.server_process import connect_when_listening

    with connect_when_listening(port) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000, "channels": 1, "format": "s16le",
                            "stream": stream}))
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes()
        for i in range(0, len(pcm), 6400):
            ws.send(pcm[i:i + 6400])
        ws.send(json.dumps({"type": "end"}))
        out[stream] = [json.loads(m) for m in ws]


def test_cli_websocket_server_with_dashboard(qtbot, checkpoints: dict[str, Path]) -> None:
    """Two WebSocket clients at once: both streams listed, the selected one plotted as its client saw
    it, its spectrogram shown; closing the window shuts the server down and the CLI exits 0."""
    port = _free_port()
    received: dict[str, list] = {}
    clients = [threading.Thread(target=_ws_client, args=(port, f"call-{i}", speech(7.0, i), received))
               for i in range(2)]
    for c in clients:
        c.start()
    seen: dict = {}

    def close_when_both_streams_are_done() -> None:
        for w in QtWidgets.QApplication.topLevelWidgets():
            if (isinstance(w, DashboardWindow) and w.isVisible() and len(w.summaries) == 2
                    and not any(c.is_alive() for c in clients) and w.up_to_date()):
                seen.update(streams=list(w.timelines), selected=w.selected, data=w.curve.getData(),
                            spec=None if w.spectrogram is None else w.spectrogram.shape,
                            listed=w.stream_list.count(), visible=w.stream_list.isVisible())
                w.close()
                return
        QtCore.QTimer.singleShot(50, close_when_both_streams_are_done)

    QtCore.QTimer.singleShot(0, close_when_both_streams_are_done)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", "ws", "--port", str(port), "--json", "--model", str(checkpoints["specrnet"]),
                 "--engine", "onnx", "--dashboard", "--max-delay-ms", "600000"],  # none shed for lateness
                stdout=out, stderr=err)
    for c in clients:
        c.join(10)
    assert code == 0, err.getvalue()
    assert sorted(seen["streams"]) == ["call-0", "call-1"] and seen["listed"] == 2 and seen["visible"]
    sel = seen["selected"]
    scores = [e for e in received[sel] if e["type"] == "score"]
    assert len(scores) == 7 and received[sel][-1]["type"] == "summary"
    x, y = seen["data"]
    np.testing.assert_array_equal(x, [e["end_s"] for e in scores])
    np.testing.assert_allclose(y, [e["spoof_probability"] for e in scores], atol=5.1e-5)  # JSON: 4 decimals
    assert seen["spec"] == (80, 401)
    assert not _dashboard_threads()


def test_garbage_is_collected_on_the_gui_thread_while_a_window_is_open(qtbot) -> None:
    """A worker that makes cyclic garbage never collects it while a session is open (Qt objects
    destroyed off the GUI thread can deadlock it); the GUI thread's timer does, and automatic
    collection comes back when the last session closes."""
    was = gc.isenabled()
    gc.collect()
    threads: list[bool] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            threads.append(threading.current_thread() is threading.main_thread())

    outer, inner = GuiThreadCollection(), GuiThreadCollection()
    try:
        assert not gc.isenabled()
        worker = threading.Thread(target=lambda: [Cycle() for _ in range(20_000)])  # far past gen 0's threshold
        worker.start()
        worker.join()
        assert threads == []  # nothing collected in the worker
        qtbot.waitUntil(lambda: len(threads) > 0, timeout=10_000)
        assert all(threads)
        inner.close()
        assert not gc.isenabled()  # the outer session is still open
    finally:
        outer.close()
        inner.close()
    assert gc.isenabled() == was
