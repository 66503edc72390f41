"""Displays that watch a CLI run beside its event sinks: the dashboard, ``--plot``."""
from __future__ import annotations

from typing import Protocol

from engines import Engine
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent
from realtime.windowing import Window


class RunObserver(Protocol):
    """A display fed beside the event sinks. It needs what events leave out: the threshold and
    front end of the engine, and the samples of each window, as it is cut (before it is scored;
    a view of the stream's ring, valid only during the call: copy what you keep). Called on the
    detection side: implementations must return at once."""

    def engine_ready(self, engine: Engine, threshold: float, hop_s: float) -> None: ...

    def window(self, window: Window) -> None: ...

    def event(self, ev: ScoreEvent | SummaryEvent | ErrorEvent) -> None: ...
