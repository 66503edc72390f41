"""The dashboard's widgets. Everything here runs on the GUI thread only.

A QTimer drains the :class:`~realtime.dashboard.bridge.Bridge` every ``refresh_ms``; drawing
happens once per tick whatever the number of events, so a burst (an offline file) costs one
redraw. The spectrogram comes from the :class:`~realtime.dashboard.bridge.SpectrogramWorker`.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets  # imported before pyqtgraph so it picks PySide6

import pyqtgraph as pg
from realtime.dashboard import DashboardOptions
from realtime.dashboard.bridge import Bridge, ModelInfo, SpectrogramWorker
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent
from realtime.timeline import SILENCE_DBFS, Timeline, level_dbfs
from realtime.windowing import Window

__all__ = ["DashboardWindow"]

COLORS = {"spoof": "#d62728", "bonafide": "#2ca02c", "no_speech": "#7f7f7f", "none": "#555555"}
NAMES = {"spoof": "SPOOF", "bonafide": "BONAFIDE", "no_speech": "NO SPEECH"}
LEVEL_FLOOR_DB = -60.0  # bottom of the level meter


class DashboardWindow(QtWidgets.QMainWindow):
    """Probability timeline, verdict, counters, level meter and spectrogram of one selected stream."""

    closed = QtCore.Signal()

    def __init__(self, bridge: Bridge, spectrograms: SpectrogramWorker, options: DashboardOptions | None = None,
                 ) -> None:
        super().__init__()
        self.bridge = bridge
        self.spectrograms = spectrograms
        self.options = options or DashboardOptions()
        self.model: ModelInfo | None = None
        self.timelines: dict[str, Timeline] = {}
        self.summaries: dict[str, SummaryEvent] = {}
        self.errors: deque[ErrorEvent] = deque(maxlen=50)  # the newest is shown in the status bar
        self.failed: set[str] = set()  # streams that ended with an error
        self.tracks: dict[str, str] = {}  # telephony streams: which party (caller, agent, mixed)
        self.latest_windows: dict[str, Window] = {}
        self.selected: str | None = None
        self.dropped = 0
        self.done = False
        self.level_db: float | None = None
        self.spectrogram: np.ndarray | None = None  # features [n_features, frames] on display
        self.spectrogram_key: tuple[str, int] | None = None  # (stream, seq) of the window shown
        self._requested_key: tuple[str, int] | None = None
        self._user_selected = False
        self._dirty = False
        self._closing = False
        self.setWindowTitle(self.options.title)
        self._build()
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(self.options.refresh_ms)
        self._timer.timeout.connect(self.tick)

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        pg.setConfigOptions(antialias=True, background="w", foreground="k")
        central = QtWidgets.QWidget()
        outer = QtWidgets.QHBoxLayout(central)
        self.stream_list = QtWidgets.QListWidget()
        self.stream_list.setMaximumWidth(260)
        self.stream_list.setVisible(False)  # shown once there are two streams
        self.stream_list.currentRowChanged.connect(self._on_row_changed)
        outer.addWidget(self.stream_list)
        right = QtWidgets.QVBoxLayout()
        outer.addLayout(right, 1)

        top = QtWidgets.QHBoxLayout()
        self.verdict = QtWidgets.QLabel("waiting")
        font = self.verdict.font()
        font.setPointSize(28)
        font.setBold(True)
        self.verdict.setFont(font)
        self.verdict.setMinimumWidth(300)
        self.verdict.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._paint_verdict("none")
        top.addWidget(self.verdict)
        info = QtWidgets.QVBoxLayout()
        self.stream_label = QtWidgets.QLabel("")
        self.model_label = QtWidgets.QLabel("loading model")
        self.latency_label = QtWidgets.QLabel("latency -")
        self.counters_label = QtWidgets.QLabel("shed 0 · display dropped 0")
        for w in (self.stream_label, self.model_label, self.latency_label, self.counters_label):
            info.addWidget(w)
        top.addLayout(info, 1)
        meter = QtWidgets.QVBoxLayout()
        self.level_bar = QtWidgets.QProgressBar()
        self.level_bar.setOrientation(QtCore.Qt.Orientation.Vertical)
        self.level_bar.setRange(0, 1000)
        self.level_bar.setTextVisible(False)
        self.level_bar.setFixedWidth(22)
        self.level_label = QtWidgets.QLabel("- dBFS")
        meter.addWidget(self.level_bar, 1, QtCore.Qt.AlignmentFlag.AlignHCenter)
        meter.addWidget(self.level_label)
        top.addLayout(meter)
        right.addLayout(top)

        self.plot = pg.PlotWidget()
        self.plot.setLabel("left", "spoof probability")
        self.plot.setLabel("bottom", "window end (s)")
        self.plot.setYRange(0.0, 1.0, padding=0.02)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        # Alert spans: one step curve filled down to 0 (a single item however many spans).
        self.alert_fill = pg.PlotCurveItem(np.zeros(1), np.zeros(0), stepMode="center", fillLevel=0.0,
                                           brush=pg.mkBrush(214, 39, 40, 60), pen=pg.mkPen(None))
        self.alert_fill.setZValue(-10)
        self.plot.addItem(self.alert_fill)
        self.threshold_line = pg.InfiniteLine(pos=0.5, angle=0, movable=False,
                                              pen=pg.mkPen("#444444", width=1, style=QtCore.Qt.PenStyle.DashLine))
        self.threshold_line.setVisible(False)
        self.plot.addItem(self.threshold_line)
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2), symbol="o", symbolSize=5,
                                    symbolBrush="#1f77b4", symbolPen=None, connect="finite")
        right.addWidget(self.plot, 3)

        self.spec_plot = pg.PlotWidget()
        self.spec_plot.setLabel("bottom", "seconds in the latest window")
        self.spec_plot.setLabel("left", "band")
        self.spec_plot.setMouseEnabled(x=False, y=False)
        self.spec_plot.setTitle("spectrogram of the latest window")  # reserves the title row
        self.image = pg.ImageItem(axisOrder="row-major")  # image[row=band, col=frame]
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.spec_plot.addItem(self.image)
        right.addWidget(self.spec_plot, 2)

        self.setCentralWidget(central)
        self.status = QtWidgets.QLabel("running")
        self.statusBar().addWidget(self.status, 1)
        self.resize(1100, 720)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._timer.start()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt override
        self._timer.stop()
        if not self._closing:
            self._closing = True
            self.closed.emit()  # the session stops detection and joins its thread
        event.accept()

    # -- per tick ------------------------------------------------------------------------------
    def tick(self) -> None:
        d = self.bridge.drain()
        if d.model is not None:
            self._set_model(d.model)
        for ev in d.events:
            if getattr(ev, "track", None) is not None and ev.stream is not None:
                self.tracks[ev.stream] = ev.track
            if isinstance(ev, ScoreEvent):
                self._timeline(ev.stream).add(ev)
                self._dirty = True
            elif isinstance(ev, SummaryEvent):
                self.summaries[ev.stream] = ev
                self._timeline(ev.stream)
                self._dirty = True
            elif isinstance(ev, ErrorEvent):
                self.errors.append(ev)
                if ev.stream is not None:
                    self._timeline(ev.stream)
                    self.failed.add(ev.stream)
                self._dirty = True
        self.latest_windows.update(d.windows)
        if d.dropped != self.dropped:
            self.dropped = d.dropped
            self._dirty = True
        if d.done and not self.done:
            self.done = True
            self._dirty = True
        if self._dirty:
            self._dirty = False
            self._refresh()
        self._update_spectrogram()
        if self.done and self.options.exit_when_done and self.settled():
            QtCore.QTimer.singleShot(0, self.close)

    def settled(self) -> bool:
        """Detection has ended and everything it produced is on screen (spectrogram included)."""
        return self.done and self.up_to_date()

    def up_to_date(self) -> bool:
        """The spectrogram shows the newest window of the selected stream (or there is none)."""
        w = self.latest_windows.get(self.selected) if self.selected else None
        return w is None or self.model is None or self.spectrogram_key == (w.stream, w.seq)

    # -- model, streams ------------------------------------------------------------------------
    def _set_model(self, info: ModelInfo) -> None:
        self.model = info
        self.threshold_line.setValue(info.threshold)
        self.threshold_line.setVisible(True)
        self.model_label.setText(f"model {info.model_id} · threshold {info.threshold:.2f} · hop {info.hop_s:g} s")
        n = info.frontend.n_features
        self.spec_plot.setLabel("left", info.frontend.band_label)
        self.spec_plot.setYRange(0, n, padding=0)

    def _timeline(self, stream: str) -> Timeline:
        tl = self.timelines.get(stream)
        if tl is None:
            if len(self.timelines) >= self.options.max_streams:
                self._forget_oldest()
            tl = self.timelines[stream] = Timeline(stream, history_s=self.options.history_s)
            self.stream_list.addItem(QtWidgets.QListWidgetItem(stream))
            self.stream_list.setVisible(len(self.timelines) > 1)
            if self.selected is None or not self._user_selected:
                self._select(stream, user=False)  # follow the newest stream until the user picks one
        return tl

    def _forget_oldest(self) -> None:
        """Drop the oldest finished stream (else the oldest one) that is not on display."""
        candidates = [s for s in self.timelines if s != self.selected]
        finished = [s for s in candidates if s in self.summaries or s in self.failed]
        victim = (finished or candidates)[0]
        row = list(self.timelines).index(victim)
        for store in (self.timelines, self.summaries, self.latest_windows, self.tracks):
            store.pop(victim, None)  # type: ignore[attr-defined]
        self.failed.discard(victim)
        self.stream_list.blockSignals(True)
        self.stream_list.takeItem(row)
        self.stream_list.blockSignals(False)

    def _select(self, stream: str, user: bool) -> None:
        self.selected = stream
        self._user_selected = self._user_selected or user
        row = list(self.timelines).index(stream)
        if self.stream_list.currentRow() != row:
            self.stream_list.blockSignals(True)
            self.stream_list.setCurrentRow(row)
            self.stream_list.blockSignals(False)
        self._dirty = True

    def _on_row_changed(self, row: int) -> None:
        if 0 <= row < len(self.timelines):
            self._select(list(self.timelines)[row], user=True)
            self._refresh()
            self._update_spectrogram()

    def _list_text(self, stream: str) -> tuple[str, str]:
        """Stream list entry and its colour key: the latest verdict, or the file verdict when done;
        a call's streams also name their track (caller / agent / mixed)."""
        name = f"{stream} [{self.tracks[stream]}]" if stream in self.tracks else stream
        if stream in self.failed:
            return f"{name}  error", "spoof"
        s = self.summaries.get(stream)
        if s is not None:
            p = "-" if s.spoof_probability is None else f"{s.spoof_probability:.2f}"
            return f"{name}  {p} {NAMES[s.label]} (file)", s.label
        last = self.timelines[stream].last
        if last is None:
            return name, "none"
        p = "-" if last.spoof_probability is None else f"{last.spoof_probability:.2f}"
        return f"{name}  {p} {NAMES[last.label]}", last.label

    # -- drawing -------------------------------------------------------------------------------
    def _paint_verdict(self, key: str, alert: bool = False) -> None:
        color = COLORS[key]
        style = f"color: white; background: {color};" if alert else f"color: {color};"
        self.verdict.setStyleSheet(style + " padding: 6px; border-radius: 6px;")

    def _refresh(self) -> None:
        for i, stream in enumerate(self.timelines):
            text, key = self._list_text(stream)
            item = self.stream_list.item(i)
            item.setText(text)
            item.setForeground(QtGui.QColor(COLORS[key]))
        self.counters_label.setText(
            f"shed {sum(t.shed for t in self.timelines.values())} · display dropped {self.dropped}")
        self._refresh_status()
        tl = self.timelines.get(self.selected) if self.selected else None
        if tl is None:
            return
        self.stream_label.setText(f"stream {tl.stream} · {tl.windows} windows")
        x, y = tl.end_times(), tl.probabilities()
        self.curve.setData(x, y, connect="finite")
        spans = tl.live_alert_spans()
        if spans:
            edges = np.array([v for span in spans for v in span])
            self.alert_fill.setData(edges, np.tile([1.0, 0.0], len(spans))[:-1])
        self.alert_fill.setVisible(bool(spans))
        last = tl.last
        if last is not None:
            p = "" if last.spoof_probability is None else f" {last.spoof_probability:.2f}"
            self.verdict.setText(NAMES[last.label] + p + ("  ALERT" if last.alert else ""))
            self._paint_verdict(last.label, last.alert)
            p95 = tl.latency_p95()
            self.latency_label.setText(f"latency {last.latency_ms:.1f} ms (p95 {p95:.1f} ms)")
        w = self.latest_windows.get(tl.stream)
        if w is not None:
            hop = round(self.model.hop_s * self.model.frontend.sample_rate) if self.model else len(w.samples)
            # The newest hop of audio: what arrived since the previous window.
            self._set_level(level_dbfs(w.samples[-hop:]))

    def _refresh_status(self) -> None:
        parts = []
        s = self.summaries.get(self.selected) if self.selected else None
        if s is not None:
            p = "-" if s.spoof_probability is None else f"{s.spoof_probability:.2f}"
            parts.append(f"file verdict {NAMES[s.label]} {p} over {s.windows} windows")
        if self.errors:
            e = self.errors[-1]
            parts.append(f"error ({e.stream or 'run'}): {e.message}")
        if self.done:
            err = self.bridge.error
            parts.insert(0, f"stopped: {err}" if err is not None else "finished: close the window to exit")
        else:
            parts.insert(0, "running")
        self.status.setText(" · ".join(parts))
        bad = bool(self.errors) or (self.done and self.bridge.error is not None)
        self.status.setStyleSheet(f"color: {COLORS['spoof']};" if bad else "")

    def _set_level(self, db: float) -> None:
        self.level_db = db
        frac = (max(LEVEL_FLOOR_DB, db) - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB
        self.level_bar.setValue(round(1000 * frac))
        self.level_label.setText("silent" if db <= SILENCE_DBFS else f"{db:.1f} dBFS")

    def _update_spectrogram(self) -> None:
        if self.model is None or self.selected is None:
            return
        w = self.latest_windows.get(self.selected)
        if w is not None and (w.stream, w.seq) not in (self._requested_key, self.spectrogram_key):
            self._requested_key = (w.stream, w.seq)
            self.spectrograms.request(self._requested_key, w.samples, self.model.frontend)
        result = self.spectrograms.take()
        if result is None:
            return
        key, feats = result
        if not isinstance(key, tuple) or key[0] != self.selected:
            return  # computed for a stream no longer selected
        self.spectrogram, self.spectrogram_key = feats, key
        window_s = len(w.samples) / self.model.frontend.sample_rate if w is not None else 4.0
        self.image.setImage(feats, autoLevels=False, levels=_levels(feats))
        self.image.setRect(QtCore.QRectF(0.0, 0.0, window_s, feats.shape[0]))
        self.spec_plot.setXRange(0.0, window_s, padding=0)
        win = self.latest_windows.get(key[0])
        if win is not None and win.seq == key[1]:
            kind = {"logmel": "log-mel", "loglinear": "log linear-band"}.get(self.model.frontend.kind, "log-power")
            self.spec_plot.setTitle(f"{kind} of window {win.start_s:.1f}–{win.end_s:.1f} s")


def _levels(feats: np.ndarray) -> tuple[float, float]:
    """Colour range: the top 80 dB (natural-log features: 80 dB = ln(1e8))."""
    hi = float(np.max(feats))
    lo = max(float(np.min(feats)), hi - 8 * math.log(10))
    return lo, hi if hi > lo else lo + 1.0
