"""Per-stream verdicts: speech gate, smoothing, a k-of-n alert rule with hysteresis, alert clips.

* :class:`EnergyGate` decides whether a window holds speech: at least ``gate_min_active`` of
  its 25-ms frames at or above ``gate_db`` dBFS (RMS). Windows without speech get the label
  ``no_speech`` and no verdict; they are not scored at all (no inference spent on silence)
  and do not move the alert state. An energy gate cannot tell speech from loud steady
  noise; it is there to avoid verdicts on silence, hold music at low level, line hiss.
* :class:`AlertPolicy` smooths the window probabilities (EMA, or the mean of the last
  ``smooth_n``) and counts, over the last ``n`` speech windows, those whose smoothed score is
  at or above the threshold: the alert turns on at ``k_on`` of ``n`` and turns off only when
  fewer than ``k_off`` of ``n`` remain (hysteresis: a single bona fide window in a run of
  spoofed ones does not make the alert flicker).
* :class:`AlertClipWriter` saves the audio of every alerting window as a WAV file with its
  JSON event beside it (``--save-alerts DIR``), in a background thread so that disk
  latency never reaches the event loop.

The window label itself (``spoof``/``bonafide``) is the raw window probability against the
threshold, so that it always agrees with the ``spoof_probability`` in the same event.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import queue
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from .events import ScoreEvent

__all__ = ["AlertOptions", "AlertPolicy", "AlertState", "EnergyGate", "AlertClipWriter",
           "SMOOTHING", "GATES", "safe_name"]

log = logging.getLogger(__name__)

SMOOTHING = ("ema", "mean", "none")
GATES = ("energy", "off")


def _check_int(name: str, v: object, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _check_real(name: str, v: object, lo: float, hi: float, *, open_lo: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not (lo < v <= hi if open_lo else lo <= v <= hi):
        rng = f"({lo:g}, {hi:g}]" if open_lo else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be a number in {rng}, got {v!r}")


@dataclass(frozen=True, slots=True)
class AlertOptions:
    """Smoothing, alert rule and speech gate of every stream.

    Defaults: EMA with alpha 0.5; alert on when 3 of the last 5 speech windows are over the
    threshold, off when none of the last 5 is (``k_off=1``: fewer than one). Energy gate:
    10% of the 25-ms frames at -50 dBFS or louder.
    """

    threshold: float | None = None  # None: the model's threshold
    smoothing: Literal["ema", "mean", "none"] = "ema"
    ema_alpha: float = 0.5  # weight of the newest window
    smooth_n: int = 3  # windows averaged by smoothing="mean"
    n: int = 5
    k_on: int = 3
    k_off: int = 1
    gate: Literal["energy", "off"] = "energy"
    gate_db: float = -50.0
    gate_min_active: float = 0.1
    gate_frame_ms: float = 25.0

    def __post_init__(self) -> None:
        if self.threshold is not None:
            _check_real("threshold", self.threshold, 0.0, 1.0, open_lo=True)
        if self.smoothing not in SMOOTHING:
            raise ValueError(f"smoothing {self.smoothing!r} not accepted; accepted: {', '.join(SMOOTHING)}")
        _check_real("ema_alpha", self.ema_alpha, 0.0, 1.0, open_lo=True)
        _check_int("smooth_n", self.smooth_n, 1)
        _check_int("n", self.n, 1)
        _check_int("k_on", self.k_on, 1)
        _check_int("k_off", self.k_off, 1)
        if not self.k_off <= self.k_on <= self.n:
            raise ValueError(f"alert rule needs 1 <= k_off <= k_on <= n, got k_off={self.k_off}, "
                             f"k_on={self.k_on}, n={self.n}")
        if self.gate not in GATES:
            raise ValueError(f"gate {self.gate!r} not accepted; accepted: {', '.join(GATES)}")
        _check_real("gate_db", self.gate_db, -120.0, 0.0)
        _check_real("gate_min_active", self.gate_min_active, 0.0, 1.0)
        _check_real("gate_frame_ms", self.gate_frame_ms, 1.0, 1000.0)

    def threshold_for(self, model_threshold: float) -> float:
        """The threshold verdicts use: the one given here, else the model's (its checkpoint's)."""
        return self.threshold if self.threshold is not None else model_threshold

    def make_gate(self, sample_rate: int = 16000) -> EnergyGate | None:
        if self.gate == "off":
            return None
        return EnergyGate(max(1, round(self.gate_frame_ms * sample_rate / 1000)), self.gate_db,
                          self.gate_min_active)


class EnergyGate:
    """``gate(samples) -> bool``: does this window hold speech (by frame energy)?"""

    __slots__ = ("frame", "min_power", "min_active", "db")

    def __init__(self, frame: int = 400, db: float = -50.0, min_active: float = 0.1) -> None:
        _check_int("frame", frame, 1)
        self.frame = frame
        self.db = db
        self.min_power = 10.0 ** (db / 10.0)  # mean square of a full-scale-1.0 signal at `db` dBFS
        self.min_active = min_active

    def active_ratio(self, samples: np.ndarray) -> float:
        n = samples.shape[0] // self.frame
        if n == 0:
            return 0.0
        x = samples[: n * self.frame].reshape(n, self.frame)
        power = np.einsum("ij,ij->i", x, x) / self.frame  # no squared temporary
        return float(np.count_nonzero(power >= self.min_power)) / n

    def __call__(self, samples: np.ndarray) -> bool:
        return self.active_ratio(samples) >= self.min_active


@dataclass(frozen=True, slots=True)
class AlertState:
    """What :meth:`AlertPolicy.update` decided for one window."""

    smoothed: float
    over: int  # windows over the threshold among the last n
    alert: bool
    changed: bool  # the alert turned on or off with this window


class AlertPolicy:
    """One stream's smoothing and k-of-n alert state."""

    __slots__ = ("options", "threshold", "_ema", "_recent", "_flags", "_over", "alert")

    def __init__(self, options: AlertOptions, threshold: float) -> None:
        self.options = options
        self.threshold = options.threshold_for(threshold)
        _check_real("threshold", self.threshold, 0.0, 1.0, open_lo=True)
        self._ema: float | None = None
        self._recent: deque[float] = deque(maxlen=options.smooth_n)
        self._flags: deque[bool] = deque(maxlen=options.n)
        self._over = 0
        self.alert = False

    def smooth(self, p: float) -> float:
        o = self.options
        if o.smoothing == "ema":
            self._ema = p if self._ema is None else o.ema_alpha * p + (1.0 - o.ema_alpha) * self._ema
            return self._ema
        if o.smoothing == "mean":
            self._recent.append(p)
            return sum(self._recent) / len(self._recent)
        return p

    def update(self, p: float) -> AlertState:
        """Feed the probability of the next speech window."""
        s = self.smooth(p)
        flag = s >= self.threshold
        if len(self._flags) == self._flags.maxlen and self._flags[0]:
            self._over -= 1
        self._flags.append(flag)
        self._over += flag
        before = self.alert
        if not self.alert and self._over >= self.options.k_on:
            self.alert = True
        elif self.alert and self._over < self.options.k_off:
            self.alert = False
        return AlertState(s, self._over, self.alert, self.alert != before)

    def label(self, p: float) -> str:
        return "spoof" if p >= self.threshold else "bonafide"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(stream: str, limit: int = 64) -> str:
    """A file-name part from a stream id (which may come from a client): no separators,
    no leading dot, bounded length."""
    name = _UNSAFE.sub("_", stream).lstrip(".")[:limit]
    return name or "stream"


class AlertClipWriter:
    """Writes ``DIR/<stream>[-c<connection>]-<seq>.wav`` (16 kHz float32 WAV) + ``.json`` for
    alerting windows, never over an existing clip: a name already taken (the same stream id
    from another run, or two ids that make the same file name) gets ``-2``, ``-3``, ...

    ``save()`` only queues (bounded); a single thread writes. When the disk falls behind by
    more than ``max_pending`` clips, further clips are skipped and counted in ``skipped``.
    """

    def __init__(self, directory: str | Path, sample_rate: int = 16000, max_pending: int = 64) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--save-alerts {str(self.directory)!r}: cannot create the folder "
                             f"({e.strerror or e})") from None
        self.sample_rate = sample_rate
        self.saved = 0
        self.skipped = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[ScoreEvent, np.ndarray] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="alert-clips", daemon=True)
        self._thread.start()

    def save(self, event: ScoreEvent, samples: np.ndarray) -> None:
        """Queue the clip; ``samples`` is copied (a row of the batcher's buffer, which a kept view
        would keep from reuse whole)."""
        try:
            self._queue.put_nowait((event, samples.copy()))
        except queue.Full:
            self.skipped += 1
            if self.skipped == 1 or self.skipped % 100 == 0:
                log.warning("alert clips: disk behind, %d clips skipped so far", self.skipped)

    def stem_for(self, event: ScoreEvent) -> str:
        """The clip's file name without extension (before any ``-2`` for a name taken)."""
        conn = f"-c{event.connection}" if event.connection is not None else ""
        return f"{safe_name(event.stream)}{conn}-{event.seq:06d}"

    def _claim(self, stem: str) -> Path:
        """A base path whose ``.json`` this writer just created (O_EXCL): no clip is overwritten.
        Names are appended to (``+ ".wav"``), never ``with_suffix``: a stream id may hold dots."""
        for n in itertools.count(1):
            base = self.directory / (stem if n == 1 else f"{stem}-{n}")
            try:
                os.close(os.open(f"{base}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            return base
        raise AssertionError("unreachable")

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            event, samples = job
            stem = self.stem_for(event)
            try:
                base = self._claim(stem)
                sf.write(f"{base}.wav", samples, self.sample_rate, subtype="FLOAT")
                Path(f"{base}.json").write_text(event.to_json() + "\n", encoding="utf-8")
                self.saved += 1
            except (OSError, sf.LibsndfileError) as e:
                self.failed += 1
                log.error("alert clip %s not saved: %s", self.directory / stem, e)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()
