"""Running an input: the engine loaded, a LiveDetector, each stream (or a server's) through it;
the exit status. Ctrl+C and SIGTERM end a run as its input's end would."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import TYPE_CHECKING, TextIO, TypeVar

from realtime.errors import AudioInputError
from realtime.inputs import Inputs, Listener
from realtime.options import DetectorOptions
from realtime.output import Output, silence

if TYPE_CHECKING:
    from realtime.observers import RunObserver

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@contextlib.asynccontextmanager
async def stoppable(output: Output) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """``(stop, interrupted)`` for a live run: Ctrl+C and SIGTERM set both (where this thread may
    handle signals: not in the dashboard's worker), stdout's reader leaving sets ``stop``."""
    loop = asyncio.get_running_loop()
    stop, interrupted = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        interrupted.set()
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # not the main thread, not POSIX
            continue
        installed.append(sig)
    closed = asyncio.ensure_future(output.stdout_closed.wait())
    closed.add_done_callback(lambda t: t.cancelled() or stop.set())
    try:
        yield stop, interrupted
    finally:
        closed.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_inputs(inputs: Inputs, options: DetectorOptions, output: Output,
                     observers: Sequence[RunObserver] = ()) -> int:
    """Load the engine, then each stream through a LiveDetector session; the exit status.

    Ctrl+C / SIGTERM end the input as its end would: the pending windows are scored and the
    summary printed. A closed stdout (`| head`) ends it too, quietly.
    """
    from realtime.errors import RealtimeError
    from realtime.events import ErrorEvent

    errors = 0

    def count(ev) -> None:
        nonlocal errors
        errors += ev.type == "error"

    if inputs.policy == "block":
        # An input that can wait keeps two batches in flight, so the engine gets whole batches while
        # the next one is read; max_pending, a live stream's backlog, would cap them at 8 windows.
        b = options.batching
        backlog = max(b.max_pending, 2 * b.max_batch)
        options = dataclasses.replace(options, batching=dataclasses.replace(
            b, max_pending=backlog, max_queue=max(b.max_queue, backlog)))
    engine = load_engine(options)
    detector = live_detector(engine, options, [output, count], observers).start()
    output.model_line(detector.model, detector.threshold)
    try:
        async with stoppable(output) as (stop, interrupted):
            for stream, open_source in inputs.streams:
                session = None
                try:
                    source = open_source()
                    session = detector.open_stream(stream, source.sample_rate, source.channels,
                                                   policy=inputs.policy)
                    await session.run(_until(source, stop), salvage=not inputs.files)
                except RealtimeError as e:
                    if not inputs.files:
                        if isinstance(e, AudioInputError):
                            break  # already out as an input_error event (stderr, --json, --events), with the summary
                        raise
                    if session is not None:
                        session.abort()
                    bad = ErrorEvent(code="bad_audio", message=getattr(e, "reason", str(e)), stream=stream)
                    for sink in detector.sinks:
                        sink(bad)
                if stop.is_set():
                    break
    finally:
        await detector.aclose()
        engine.close()
        if inputs.report is not None:
            inputs.report(output.stderr)
    if interrupted.is_set() and not inputs.endless:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if errors else EXIT_OK


def load_engine(options: DetectorOptions):  # -> engines.Engine
    import engines
    from engines.checkpoint import read_config
    from realtime.hop_scoring import split_request

    e = options.engine
    split = split_request(options, read_config(engines.resolve_model(e.model)))
    return engines.load(e.model, e.engine, threads=e.threads, max_batch=options.batching.max_batch,
                        triton=e.triton(), split=split)


def live_detector(engine, options: DetectorOptions, sinks: list, observers: Sequence[RunObserver]):
    """A LiveDetector whose events and windows also reach ``observers`` (the dashboard)."""
    from realtime.session import LiveDetector

    def on_window(w) -> None:
        for o in observers:
            o.window(w)

    detector = LiveDetector(engine, options, sinks=[*sinks, *(o.event for o in observers)],
                            on_window=on_window if observers else None)
    for o in observers:
        o.engine_ready(engine, detector.threshold, detector.window.hop_s)
    return detector


async def _until(source: AsyncIterable[T], stop: asyncio.Event) -> AsyncIterator[T]:
    """Items of ``source`` until ``stop`` is set; then the source is closed and iteration ends
    (also when the consumer is cancelled: the dashboard closing)."""
    it = aiter(source)
    stopped = asyncio.ensure_future(stop.wait())
    nxt: asyncio.Future[T] | None = None
    try:
        while not stop.is_set():  # checked here too: a source that never waits (--offline) wins every race below
            nxt = asyncio.ensure_future(anext(it))
            await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                return
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
    finally:
        stopped.cancel()
        if nxt is not None and not nxt.done():
            nxt.cancel()
            # Let the cancellation land before closing the generator it is running in.
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await nxt
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


async def run_listener(listener: Listener, options: DetectorOptions, stdout: TextIO, stderr: TextIO,
                       records: Sequence = (), observers: Sequence[RunObserver] = ()) -> int:
    """A server input (WebSocket, AudioSocket) until SIGTERM/SIGINT, or until cancelled (the
    dashboard closed), which drains the streams the same way."""
    from realtime.console import ConsoleView
    from realtime.server import DetectorServer, run_server
    from realtime.session import ConsoleSink, JsonLinesSink

    logging.basicConfig(level=logging.INFO, format="realtime-detect: %(message)s", stream=stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection is too many
    servers: list[DetectorServer] = []
    sinks = []
    out = options.output
    shown = JsonLinesSink(stdout) if out.json else None if out.quiet else ConsoleSink(
        ConsoleView(stdout, color=out.color, show_stream=True))
    if shown is not None:
        def to_stdout(ev) -> None:
            nonlocal shown
            if shown is None:
                return
            try:
                shown(ev)
            except BrokenPipeError:  # `| head` is done with us: stop as on SIGTERM
                shown = None
                silence(stdout)
                if servers:
                    servers[0].shutdown()

        sinks.append(to_stdout)
    sinks.extend(records)
    engine = load_engine(options)
    task = asyncio.ensure_future(run_server(live_detector(engine, options, sinks, observers), on_ready=servers.append,
                                            server_class=listener.server_class))
    try:
        await asyncio.shield(task)  # a cancel from outside lands here, not in the server
    except asyncio.CancelledError:
        if servers:
            servers[0].shutdown()  # as SIGTERM: summaries sent, clients closed with 1001
        else:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    finally:
        engine.close()
    return EXIT_OK


