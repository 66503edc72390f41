"""What the timeline displays show (the live dashboard and ``--plot``), with no GUI or plotting import.

A :class:`Timeline` keeps one stream's score events for display, bounded by ``history_s``
seconds of audio (the dashboard scrolls over the last few minutes; ``--plot`` keeps all).

Alert shading: each point owns a cell of the time axis and a shaded span is the union of
the cells of consecutive alerting points.

* Live (x = window end): a window's cell is the audio that arrived with it, from the end of
  the previous window to its own end (the first window: its whole extent), see
  :func:`arrival_cells`.
* File plot (x = window centre): each point owns the half-way cell around its centre, so the
  shading lines up with the waveform drawn underneath, see :func:`centre_cells`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from realtime.events import ScoreEvent

__all__ = ["Timeline", "arrival_cells", "centre_cells", "merge_spans", "level_dbfs", "SILENCE_DBFS"]

#: Level shown for digital silence (the meter's floor).
SILENCE_DBFS = -100.0


def arrival_cells(start_s: np.ndarray, end_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells ``(left, right)`` for points at window ends: ``(end[i-1], end[i]]``, the first ``[start, end]``."""
    end = np.asarray(end_s, dtype=np.float64)
    left = np.empty_like(end)
    if end.size:
        left[0] = start_s[0]
        left[1:] = np.maximum(end[:-1], np.asarray(start_s[1:], dtype=np.float64))
    return left, end


def centre_cells(x: np.ndarray, single_half_width: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Cells for points at ``x`` (sorted): bounded by the midpoints to the neighbours; the outer
    cells are as wide on their open side as on their inner one; a single point gets
    ``x +- single_half_width``."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return x - single_half_width, x + single_half_width
    mid = (x[:-1] + x[1:]) / 2
    left = np.concatenate([[x[0] - (mid[0] - x[0])], mid])
    right = np.concatenate([mid, [x[-1] + (x[-1] - mid[-1])]])
    return left, right


def merge_spans(left: np.ndarray, right: np.ndarray, mask: np.ndarray, tol: float = 1e-6) -> list[tuple[float, float]]:
    """Union of the cells ``[left[i], right[i]]`` where ``mask[i]``, as sorted disjoint spans."""
    spans: list[tuple[float, float]] = []
    for lo, hi, on in zip(left, right, mask):
        if not on:
            continue
        if spans and lo <= spans[-1][1] + tol:
            spans[-1] = (spans[-1][0], max(spans[-1][1], float(hi)))
        else:
            spans.append((float(lo), float(hi)))
    return spans


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); silence -> SILENCE_DBFS."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return SILENCE_DBFS
    ms = float(np.dot(x, x)) / x.size
    return max(SILENCE_DBFS, 10.0 * math.log10(ms)) if ms > 0 else SILENCE_DBFS


@dataclass
class Timeline:
    """One stream's score events for display; ``history_s`` (None: unbounded) seconds of audio kept."""

    stream: str
    history_s: float | None = None
    latency_keep: int = 120  # recent latencies for the percentile shown
    events: deque[ScoreEvent] = field(default_factory=deque, init=False)
    cell_left: deque[float] = field(default_factory=deque, init=False)  # arrival cells, fixed when added
    latencies: deque[float] = field(init=False)
    shed: int = field(default=0, init=False)
    windows: int = field(default=0, init=False)  # all windows seen, including trimmed ones

    def __post_init__(self) -> None:
        self.latencies = deque(maxlen=self.latency_keep)

    def add(self, ev: ScoreEvent) -> None:
        prev_end = self.events[-1].end_s if self.events else None
        # The cell is fixed on arrival so that trimming old points never widens the first one left.
        self.cell_left.append(ev.start_s if prev_end is None else max(prev_end, ev.start_s))
        self.events.append(ev)
        self.latencies.append(ev.latency_ms)
        self.shed += ev.shed
        self.windows += 1
        if self.history_s is not None:
            oldest = ev.end_s - self.history_s
            while self.events and self.events[0].end_s < oldest:
                self.events.popleft()
                self.cell_left.popleft()

    @property
    def last(self) -> ScoreEvent | None:
        return self.events[-1] if self.events else None

    def end_times(self) -> np.ndarray:
        return np.fromiter((e.end_s for e in self.events), dtype=np.float64, count=len(self.events))

    def centre_times(self) -> np.ndarray:
        return np.fromiter(((e.start_s + e.end_s) / 2 for e in self.events), dtype=np.float64,
                           count=len(self.events))

    def probabilities(self) -> np.ndarray:
        """Spoof probabilities; NaN for windows without a verdict (no_speech)."""
        return np.fromiter((math.nan if e.spoof_probability is None else e.spoof_probability
                            for e in self.events), dtype=np.float64, count=len(self.events))

    def alerts(self) -> np.ndarray:
        return np.fromiter((e.alert for e in self.events), dtype=bool, count=len(self.events))

    def live_alert_spans(self) -> list[tuple[float, float]]:
        """Alert spans on the window-end axis (arrival cells)."""
        return merge_spans(np.fromiter(self.cell_left, dtype=np.float64, count=len(self.cell_left)),
                           self.end_times(), self.alerts())

    def centre_alert_spans(self) -> list[tuple[float, float]]:
        """Alert spans on the window-centre axis (centre cells)."""
        # A lone window (a short clip) owns its whole extent.
        half = (self.events[0].end_s - self.events[0].start_s) / 2 if len(self.events) == 1 else 0.0
        left, right = centre_cells(self.centre_times(), half)
        return merge_spans(left, right, self.alerts())

    def latency_p95(self) -> float | None:
        return float(np.percentile(np.fromiter(self.latencies, dtype=np.float64), 95)) if self.latencies else None
