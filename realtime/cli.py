"""realtime-detect: score speech for synthetic (deepfake) voices, live or from files.

Examples:
  realtime-detect --input demo                       bundled clip, streamed in real time
  realtime-detect --input call.wav --model specrnet  one event per 0.5 s hop, as it plays
  realtime-detect --input a.wav b.mp3 dir/ --offline --json
                                                     as fast as possible, a summary per file
  realtime-detect --input mic                        the default microphone
  realtime-detect --input ws --port 8765             WebSocket server (browser page at /; Twilio Media
                                                     Streams at /v1/twilio, Genesys AudioHook at /v1/audiohook)
  realtime-detect --input audiosocket --port 9092    Asterisk AudioSocket() calls (docs/telephony.md)
  realtime-detect --input ws --webhook https://hooks.example/deepfake
                                                     POST each alert, signed (--webhook-secret)
  ffmpeg -i SRC -f s16le -ac 1 -ar 8000 - | realtime-detect --input - --format s16le --rate 8000
                                                     (-ac 1: a stereo source read as mono is wrong)
  realtime-detect --list-engines                     what can run on this machine, and why not
  realtime-detect --input call.wav --dashboard       live plot window (extra: dashboard)
  realtime-detect --input call.wav --offline --plot timeline.png
                                                     the timeline as an image (extra: plot)

Each 4-second window gets a spoof probability; at or above the model's threshold it is labelled
spoof. Each model has its own threshold (specrnet 0.46, resmax 0.12); --threshold sets one.
Exit status: 0 all inputs scored, 1 some inputs failed (each named on stderr), 2 usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from realtime.access import is_loopback
from realtime.console import printable
from realtime.errors import AudioInputError
from realtime.options import DetectorOptions

T = TypeVar("T")

if TYPE_CHECKING:
    from realtime.batcher import Policy
    from realtime.observers import RunObserver
    from realtime.sources import Source

DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo.flac"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Output:
    """Routes events to JSON lines (stdout) and/or the console view; errors always reach stderr."""

    def __init__(self, options: DetectorOptions, stdout: TextIO, stderr: TextIO, show_stream: bool,
                 records: Sequence = (), windows: bool = True) -> None:  # records: the event log, the webhook
        from realtime.console import ConsoleView

        self.json, self.quiet, self.stdout, self.stderr = options.json, options.quiet, stdout, stderr
        self.view = ConsoleView(stdout, color=options.color, show_stream=show_stream)
        self.records = records
        self.windows = windows  # score events too (--offline without --windows: summaries and errors only)
        self.stdout_closed = asyncio.Event()  # its reader left (`| head`): the run stops quietly

    def __call__(self, ev) -> None:  # ScoreEvent | SummaryEvent | ErrorEvent
        from realtime.console import format_error

        if ev.type == "score" and not self.windows:
            return  # neither shown nor recorded: the event log keeps what --json prints
        for record in self.records:
            record(ev)
        if ev.type == "error":
            print(format_error(ev, color=False), file=self.stderr, flush=True)
        if self.stdout_closed.is_set():
            return
        try:
            if self.json:
                print(ev.to_json(), file=self.stdout, flush=True)
            elif not self.quiet and ev.type != "error":
                self.view.show(ev)
        except BrokenPipeError:
            silence(self.stdout)
            self.stdout_closed.set()

    def model_line(self, model: str, threshold: float) -> None:
        """Which model and threshold the verdicts use, above the console view."""
        if not self.json and not self.quiet:
            with contextlib.suppress(BrokenPipeError):
                print(f"model {model}: spoof at or above {threshold:.2f} (each model has its own threshold; "
                      "--threshold sets one)", file=self.stdout, flush=True)


def silence(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null: its reader is gone, and whatever is still
    buffered must not fail again when Python flushes it at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


@contextlib.asynccontextmanager
async def _stoppable(output: Output) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
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


def build_parser() -> argparse.ArgumentParser:
    from engines import engine_choices

    ap = argparse.ArgumentParser(prog="realtime-detect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("input")
    src.add_argument("--input", "-i", nargs="+", metavar="SRC",
                     help="audio files or folders, 'demo' (bundled clip), 'mic', 'ws' (server), 'audiosocket' "
                          "(Asterisk AudioSocket listener) or '-' (raw PCM on stdin)")
    src.add_argument("--offline", action="store_true",
                     help="files: read as fast as they decode, not paced (the same scores and verdicts as a replay), "
                          "and print one summary per file (default: replay in real time)")
    src.add_argument("--windows", action="store_true", help="with --offline: also emit every window's score event")
    src.add_argument("--speed", type=float, default=1.0, help="replay speed for files without --offline (default 1.0)")
    src.add_argument("--format", dest="stdin_format", choices=("s16le", "f32le"), default="s16le",
                     help="stdin sample format (default s16le)")
    src.add_argument("--rate", dest="stdin_rate", type=int, default=16000, help="stdin sample rate in Hz (default 16000)")
    src.add_argument("--channels", dest="stdin_channels", type=int, default=1, help="stdin channels, interleaved (default 1)")
    mdl = ap.add_argument_group("model")
    mdl.add_argument("--model", "-m", default="specrnet",
                     help="'specrnet' or 'resmax' (shipped weights) or a checkpoint folder (default specrnet)")
    mdl.add_argument("--engine", "-e", default="auto", choices=engine_choices(),
                     help="inference backend; auto: TensorRT, then CUDA, then ONNX Runtime on the CPU"
                     " (onnx-int8, the quantized network on the CPU, only when asked for)")
    mdl.add_argument("--triton-url", default=None, metavar="grpc://HOST:PORT",
                     help="with --engine triton: the Triton server's gRPC address (extra: triton)")
    mdl.add_argument("--triton-model", default=None, metavar="NAME",
                     help="with --engine triton: the served model's name (default: the checkpoint's architecture)")
    mdl.add_argument("--triton-timeout", dest="triton_timeout_s", type=float, default=2.0, metavar="SECONDS",
                     help="with --engine triton: deadline of one inference call (default 2)")
    mdl.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    mdl.add_argument("--max-batch", type=int, default=64, help="most windows per engine call (default 64)")
    mdl.add_argument("--hop", dest="hop_s", type=float, default=0.5, help="seconds between window starts (default 0.5)")
    mdl.add_argument("--threshold", type=float, default=None,
                     help="spoof probability above which a window is labelled spoof (default: the model's)")
    mdl.add_argument("--aggregate", default="mean_logit", choices=("mean_logit", "mean_prob", "max"),
                     help="file verdict from its windows (default mean_logit: mean of logits, then sigmoid)")
    out = ap.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="JSON lines on stdout (schema in docs/protocol.md), no console view")
    out.add_argument("--quiet", "-q", action="store_true", help="no console view (errors still go to stderr)")
    out.add_argument("--no-color", dest="color", action="store_false", default=None, help="no ANSI colours")
    out.add_argument("--events", metavar="FILE.jsonl|sqlite:PATH|redis://HOST:PORT/STREAM|postgresql://...", default=None,
                     help="durable event log: every score, alert, summary and error, appended (see realtime/eventlog.py);"
                          " redis:// and postgresql:// are shared by many servers (extra: sinks)")
    out.add_argument("--events-fsync", dest="events_fsync_s", type=float, default=1.0, metavar="SECONDS",
                     help="event log: fsync at most this long after each write (default 1; 0: every batch)")
    out.add_argument("--dashboard", action="store_true",
                     help="live window: probability timeline, verdict, level, spectrogram (extra: dashboard)")
    out.add_argument("--dashboard-exit", action="store_true",
                     help="with --dashboard: close the window when the input ends (default: keep it open)")
    out.add_argument("--plot", type=Path, metavar="PATH",
                     help="files: write each file's timeline image (.png/.svg/.pdf; several files: "
                          "PATH-<file stem>.png; a folder: FOLDER/<file stem>.png) (extra: plot)")
    mic = ap.add_argument_group("microphone (--input mic)")
    mic.add_argument("--device", default=None,
                     help="input device: index or part of its name (default: the system's default input)")
    mic.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    mic.add_argument("--retry", action="store_true",
                     help="reopen the device (with backoff) if it disappears, instead of stopping with an error")
    srv = ap.add_argument_group("servers (--input ws, --input audiosocket)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8765,
                     help="port (default 8765; 0 picks a free one); with audiosocket, the TCP port AudioSocket() dials")
    srv.add_argument("--token", default=os.environ.get("REALTIME_DETECT_TOKEN"),
                     help="require this bearer token (default: $REALTIME_DETECT_TOKEN; prefer the variable, "
                          "a command line is visible to other users)")
    srv.add_argument("--allow-origin", dest="allowed_origins", action="append", default=[], metavar="ORIGIN",
                     help="browser origin allowed to connect, repeatable ('*' for any; default: same origin only)")
    srv.add_argument("--max-connections", type=int, default=64, help="concurrent streams (default 64; then HTTP 503)")
    srv.add_argument("--idle-timeout", dest="idle_timeout_s", type=float, default=30.0,
                     help="close a stream silent for this many seconds (default 30)")
    srv.add_argument("--insecure", action="store_true",
                     help="allow listening on a non-loopback address without --token")
    srv.add_argument("--allow-url-token", action="store_true",
                     help="also accept the token as ?token= in the URL (leaks into proxy logs; for clients "
                          "that cannot set headers)")
    srv.add_argument("--max-realtime-factor", type=float, default=4.0, metavar="X",
                     help="throttle a stream sending audio faster than X times real time (default 4; 0: no limit)")
    srv.add_argument("--max-message-rate", dest="max_messages_per_s", type=float, default=500.0, metavar="N",
                     help="refuse a stream sending more than N messages per second (default 500; 0: no limit)")
    tel = ap.add_argument_group("telephony (docs/telephony.md)")
    tel.add_argument("--twilio-auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"), metavar="TOKEN",
                     help="/v1/twilio: accept only handshakes signed by Twilio (X-Twilio-Signature) with this "
                          "account auth token (default: $TWILIO_AUTH_TOKEN)")
    tel.add_argument("--audiosocket-track", choices=("caller", "agent", "mixed"), default="caller",
                     help="--input audiosocket: which party the channel's audio is, the events' track (default "
                          "caller; mixed for a leg that hears both parties)")
    hook = ap.add_argument_group("webhooks (every input)")
    hook.add_argument("--webhook", dest="webhook_url", default=None, metavar="URL",
                      help="POST each alert (the alert rule turning on for a stream) as JSON to URL, retried with "
                           "backoff; never slows scoring")
    hook.add_argument("--webhook-secret", default=os.environ.get("REALTIME_DETECT_WEBHOOK_SECRET"), metavar="SECRET",
                      help="sign each POST: X-Realtime-Detect-Signature: sha256=HMAC-SHA256(body) "
                           "(default: $REALTIME_DETECT_WEBHOOK_SECRET)")
    hook.add_argument("--webhook-summaries", action="store_true",
                      help="also POST each stream's summary (its verdict)")
    live = ap.add_argument_group("live streams (ws, stdin)")
    live.add_argument("--max-wait-ms", type=float, default=5.0,
                      help="micro-batcher: longest a window waits for others to share an engine call (default 5)")
    live.add_argument("--max-pending", type=int, default=8,
                      help="windows queued per stream before its oldest is shed under overload (default 8)")
    live.add_argument("--parallel", type=int, default=1,
                      help="split each batch over N concurrent single-engine calls (with --threads 1, "
                           "N = cores scales better than --threads N for SpecRNet; default 1)")
    live.add_argument("--max-delay-ms", type=float, default=1000.0,
                      help="shed live windows that waited longer than this for the engine (default 1000)")
    live.add_argument("--max-queue", type=int, default=256,
                      help="windows queued in all before shedding (default 256, 256 KB each)")
    alr = ap.add_argument_group("alerts (live streams)")
    alr.add_argument("--smoothing", choices=("ema", "mean", "none"), default="ema",
                     help="smoothing of window scores before the alert rule (default ema)")
    alr.add_argument("--ema-alpha", type=float, default=0.5, help="weight of the newest window in the EMA (default 0.5)")
    alr.add_argument("--alert-n", type=int, default=5, help="alert rule: over the last N speech windows (default 5)")
    alr.add_argument("--alert-on", type=int, default=3, help="alert when at least this many are over the threshold (default 3)")
    alr.add_argument("--alert-off", type=int, default=1,
                     help="clear the alert when fewer than this many are over (default 1: none)")
    alr.add_argument("--speech-gate", choices=("energy", "off"), default="energy",
                     help="windows without speech are labelled no_speech and not scored (default energy)")
    alr.add_argument("--gate-db", type=float, default=-50.0,
                     help="energy gate: frame level counted as speech, dBFS (default -50)")
    alr.add_argument("--save-alerts", type=Path, default=None, metavar="DIR",
                     help="save each alerting window as DIR/<stream>-<seq>.wav with its JSON event")
    info = ap.add_argument_group("information")
    info.add_argument("--list-engines", action="store_true", help="show which engines can run here (for --model) and why not")
    return ap


def options_from_args(args: argparse.Namespace) -> DetectorOptions:
    from realtime.alerts import AlertOptions

    opts = DetectorOptions()
    for name in vars(opts):
        if hasattr(args, name):
            setattr(opts, name, getattr(args, name))
    if hasattr(args, "alert_n"):
        opts.alerts = AlertOptions(threshold=args.threshold, smoothing=args.smoothing, ema_alpha=args.ema_alpha,
                                   n=args.alert_n, k_on=args.alert_on, k_off=args.alert_off,
                                   gate=args.speech_gate, gate_db=args.gate_db)
    if getattr(args, "webhook_url", None):
        from realtime.webhook import WebhookOptions

        opts.webhook = WebhookOptions(args.webhook_url, args.webhook_secret, summaries=args.webhook_summaries)
    return opts


def _validate(args: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    if args.engine == "triton" and not args.triton_url:
        ap.error("--engine triton needs --triton-url grpc://HOST:PORT (the Triton server's gRPC port)")
    if args.engine != "triton" and (args.triton_url or args.triton_model):
        ap.error(f"--triton-url/--triton-model are for --engine triton, not --engine {args.engine}")
    if args.engine == "triton":
        from engines.backends.triton_backend import TritonOptions

        try:
            TritonOptions(args.triton_url, args.triton_model, args.triton_timeout_s)
        except RuntimeError as e:  # EngineError: a malformed URL or timeout is a usage error
            ap.error(str(e))
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: must be at least 1")
    if args.max_batch < 1:
        ap.error(f"--max-batch {args.max_batch}: must be at least 1")
    if not 0.01 <= args.hop_s <= 30:
        ap.error(f"--hop {args.hop_s}: must be between 0.01 and 30 seconds")
    if not 0.01 <= args.speed <= 1000:
        ap.error(f"--speed {args.speed}: must be between 0.01 and 1000")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        ap.error(f"--threshold {args.threshold}: must be a probability between 0 and 1")
    if args.plot is not None and not args.plot.is_dir():
        from realtime.plot import FORMATS

        if args.plot.suffix.lower() not in FORMATS:
            ap.error(f"--plot {args.plot}: name an image ({', '.join(FORMATS)}) or an existing folder")
    if args.dashboard_exit and not args.dashboard:
        ap.error("--dashboard-exit needs --dashboard")
    if not 0 <= args.port <= 65535:
        ap.error(f"--port {args.port}: must be 0..65535")
    for name in ("max_connections", "max_pending", "max_queue", "parallel"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if not 0 < args.idle_timeout_s <= 86400:
        ap.error(f"--idle-timeout {args.idle_timeout_s}: must be between 0 and 86400 seconds")
    if not 0 <= args.max_wait_ms <= 1000:
        ap.error(f"--max-wait-ms {args.max_wait_ms}: must be between 0 and 1000")
    if not 0 <= args.max_delay_ms <= 600_000:
        ap.error(f"--max-delay-ms {args.max_delay_ms}: must be between 0 and 600000")
    for name, hi in (("max_realtime_factor", 1000.0), ("max_messages_per_s", 1e6), ("events_fsync_s", 3600.0)):
        if not 0 <= getattr(args, name) <= hi:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be between 0 and {hi:g}")
    if args.input and args.input[0] == "ws" and args.token is None and not args.insecure \
            and not is_loopback(args.host):
        ap.error(f"--host {args.host}: serving beyond this machine without --token; "
                 "set REALTIME_DETECT_TOKEN (or --token), or pass --insecure")
    if args.input and args.input[0] == "audiosocket" and not args.insecure and not is_loopback(args.host):
        ap.error(f"--host {args.host}: AudioSocket carries no credentials; keep it on a private network "
                 "and pass --insecure")
    if args.webhook_url:
        from realtime.webhook import WebhookOptions

        try:
            WebhookOptions(args.webhook_url, args.webhook_secret)
        except ValueError as e:
            ap.error(str(e))
    elif args.webhook_summaries:
        ap.error("--webhook-summaries needs --webhook URL")


def _open_records(options: DetectorOptions) -> list:
    """The sinks that record every run's events: the event log (--events), the webhook."""
    records: list = []
    if options.events is not None:
        from realtime.eventlog import EventLogOptions, open_event_log

        records.append(open_event_log(options.events, EventLogOptions(fsync_interval_s=options.events_fsync_s)))
    if options.webhook is not None:
        from realtime.webhook import WebhookSink

        records.append(WebhookSink(options.webhook))
    return records


def list_engines(stdout: TextIO, model: str) -> int:
    from engines import available_engines

    for s in available_engines(model):
        print(f"{'yes' if s.available else 'no ':3s}  {s.name:9s} {s.reason}", file=stdout)
    return EXIT_OK


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What sets the CLI's inputs apart; :func:`_run_inputs` runs them all through one pipeline."""

    streams: Sequence[tuple[str, Callable[[], Source]]]  # (stream id, opener): one stream each, in turn
    policy: Policy  # "block": the input can wait for the engine (files, pipes); "shed": it cannot (a microphone)
    files: bool = False  # a failing input is one bad_audio event and the next one runs; else the run ends there
    endless: bool = False  # no end of its own (a microphone): Ctrl+C is how it ends, exit 0 rather than 130


async def _run_files(paths: list[Path], options: DetectorOptions, output: Output,
                     observers: Sequence[RunObserver] = ()) -> int:
    """Files one after another, replayed in real time (what live monitoring of them would have
    shown) or, with --offline, read as fast as they decode: the only difference is the pacing."""
    from realtime.sources.file import FileSource

    streams = [(str(p), functools.partial(FileSource, p, realtime=not options.offline, chunk_s=options.chunk_s,
                                          speed=options.speed)) for p in paths]
    return await _run_inputs(_Inputs(streams, "block", files=True), options, output, observers)


async def _run_stdin(options: DetectorOptions, output: Output, observers: Sequence[RunObserver] = ()) -> int:
    """Raw PCM on stdin (``--input -``): one stream; a pipe can wait (the producer blocks), so
    nothing is shed."""
    from realtime.sources import StdinSource

    source = StdinSource(options.stdin_format, options.stdin_rate, options.stdin_channels, chunk_s=options.chunk_s)
    return await _run_inputs(_Inputs([(source.stream_id, lambda: source)], "block"), options, output, observers)


async def _run_mic(options: DetectorOptions, output: Output, stderr: TextIO,
                   observers: Sequence[RunObserver] = ()) -> int:
    """Microphone (``--input mic``): one live stream until Ctrl+C (or the dashboard closes)."""
    from realtime.sources.mic import MicSource

    source = MicSource(options.device, retry=options.retry)  # opens lazily; errors name the device
    try:
        return await _run_inputs(_Inputs([(source.stream_id, lambda: source)], "shed", endless=True),
                                 options, output, observers)
    finally:
        lost = source.overflows + source.device_overflows
        if lost:
            print(f"realtime-detect: microphone: {lost} overflow(s), {source.dropped_frames} frames dropped"
                  " (the machine could not keep up)", file=stderr)


async def _run_inputs(inputs: _Inputs, options: DetectorOptions, output: Output,
                      observers: Sequence[RunObserver]) -> int:
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
        backlog = max(options.max_pending, 2 * options.max_batch)
        options = dataclasses.replace(options, max_pending=backlog, max_queue=max(options.max_queue, backlog))
    engine = _load_engine(options)
    detector = _live_detector(engine, options, [output, count], observers).start()
    output.model_line(detector.model, detector.threshold)
    try:
        async with _stoppable(output) as (stop, interrupted):
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
    if interrupted.is_set() and not inputs.endless:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if errors else EXIT_OK


def _load_engine(options: DetectorOptions):
    import engines

    triton = None
    if options.engine == "triton":
        from engines.backends.triton_backend import TritonOptions

        triton = TritonOptions(options.triton_url or "", options.triton_model, options.triton_timeout_s)
    return engines.load(options.model, options.engine, threads=options.threads, max_batch=options.max_batch,
                        triton=triton)


def _live_detector(engine, options: DetectorOptions, sinks: list, observers: Sequence[RunObserver]):
    """A LiveDetector whose events and windows also reach ``observers`` (the dashboard)."""
    from realtime.session import LiveDetector

    def on_window(w) -> None:
        for o in observers:
            o.window(w)

    detector = LiveDetector(engine, options, sinks=[*sinks, *(o.event for o in observers)],
                            on_window=on_window if observers else None)
    for o in observers:
        o.engine_ready(engine, detector.threshold, options.hop_s)
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


async def _run_ws(options: DetectorOptions, stdout: TextIO, stderr: TextIO, records: Sequence = (),
                  observers: Sequence[RunObserver] = (), audiosocket: bool = False) -> int:
    """WebSocket server (``--input ws``), or the AudioSocket listener, until SIGTERM/SIGINT, or
    until cancelled (the dashboard closed), which drains the streams the same way."""
    from realtime.console import ConsoleView
    from realtime.server import DetectorServer, run_server
    from realtime.session import ConsoleSink, JsonLinesSink
    from realtime.telephony.audiosocket import AudioSocketServer

    logging.basicConfig(level=logging.INFO, format="realtime-detect: %(message)s", stream=stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection is too many
    servers: list[DetectorServer] = []
    sinks = []
    shown = JsonLinesSink(stdout) if options.json else None if options.quiet else ConsoleSink(
        ConsoleView(stdout, color=options.color, show_stream=True))
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
    engine = _load_engine(options)
    task = asyncio.ensure_future(run_server(_live_detector(engine, options, sinks, observers), options,
                                            on_ready=servers.append,
                                            server_class=AudioSocketServer if audiosocket else DetectorServer))
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


def _file_observers(files: list[Path], options: DetectorOptions, stderr: TextIO) -> list[RunObserver]:
    if options.plot is None:
        return []
    from realtime.plot import TimelinePlotter, plot_targets

    def written(path: Path) -> None:
        if not options.quiet:
            print(f"realtime-detect: timeline written to {printable(str(path))}", file=stderr, flush=True)

    targets = {str(f): t for f, t in zip(files, plot_targets(options.plot, files))}
    return [TimelinePlotter(targets, written)]


def _with_dashboard(detect, title: str, args: argparse.Namespace) -> int:
    """Detection in a worker thread, the window on this one (see realtime.dashboard)."""
    from realtime.dashboard import DashboardOptions, run_dashboard

    return run_dashboard(detect, DashboardOptions(title=f"realtime-detect: {title}", exit_when_done=args.dashboard_exit))


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.list_engines:
        return list_engines(stdout, args.model)
    if args.list_devices:
        from realtime.errors import RealtimeError
        from realtime.sources.mic import list_devices

        try:
            print(list_devices(), file=stdout)
        except RealtimeError as e:
            print(f"realtime-detect: {printable(str(e))}", file=stderr)
            return EXIT_FAILED
        return EXIT_OK
    if not args.input:
        ap.error("--input is required (try --input demo)")
    _validate(args, ap)
    options = options_from_args(args)

    from engines import CheckpointError, EngineError, MissingExtraError
    from realtime.errors import RealtimeError

    special = {"mic", "ws", "audiosocket", "-"}
    if any(x in special for x in args.input) and len(args.input) > 1:
        ap.error(f"--input {' '.join(args.input)}: 'mic', 'ws', 'audiosocket' and '-' cannot be combined with "
                 "other inputs")
    kind = args.input[0] if args.input[0] in special else "files"
    if args.plot is not None and kind != "files":
        ap.error(f"--plot: only for files, not --input {kind}")
    records: list = []
    try:
        records = _open_records(options)
        # Missing extras are reported before any audio is touched.
        if options.dashboard:
            from realtime.dashboard import check_available

            check_available()
        if options.plot is not None:
            from realtime.plot import require_matplotlib

            require_matplotlib()
        if kind == "files":
            from realtime.sources.file import expand_inputs

            paths = [DEMO_CLIP if x == "demo" else Path(x) for x in args.input]
            files = expand_inputs(paths)
            if not files:
                print(f"realtime-detect: no audio files found in {printable(' '.join(args.input))}", file=stderr)
                return EXIT_FAILED
            output = Output(options, stdout, stderr, show_stream=len(files) > 1, records=records,
                            windows=not options.offline or args.windows)
            observers = _file_observers(files, options, stderr)  # they see every window, --windows or not
            if options.dashboard:
                title = files[0].name + (f" (+{len(files) - 1})" if len(files) > 1 else "")
                return _with_dashboard(lambda bridge: _run_files(files, options, output, [*observers, bridge]),
                                       title, args)
            return asyncio.run(_run_files(files, options, output, observers))
        if kind == "-":
            output = Output(options, stdout, stderr, show_stream=False, records=records)
            if options.dashboard:
                return _with_dashboard(lambda bridge: _run_stdin(options, output, [bridge]), "stdin", args)
            return asyncio.run(_run_stdin(options, output))
        if kind in ("ws", "audiosocket"):
            tcp = kind == "audiosocket"
            if options.dashboard:
                return _with_dashboard(lambda bridge: _run_ws(options, stdout, stderr, records, [bridge], tcp),
                                       f"{'tcp' if tcp else 'ws'}://{options.host}:{options.port}", args)
            return asyncio.run(_run_ws(options, stdout, stderr, records, audiosocket=tcp))
        if kind == "mic":
            output = Output(options, stdout, stderr, show_stream=False, records=records)
            if options.dashboard:
                return _with_dashboard(lambda bridge: _run_mic(options, output, stderr, [bridge]), "microphone", args)
            return asyncio.run(_run_mic(options, output, stderr))
        ap.error(f"--input {kind}: not available in this build")
    except (EngineError, CheckpointError, MissingExtraError, RealtimeError, ValueError) as e:
        print(f"realtime-detect: {printable(str(e))}", file=stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout's reader left while something other than an event was written
        silence(stdout)
        return EXIT_OK
    finally:
        for record in records:
            record.close()  # the loop is gone: write (or POST) what is queued, sync, close
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
