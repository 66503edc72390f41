"""Static timeline of a scored file (``--plot PATH``): matplotlib on its Agg canvas, no GUI, no pyplot.

Top: spoof probability of each window at the window's centre, the threshold as a dashed line,
alert spans shaded (each point owns the cell half-way to its neighbours, see
:mod:`realtime.timeline`). Bottom: the waveform's min/max envelope on the same time axis.
Title: file name, model, file verdict.

Output names: with one input file the image is written to PATH itself; with several, to
PATH's stem + ``-`` + each file's stem (``timeline.png`` -> ``timeline-a.png``,
``timeline-b.png``); if PATH is an existing folder, to ``PATH/<file stem>.png``. Repeated
stems get ``-2``, ``-3``... The format follows the suffix: .png, .svg or .pdf.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from engines.errors import MissingExtraError
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent
from realtime.timeline import Timeline
from realtime.windowing import Window

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from engines import Engine

__all__ = ["FORMATS", "Envelope", "require_matplotlib", "waveform_envelope", "timeline_figure",
           "plot_targets", "TimelinePlotter"]

FORMATS = (".png", ".svg", ".pdf")
FIGSIZE = (12.0, 5.0)  # inches; at DPI 100: 1200 x 500 pixels
DPI = 100
_NAMES = {"spoof": "SPOOF", "bonafide": "BONAFIDE", "no_speech": "NO SPEECH"}


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "--plot") from None


@dataclass(frozen=True)
class Envelope:
    """Waveform drawn as min/max per bucket of frames (mono: channels averaged)."""

    t: np.ndarray  # bucket centres, seconds
    lo: np.ndarray
    hi: np.ndarray
    duration_s: float


def waveform_envelope(path: str | Path, buckets: int = 1200) -> Envelope:
    """Read ``path`` block by block (memory bounded by one block) into ``buckets`` min/max pairs."""
    with sf.SoundFile(str(path)) as f:
        rate, frames = f.samplerate, f.frames
        per = max(1, math.ceil(frames / buckets))
        lo: list[np.ndarray] = []
        hi: list[np.ndarray] = []
        # Blocks are a whole number of buckets, so only the very last bucket can be partial.
        for block in f.blocks(blocksize=per * 512, dtype="float32", always_2d=True):
            mono = block.mean(axis=1)
            whole = len(mono) // per * per
            if whole:
                b = mono[:whole].reshape(-1, per)
                lo.append(b.min(axis=1))
                hi.append(b.max(axis=1))
            if whole < len(mono):
                lo.append(mono[whole:].min(keepdims=True))
                hi.append(mono[whole:].max(keepdims=True))
    lo_a = np.concatenate(lo) if lo else np.zeros(0, np.float32)
    hi_a = np.concatenate(hi) if hi else np.zeros(0, np.float32)
    t = (np.arange(len(lo_a)) * per + per / 2) / rate
    return Envelope(t, lo_a, hi_a, frames / rate)


def timeline_figure(events: Sequence[ScoreEvent], *, threshold: float, envelope: Envelope | None = None,
                    title: str = "") -> Figure:
    """The timeline as a matplotlib Figure (Agg). The probability line has gid ``probability``,
    the threshold line gid ``threshold``; alert spans are the ``alert`` patches of the top axes."""
    require_matplotlib()
    from matplotlib.figure import Figure

    tl = Timeline(events[0].stream if events else "-")
    for ev in events:
        tl.add(ev)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax_p, ax_w = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    spans = tl.centre_alert_spans()
    for i, (a, b) in enumerate(spans):
        ax_p.axvspan(a, b, color="#d62728", alpha=0.18, lw=0, gid="alert", label="alert" if i == 0 else None)
        ax_w.axvspan(a, b, color="#d62728", alpha=0.12, lw=0)
    ax_p.axhline(threshold, color="0.3", ls="--", lw=1, gid="threshold", label=f"threshold {threshold:.2f}")
    ax_p.plot(tl.centre_times(), tl.probabilities(), color="#1f77b4", marker="o", ms=3, lw=1.5,
              gid="probability", label="spoof probability (window centre)")
    ax_p.set_ylim(0.0, 1.0)
    ax_p.set_ylabel("spoof probability")
    ax_p.grid(alpha=0.25)
    ax_p.legend(loc="upper right", fontsize="small")
    end = max([envelope.duration_s if envelope else 0.0] + [e.end_s for e in events] + [1e-3])
    if envelope is not None and len(envelope.t):
        ax_w.fill_between(envelope.t, envelope.lo, envelope.hi, color="0.35", lw=0)
        peak = float(max(np.abs(envelope.lo).max(), np.abs(envelope.hi).max(), 1e-4))
        ax_w.set_ylim(-1.05 * peak, 1.05 * peak)
    ax_w.set_xlim(0.0, end)
    ax_w.set_xlabel("time (s)")
    ax_w.set_ylabel("waveform")
    ax_w.grid(alpha=0.25)
    if title:
        fig.suptitle(title)
    return fig


def plot_targets(target: Path, files: Sequence[Path]) -> list[Path]:
    """Where each file's image goes (see the module doc)."""
    if target.is_dir():
        stems, make = [f.stem for f in files], (lambda s: target / f"{s}.png")
    elif len(files) == 1:
        return [target]
    else:
        stems, make = [f.stem for f in files], (lambda s: target.with_name(f"{target.stem}-{s}{target.suffix}"))
    out, seen = [], {}
    for s in stems:
        n = seen[s] = seen.get(s, 0) + 1
        out.append(make(s if n == 1 else f"{s}-{n}"))
    return out


class TimelinePlotter:
    """Run observer (see realtime.observers.RunObserver): collects each file's score events and
    writes its image when its summary arrives. Drawing (~0.3 s) happens on the detection loop
    between files, where no window is waiting."""

    def __init__(self, targets: dict[str, Path], written: Callable[[Path], None] | None = None) -> None:
        require_matplotlib()
        self.targets = targets  # stream id -> output path
        self.written = written
        self.threshold = 0.5
        self.model = ""
        self._events: dict[str, list[ScoreEvent]] = {}

    def engine_ready(self, engine: Engine, threshold: float, hop_s: float) -> None:
        self.threshold, self.model = float(threshold), engine.model_id

    def window(self, window: Window) -> None:  # samples are not needed: the waveform is re-read
        pass

    def event(self, ev: ScoreEvent | SummaryEvent | ErrorEvent) -> None:
        if isinstance(ev, ScoreEvent):
            self._events.setdefault(ev.stream, []).append(ev)
        elif isinstance(ev, SummaryEvent):
            self._draw(ev)
        elif ev.stream is not None:
            self._events.pop(ev.stream, None)

    def _draw(self, summary: SummaryEvent) -> None:
        events = self._events.pop(summary.stream, [])
        out = self.targets.get(summary.stream)
        if out is None:
            return
        p = "-" if summary.spoof_probability is None else f"{summary.spoof_probability:.2f}"
        title = (f"{Path(summary.stream).name}  ·  {summary.model or self.model}  ·  verdict "
                 f"{_NAMES[summary.label]} (p={p}, {summary.windows} windows)")
        fig = timeline_figure(events, threshold=self.threshold, envelope=waveform_envelope(summary.stream),
                              title=title)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        if self.written is not None:
            self.written(out)
