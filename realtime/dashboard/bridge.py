"""Between the detection thread and the GUI thread: nothing here imports Qt.

The detection side (asyncio loop, engine) calls :class:`Bridge` methods; each takes a lock
for an append or a dict store and returns: it never waits on the GUI. Events go into a
bounded queue; when the GUI falls behind, the oldest are dropped and counted (shown in the
window). Window samples are not queued: only the latest window of each stream is kept (a
4-s window is 256 KB; the spectrogram and the level meter show the newest one anyway).

The GUI drains the bridge from a QTimer. The spectrogram of the displayed window takes
35-130 ms in numpy (SpecRNet/ResMax front ends), too long for the GUI thread at every hop,
so a :class:`SpectrogramWorker` computes it in its own thread, latest request wins.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from engines.features import log_features
from engines.frontend_config import FrontEndConfig
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent
from realtime.windowing import Window

__all__ = ["ModelInfo", "Drained", "Bridge", "SpectrogramWorker"]

AnyEvent = ScoreEvent | SummaryEvent | ErrorEvent


@dataclass(frozen=True)
class ModelInfo:
    """What the GUI needs of the engine, copied out of it on the detection thread."""

    model_id: str
    threshold: float
    frontend: FrontEndConfig
    hop_s: float


@dataclass
class Drained:
    """One GUI tick's worth: everything that arrived since the previous drain."""

    events: list[AnyEvent] = field(default_factory=list)
    windows: dict[str, Window] = field(default_factory=dict)  # latest window per stream
    model: ModelInfo | None = None  # set once, when the engine is ready
    dropped: int = 0  # events dropped so far in all (cumulative)
    done: bool = False  # detection has ended (see Bridge.exit_code / Bridge.error)


class Bridge:
    """Thread-safe hand-over from detection to display (a run observer, see realtime.observers)."""

    def __init__(self, max_events: int = 4096) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self._lock = threading.Lock()
        self._events: deque[AnyEvent] = deque(maxlen=max_events)
        self._windows: dict[str, Window] = {}
        self._model: ModelInfo | None = None
        self._model_sent = False
        self._dropped = 0
        self._done = False
        self.exit_code: int | None = None
        self.error: BaseException | None = None

    # -- detection side (any thread; never blocks on the GUI) --------------------------------
    def engine_ready(self, engine, threshold: float, hop_s: float) -> None:  # engine: engines.Engine
        info = ModelInfo(engine.model_id, float(threshold), FrontEndConfig.from_dict(engine.config.frontend),
                         float(hop_s))
        with self._lock:
            self._model, self._model_sent = info, False

    def window(self, window: Window) -> None:
        # Window.samples is a view of the stream's ring, overwritten as the stream goes on: keep a copy.
        window = replace(window, samples=window.samples.copy())
        with self._lock:
            self._windows[window.stream] = window

    def event(self, ev: AnyEvent) -> None:
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self._dropped += 1  # the deque drops the oldest on append
            self._events.append(ev)

    __call__ = event  # usable as a plain emit callback

    def finish(self, exit_code: int | None, error: BaseException | None = None) -> None:
        with self._lock:
            self.exit_code, self.error, self._done = exit_code, error, True

    # -- GUI side ------------------------------------------------------------------------------
    def drain(self) -> Drained:
        with self._lock:
            out = Drained(list(self._events), self._windows, None, self._dropped, self._done)
            self._events.clear()
            self._windows = {}
            if not self._model_sent:
                out.model, self._model_sent = self._model, self._model is not None
        return out

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped


class SpectrogramWorker:
    """Computes ``log_features`` of the displayed window in a thread of its own.

    ``request`` replaces any request not yet started (only the newest window is worth
    drawing); ``take`` returns the newest finished result once. No Qt here: the GUI polls.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: tuple[object, np.ndarray, FrontEndConfig] | None = None
        self._result: tuple[object, np.ndarray] | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="spectrogram", daemon=True)
        self._thread.start()

    def request(self, key: object, samples: np.ndarray, config: FrontEndConfig) -> None:
        with self._cond:
            self._pending = (key, samples, config)
            self._cond.notify()

    def take(self) -> tuple[object, np.ndarray] | None:
        with self._cond:
            out, self._result = self._result, None
            return out

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                key, samples, config = self._pending  # type: ignore[misc]
                self._pending = None
            feats = log_features(samples, config)  # outside the lock: requests keep coming in
            with self._cond:
                self._result = (key, feats)
