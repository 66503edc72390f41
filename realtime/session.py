"""One live stream from audio to events, and the process-wide pieces the streams share.

    detector = LiveDetector(engine, DetectorOptions(), sinks=[ConsoleSink()])
    detector.start()                                        # inside the event loop
    session = detector.open_stream("mic", 48000, channels=1)
    await session.push(chunk)                               # float32 (n, channels)
    summary = await session.finish()
    await detector.aclose()

:class:`StreamSession` = windower (resample + ring) -> speech gate -> micro-batcher
submission -> (logits back on the loop, in order) -> alert policy -> running aggregate of the
logits -> sinks. Every input uses it, with one meaning: files (paced or ``--offline``, which
differ only in how fast the file is read), stdin, WebSocket clients, the microphone.

A sink is any callable taking an event (:data:`Sink`); it runs on the event loop and must not
block it. Provided: :class:`ConsoleSink`, :class:`JsonLinesSink`, and the WebSocket reply in
:mod:`realtime.outbox`; a dashboard passes its own callback.

Stream policy: ``"shed"`` (live audio: under overload windows are dropped and counted in the
next event's ``shed``) or ``"block"`` (producers that can wait, such as offline files and
pipes: ``push`` waits for room in the batcher, nothing is shed).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from .aggregate import RunningAggregate
from .alerts import AlertClipWriter, AlertOptions, AlertPolicy
from .batcher import MicroBatcher, Policy, ScoringEngine, WindowResult
from .console import ConsoleView
from .errors import AudioFormatError, AudioInputError
from .events import ErrorEvent, Event, ReadyEvent, ScoreEvent, SummaryEvent
from .hop_scoring import hop_scoring
from .options import DetectorOptions
from .sources.base import Source
from .windowing import StreamWindower, Window, WindowOptions

__all__ = ["Sink", "ConsoleSink", "JsonLinesSink", "StreamSession", "LiveDetector", "SessionCounters"]

#: Receives every event of a stream, on the event loop.
Sink = Callable[[Event], None]


class ConsoleSink:
    """Events as human-readable lines (:class:`~realtime.console.ConsoleView`)."""

    def __init__(self, view: ConsoleView | None = None) -> None:
        self.view = view if view is not None else ConsoleView()

    def __call__(self, event: Event) -> None:
        if not isinstance(event, ReadyEvent):
            self.view.show(event)


class JsonLinesSink:
    """Events as compact JSON lines (default: ``sys.stdout`` at call time), flushed per line."""

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file

    def __call__(self, event: Event) -> None:
        f = sys.stdout if self._file is None else self._file
        f.write(event.to_json() + "\n")
        f.flush()


@dataclass(slots=True)
class SessionCounters:
    windows: int = 0  # score events emitted (no_speech included)
    scored: int = 0  # windows with a verdict
    shed: int = 0
    errors: int = 0
    alerts: int = 0  # windows emitted with alert=true


class StreamSession:
    """One stream: chunks in, score events out (in order), a summary at the end.

    Create it with :meth:`LiveDetector.open_stream` (or directly, inside the running loop).

    Raises from :meth:`push`: :class:`~realtime.errors.AudioFormatError` (wrong dtype/shape),
    :class:`~realtime.errors.NonFiniteAudioError`; from :meth:`finish`:
    :class:`~realtime.errors.EmptyStreamError` when the stream had no audio at all.
    """

    def __init__(self, stream: str, sample_rate: float, channels: int, *, batcher: MicroBatcher,
                 model: str, threshold: float, window: WindowOptions | None = None,
                 alerts: AlertOptions | None = None, sinks: Iterable[Sink] = (),
                 aggregate: str = "mean_logit", policy: Policy = "shed",
                 clips: AlertClipWriter | None = None,
                 on_window: Callable[[Window], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, connection: int | None = None,
                 track: str | None = None) -> None:
        alerts = alerts if alerts is not None else AlertOptions()
        self.stream = stream
        self.connection = connection  # server streams: tells apart two clients with one stream id
        self.track = track  # telephony: which party (realtime.events.TRACKS), in every event
        self.model = model
        self.policy = policy
        self.sinks: list[Sink] = list(sinks)
        self.windower = StreamWindower(stream, sample_rate, channels, window, clock=clock)
        self.alert_policy = AlertPolicy(alerts, threshold)
        self.gate = alerts.make_gate(self.windower.options.sample_rate)
        self.aggregate = RunningAggregate(aggregate, logits=True)  # type: ignore[arg-type]
        self.counters = SessionCounters()
        self._clips = clips
        self._on_window = on_window  # a display's look at each window as it is cut; must not block
        self._shed_unreported = 0
        self._tiled = False  # a clip shorter than one window, scored tiled
        self._aborted = False
        self._handle = batcher.open_stream(stream, self._on_result, policy=policy, keep_samples=clips is not None)

    # -- input ------------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return self.alert_policy.threshold

    @property
    def in_flight(self) -> int:
        return self._handle.in_flight

    async def wait_room(self, windows: int = 1) -> None:
        """Wait until ``windows`` more windows can be queued without shedding this stream's own."""
        await self._handle.wait_room(windows)

    async def push(self, chunk: np.ndarray, arrival: float | None = None) -> None:
        """Add float32 ``(n, channels)`` frames; completed windows go to the batcher."""
        await self._submit(self.windower.push(chunk, arrival))

    async def _submit(self, windows: Iterator[Window]) -> None:
        # Each window's samples are a view of the ring, valid until the next window is taken:
        # the display and the gate read it in place, the batcher copies it into a batch buffer.
        for w in windows:
            if self.policy == "block":
                await self._handle.wait_room()
            if self._on_window is not None:
                self._on_window(w)
            # Silence is not worth an inference: it passes through the batcher, in order.
            self._handle.submit(w, score=self.gate is None or self.gate(w.samples))

    async def finish(self) -> SummaryEvent:
        """End of stream: score what remains, wait for every result, emit and return the summary."""
        try:
            await self._submit(self.windower.finish())
            await self._handle.drain()
        finally:
            self._handle.close()
        summary = self.summary()
        self._emit(summary)
        return summary

    async def run(self, source: Source, *, salvage: bool = True) -> SummaryEvent:
        """Stream a whole :class:`~realtime.sources.Source` through this session.

        A source that fails mid-stream (:class:`~realtime.errors.AudioInputError`: a
        microphone unplugged, a pipe that cannot be read) loses nothing it delivered: an
        ``input_error`` event, then the windows so far are scored and the summary emitted
        (none if there was no audio yet), then the exception propagates. With
        ``salvage=False`` (a truncated file: a verdict on part of it would pass for the whole)
        the exception propagates at once; the caller reports it and aborts the session.
        """
        rate = self.windower.sample_rate
        try:
            async for chunk, chunk_rate in source:
                if chunk_rate != rate:
                    raise AudioFormatError(f"stream {self.stream!r}: sample rate changed from {rate:g} to "
                                           f"{chunk_rate:g} Hz mid-stream; a stream keeps one rate")
                await self.push(chunk)
        except AudioInputError as e:
            if salvage:
                self.error("input_error", str(e))
                if self.windower.frames_in:
                    await self.finish()
            raise
        return await self.finish()

    def abort(self) -> None:
        """The stream is gone (client disconnected): no more events, no summary."""
        self._aborted = True
        self._handle.close()

    def error(self, code: str, message: str) -> ErrorEvent:
        """Emit an error event about this stream (and return it)."""
        ev = ErrorEvent(code=code, message=message, stream=self.stream, connection=self.connection,
                        track=self.track)
        self._emit(ev)
        return ev

    # -- output -----------------------------------------------------------------------------

    def summary(self) -> SummaryEvent:
        p = self.aggregate.value
        label = "no_speech" if p is None else self.alert_policy.label(p)
        w = self.windower
        return SummaryEvent(stream=self.stream, windows=self.counters.windows, spoof_probability=p,
                            label=label, shed=self.counters.shed, model=self.model,
                            duration_s=w.frames_in / w.sample_rate, tiled=self._tiled,
                            connection=self.connection, track=self.track)

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def _on_result(self, r: WindowResult) -> None:
        c = self.counters
        if r.status == "shed":
            c.shed += 1
            self._shed_unreported += 1
            return
        if self._aborted:
            return
        if r.status == "error":
            c.errors += 1
            self._emit(ErrorEvent(code="engine_error", stream=self.stream, connection=self.connection,
                                  track=self.track, message=f"window {r.window.seq} ({r.window.start_s:.2f}-{r.window.end_s:.2f} s) "
                                          f"not scored: {r.error}"))
            return
        if r.status == "scored":
            p = r.probability
            assert p is not None and r.logit is not None
            state = self.alert_policy.update(p)
            self.aggregate.add(r.logit)
            label, alert = self.alert_policy.label(p), state.alert
            c.scored += 1
        else:  # skipped by the speech gate
            p, label, alert = None, "no_speech", self.alert_policy.alert
        ev = ScoreEvent.for_window(r.window, p, label, alert, self.model, r.done_at,
                                   shed=self._shed_unreported, connection=self.connection, track=self.track)
        self._tiled |= r.window.tiled
        self._shed_unreported = 0
        c.windows += 1
        if alert and p is not None:
            c.alerts += 1
            if self._clips is not None:
                self._clips.save(ev, r.window.samples)
        self._emit(ev)


def model_window(engine: ScoringEngine, hop_s: float | None = None) -> WindowOptions:
    """The window geometry of ``engine``'s checkpoint (its rate, window and hop); ``hop_s``
    overrides the hop. An engine without a checkpoint config (a test double) gets the defaults."""
    config = getattr(engine, "config", None)
    default = WindowOptions()
    rate = config.sample_rate if config is not None else default.sample_rate
    hop_s = hop_s if hop_s is not None else config.hop_s if config is not None else default.hop_s
    return WindowOptions(sample_rate=rate, window_s=engine.window_samples / rate, hop_s=hop_s)


class LiveDetector:
    """The process-wide part: one engine behind one :class:`MicroBatcher`, shared sinks
    (``--json``, console), the alert clip writer, and a factory of :class:`StreamSession`."""

    def __init__(self, engine: ScoringEngine, options: DetectorOptions | None = None, *,
                 sinks: Iterable[Sink] = (), alerts: AlertOptions | None = None,
                 on_window: Callable[[Window], None] | None = None) -> None:
        self.options = options if options is not None else DetectorOptions()
        o = self.options
        self.engine = engine
        self.model: str = getattr(engine, "model_id", "model")
        self.window = model_window(engine, o.windowing.hop_s)
        self.alerts = alerts if alerts is not None else o.alerts
        self.threshold: float = self.alerts.threshold_for(getattr(engine, "threshold", 0.5))
        self.sinks: list[Sink] = list(sinks)
        # Front end once per hop where the engine runs its network alone (else whole windows).
        hop, self.scoring = hop_scoring(engine, self.window, o.engine.hop_frontend)  # type: ignore[arg-type]
        self.batcher = MicroBatcher(engine, o.batching, hop=hop)
        self.clips = AlertClipWriter(o.output.save_alerts, self.window.sample_rate) \
            if o.output.save_alerts is not None else None
        self.on_window = on_window  # every stream's windows, in order, as they are cut (views: copy to keep)

    def start(self) -> LiveDetector:
        self.batcher.start()
        return self

    def open_stream(self, stream: str, sample_rate: float, channels: int = 1, *, policy: Policy = "shed",
                    sinks: Iterable[Sink] = (), connection: int | None = None,
                    track: str | None = None) -> StreamSession:
        """A new session; its events go to ``sinks`` and then to the detector's shared sinks."""
        return StreamSession(stream, sample_rate, channels, batcher=self.batcher, model=self.model,
                             threshold=self.threshold, window=self.window, alerts=self.alerts,
                             sinks=[*sinks, *self.sinks], aggregate=self.options.windowing.aggregate,
                             policy=policy, clips=self.clips, on_window=self.on_window, connection=connection,
                             track=track)

    def ready(self, stream: str, connection: int | None = None, track: str | None = None) -> ReadyEvent:
        return ReadyEvent(stream=stream, window_s=self.window.window_s, hop_s=self.window.hop_s,
                          model=self.model, threshold=self.threshold, connection=connection, track=track)

    async def aclose(self) -> None:
        """Drain the batcher and stop its worker; flush the alert clips."""
        await self.batcher.aclose()
        if self.clips is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.clips.close)
