"""Offline scoring of audio files (``--offline``): as fast as possible, a summary per file.

A file is streamed through the same windower as live audio, so offline scores equal live ones;
windows are scored in batches of up to ``max_batch``, so memory stays bounded by one batch whatever
the file's length. Every window gets the model's verdict (no speech gate, no alert smoothing:
this is the mode for evaluation). The file verdict aggregates its windows (``--aggregate``,
default: the mean of the window logits, then the sigmoid). Replaying a file in real time goes
through the live session instead (realtime/session.py), exactly as a microphone would.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engines import Engine
from realtime.aggregate import RunningAggregate
from realtime.errors import RealtimeError
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent
from realtime.options import DetectorOptions
from realtime.sources.file import FileSource
from realtime.windowing import StreamWindower, Window, WindowOptions

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".aif", ".aiff", ".caf", ".w64", ".au"})

Emit = Callable[[ScoreEvent | SummaryEvent | ErrorEvent], None]


class RunObserver(Protocol):
    """A display fed beside the event sinks (the dashboard, --plot). It needs what events leave
    out: the threshold and front end of the engine, and the samples of each scored window.
    Called on the detection side: implementations must return at once."""

    def engine_ready(self, engine: Engine, threshold: float, hop_s: float) -> None: ...

    def window(self, window: Window) -> None: ...

    def event(self, ev: ScoreEvent | SummaryEvent | ErrorEvent) -> None: ...


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their audio files (sorted, by extension).

    A file named explicitly is kept whatever its extension, so its error (if any) is reported."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
            out.extend(found)
        else:
            out.append(p)
    return out


@dataclass
class FileScorer:
    """Scores files with one engine; inference runs in one worker thread off the event loop."""

    engine: Engine
    options: DetectorOptions
    emit: Emit
    on_window: Callable[[Window], None] | None = None  # sees each scored window just before its event

    def __post_init__(self) -> None:
        self.threshold = self.options.threshold if self.options.threshold is not None else self.engine.threshold
        self.window_opts = WindowOptions(window_s=self.engine.window_samples / 16000, hop_s=self.options.hop_s)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def label(self, p: float) -> str:
        return "spoof" if p >= self.threshold else "bonafide"

    async def score_file(self, path: Path, *, stream_id: str | None = None,
                         emit_windows: bool = True) -> SummaryEvent | ErrorEvent:
        """Stream one file through the windower and the engine; emits score events (when
        ``emit_windows``) and returns (and emits) the summary, or an error event."""
        sid = stream_id or str(path)
        try:
            source = FileSource(path, realtime=False, chunk_s=self.options.chunk_s, stream_id=sid)
            windower = StreamWindower(sid, source.sample_rate, source.channels, self.window_opts)
            agg = RunningAggregate(self.options.aggregate, logits=True)
            pending: list[Window] = []
            tiled = False
            async for chunk, _rate in source:
                pending.extend(windower.push(chunk))
                if len(pending) >= self.engine.max_batch:
                    await self._score(pending, agg, emit_windows)
                    pending = []
            pending.extend(windower.finish())
            tiled = any(w.tiled for w in pending)
            await self._score(pending, agg, emit_windows)
        except RealtimeError as e:
            # The event names the file in ``stream``; the message says what is wrong with it.
            ev = ErrorEvent(code="bad_audio", message=getattr(e, "reason", str(e)), stream=sid)
            self.emit(ev)
            return ev
        p = agg.value  # a probability (the aggregate applies the sigmoid itself)
        summary = SummaryEvent(stream=sid, windows=windower.windows_emitted, spoof_probability=p,
                               label=self.label(p) if p is not None else "no_speech", shed=0,
                               model=self.engine.model_id, duration_s=source.duration_s, tiled=tiled)
        self.emit(summary)
        return summary

    async def _score(self, windows: list[Window], agg: RunningAggregate, emit_windows: bool) -> None:
        if not windows:
            return
        batch = np.stack([w.samples for w in windows])
        loop = asyncio.get_running_loop()
        logits = await loop.run_in_executor(self._pool, self.engine.logits, batch)
        done = time.monotonic()  # the clock of Window.arrival
        probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
        for w, z, p in zip(windows, logits, probs):
            agg.add(float(z))
            if self.on_window is not None:
                self.on_window(w)
            if emit_windows:
                label = self.label(float(p))
                self.emit(ScoreEvent.for_window(w, float(p), label, label == "spoof", self.engine.model_id, done))

