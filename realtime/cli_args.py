"""The command line of ``realtime-detect``: its parser and help, and the options it maps to.

Defaults come from the option dataclasses (:mod:`realtime.options`), written there once.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from realtime.alerts import GATES, SMOOTHING, AlertOptions
from realtime.batcher import BatcherOptions
from realtime.eventlog_base import EventLogOptions
from realtime.events import TRACKS
from realtime.hop_scoring import HOP_FRONTEND_MODES
from realtime.options import (
    AGGREGATES,
    DetectorOptions,
    EngineOptions,
    InputOptions,
    OutputOptions,
    ServerOptions,
    WindowingOptions,
)
from realtime.sizing import usable_cores, workers_for

DESCRIPTION = """realtime-detect: score speech for synthetic (deepfake) voices, live or from files.

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
spoof. Each model has its own threshold (specrnet 0.25, resmax 0.42); --threshold sets one.
Exit status: 0 all inputs scored, 1 some inputs failed (each named on stderr), 2 usage error.
"""
D = DetectorOptions()  # the defaults the parser shows


def parallel_arg(text: str) -> int | str:
    """``--parallel``: a number of engine calls, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of calls nor 'auto'") from None


def build_parser() -> argparse.ArgumentParser:
    from engines import engine_choices

    ap = argparse.ArgumentParser(prog="realtime-detect", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("input")
    src.add_argument("--input", "-i", nargs="+", metavar="SRC",
                     help="audio files or folders, 'demo' (bundled clip), 'mic', 'ws' (server), 'audiosocket' "
                          "(Asterisk AudioSocket listener) or '-' (raw PCM on stdin)")
    src.add_argument("--offline", action="store_true",
                     help="files: read as fast as they decode, not paced (the same scores and verdicts as a replay), "
                          "and print one summary per file (default: replay in real time)")
    src.add_argument("--windows", action="store_true", help="with --offline: also emit every window's score event")
    src.add_argument("--speed", type=float, default=D.input.speed,
                     help="replay speed for files without --offline (default %(default)s)")
    src.add_argument("--format", dest="stdin_format", choices=("s16le", "f32le"), default=D.input.stdin_format,
                     help="stdin sample format (default %(default)s)")
    src.add_argument("--rate", dest="stdin_rate", type=int, default=D.input.stdin_rate,
                     help="stdin sample rate in Hz (default %(default)s)")
    src.add_argument("--channels", dest="stdin_channels", type=int, default=D.input.stdin_channels,
                     help="stdin channels, interleaved (default %(default)s)")
    mdl = ap.add_argument_group("model")
    mdl.add_argument("--model", "-m", default=D.engine.model,
                     help="'specrnet' or 'resmax' (shipped weights) or a checkpoint folder (default %(default)s)")
    mdl.add_argument("--engine", "-e", default=D.engine.engine, choices=engine_choices(),
                     help="inference backend; auto: TensorRT, then CUDA, then ONNX Runtime on the CPU, "
                     "int8 (onnx-int8) where the model's record shows it within 1 point of float32's EER "
                     "on the generalization protocol (SpecRNet), else float32 (onnx)")
    mdl.add_argument("--triton-url", default=None, metavar="grpc://HOST:PORT",
                     help="with --engine triton: the Triton server's gRPC address (extra: triton)")
    mdl.add_argument("--triton-model", default=None, metavar="NAME",
                     help="with --engine triton: the served model's name (default: the checkpoint's architecture)")
    mdl.add_argument("--triton-timeout", dest="triton_timeout_s", type=float, default=D.engine.triton_timeout_s,
                     metavar="SECONDS", help="with --engine triton: deadline of one inference call (default %(default)g)")
    mdl.add_argument("--hop-frontend", choices=HOP_FRONTEND_MODES, default=D.engine.hop_frontend,
                     help="compute each window's spectrogram only for its new hop and run the network alone "
                          "(onnx, onnx-int8; the same scores); auto: where the engine and --hop allow it, "
                          "on: refuse to start otherwise, off: whole windows (default %(default)s)")
    mdl.add_argument("--threads", type=int, default=D.engine.threads, help="inference threads (default %(default)s)")
    mdl.add_argument("--max-batch", type=int, default=D.batching.max_batch,
                     help="most windows per engine call (default %(default)s)")
    mdl.add_argument("--hop", dest="hop_s", type=float, default=D.windowing.hop_s,
                     help="seconds between window starts (default: the checkpoint's, 0.5 for the shipped models)")
    mdl.add_argument("--threshold", type=float, default=None,
                     help="spoof probability above which a window is labelled spoof (default: the model's)")
    mdl.add_argument("--aggregate", default=D.windowing.aggregate, choices=AGGREGATES,
                     help="file verdict from its windows (default %(default)s: mean of logits, then sigmoid)")
    out = ap.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="JSON lines on stdout (schema in docs/protocol.md), no console view")
    out.add_argument("--quiet", "-q", action="store_true", help="no console view (errors still go to stderr)")
    out.add_argument("--no-color", dest="color", action="store_false", default=None, help="no ANSI colours")
    out.add_argument("--events", metavar="FILE.jsonl|sqlite:PATH|redis://HOST:PORT/STREAM|postgresql://...", default=None,
                     help="durable event log: every score, alert, summary and error, appended (see realtime/eventlog.py);"
                          " redis:// and postgresql:// are shared by many servers (extra: sinks)")
    out.add_argument("--events-fsync", dest="events_fsync_s", type=float, default=D.event_log.fsync_interval_s,
                     metavar="SECONDS", help="event log: fsync at most this long after each write (default %(default)g; 0: every batch)")
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
    srv.add_argument("--host", default=D.server.host, help="address to listen on (default %(default)s)")
    srv.add_argument("--port", type=int, default=D.server.port,
                     help="port (default %(default)s; 0 picks a free one); with audiosocket, the TCP port AudioSocket() dials")
    srv.add_argument("--token", default=os.environ.get("REALTIME_DETECT_TOKEN"),
                     help="require this bearer token (default: $REALTIME_DETECT_TOKEN; prefer the variable, "
                          "a command line is visible to other users)")
    srv.add_argument("--allow-origin", dest="allowed_origins", action="append", default=[], metavar="ORIGIN",
                     help="browser origin allowed to connect, repeatable ('*' for any; default: same origin only)")
    srv.add_argument("--max-connections", type=int, default=D.server.max_connections,
                     help="concurrent streams (default %(default)s; then HTTP 503)")
    srv.add_argument("--idle-timeout", dest="idle_timeout_s", type=float, default=D.server.idle_timeout_s,
                     help="close a stream silent for this many seconds (default %(default)g)")
    srv.add_argument("--insecure", action="store_true",
                     help="allow listening on a non-loopback address without --token")
    srv.add_argument("--allow-url-token", action="store_true",
                     help="also accept the token as ?token= in the URL (leaks into proxy logs; for clients "
                          "that cannot set headers)")
    srv.add_argument("--max-realtime-factor", type=float, default=D.server.max_realtime_factor, metavar="X",
                     help="throttle a stream sending audio faster than X times real time (default %(default)g; 0: no limit)")
    srv.add_argument("--max-message-rate", dest="max_messages_per_s", type=float, default=D.server.max_messages_per_s, metavar="N",
                     help="refuse a stream sending more than N messages per second (default %(default)g; 0: no limit)")
    tel = ap.add_argument_group("telephony (docs/telephony.md)")
    tel.add_argument("--twilio-auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"), metavar="TOKEN",
                     help="/v1/twilio: accept only handshakes signed by Twilio (X-Twilio-Signature) with this "
                          "account auth token (default: $TWILIO_AUTH_TOKEN)")
    tel.add_argument("--audiosocket-track", choices=TRACKS, default=D.server.audiosocket_track,
                     help="--input audiosocket: which party the channel's audio is, the events' track (default "
                          "%(default)s; mixed for a leg that hears both parties)")
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
    live.add_argument("--max-wait-ms", type=float, default=D.batching.max_wait_ms,
                      help="micro-batcher: longest a window waits for others to share an engine call (default %(default)g)")
    live.add_argument("--max-pending", type=int, default=D.batching.max_pending,
                      help="windows queued per stream before its oldest is shed under overload (default %(default)s)")
    live.add_argument("--parallel", type=parallel_arg, default=D.batching.parallel, metavar="N|auto",
                      help="split each batch over N concurrent single-engine calls (with --threads 1, N = cores "
                           "scales better than --threads N for SpecRNet); default %(default)s: a CPU engine gets one "
                           "per core this process may use, one core left to the event loop above 2 cores "
                           f"({workers_for(usable_cores())} here at --threads 1), other engines 1")
    live.add_argument("--max-delay-ms", type=float, default=D.batching.max_delay_ms,
                      help="shed live windows that waited longer than this for the engine (default %(default)g)")
    live.add_argument("--max-queue", type=int, default=D.batching.max_queue,
                      help="windows queued in all before shedding (default %(default)s, 256 KB each)")
    alr = ap.add_argument_group("alerts (live streams)")
    alr.add_argument("--smoothing", choices=SMOOTHING, default=D.alerts.smoothing,
                     help="smoothing of window scores before the alert rule (default %(default)s)")
    alr.add_argument("--ema-alpha", type=float, default=D.alerts.ema_alpha,
                     help="weight of the newest window in the EMA (default %(default)g)")
    alr.add_argument("--alert-n", type=int, default=D.alerts.n, help="alert rule: over the last N speech windows (default %(default)s)")
    alr.add_argument("--alert-on", type=int, default=D.alerts.k_on,
                     help="alert when at least this many are over the threshold (default %(default)s)")
    alr.add_argument("--alert-off", type=int, default=D.alerts.k_off,
                     help="clear the alert when fewer than this many are over (default %(default)s: none)")
    alr.add_argument("--speech-gate", choices=GATES, default=D.alerts.gate,
                     help="windows without speech are labelled no_speech and not scored (default %(default)s)")
    alr.add_argument("--gate-db", type=float, default=D.alerts.gate_db,
                     help="energy gate: frame level counted as speech, dBFS (default %(default)g)")
    alr.add_argument("--save-alerts", type=Path, default=None, metavar="DIR",
                     help="save each alerting window as DIR/<stream>-<seq>.wav with its JSON event")
    info = ap.add_argument_group("information")
    info.add_argument("--list-engines", action="store_true", help="show which engines can run here (for --model) and why not")
    return ap




def options_from_args(args: argparse.Namespace) -> DetectorOptions:
    """The run's options; ValueError (naming the option) when one is not accepted."""
    from realtime.webhook import WebhookOptions

    if args.webhook_summaries and not args.webhook_url:
        raise ValueError("--webhook-summaries needs --webhook URL")
    webhook = WebhookOptions(args.webhook_url, args.webhook_secret, summaries=args.webhook_summaries) \
        if args.webhook_url else None
    return DetectorOptions(
        engine=EngineOptions(args.model, args.engine, args.threads, args.triton_url, args.triton_model,
                             args.triton_timeout_s, args.hop_frontend),
        windowing=WindowingOptions(args.hop_s, args.aggregate),
        batching=BatcherOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                                max_pending=args.max_pending, max_delay_ms=args.max_delay_ms, parallel=args.parallel),
        alerts=AlertOptions(threshold=args.threshold, smoothing=args.smoothing, ema_alpha=args.ema_alpha,
                            n=args.alert_n, k_on=args.alert_on, k_off=args.alert_off, gate=args.speech_gate,
                            gate_db=args.gate_db),
        input=InputOptions(offline=args.offline, speed=args.speed, stdin_format=args.stdin_format,
                           stdin_rate=args.stdin_rate, stdin_channels=args.stdin_channels, device=args.device,
                           retry=args.retry),
        output=OutputOptions(json=args.json, quiet=args.quiet, color=args.color,
                             windows=not args.offline or args.windows, plot=args.plot, dashboard=args.dashboard,
                             dashboard_exit=args.dashboard_exit, save_alerts=args.save_alerts),
        server=ServerOptions(host=args.host, port=args.port, token=args.token, allowed_origins=args.allowed_origins,
                             insecure=args.insecure, allow_url_token=args.allow_url_token,
                             max_connections=args.max_connections, idle_timeout_s=args.idle_timeout_s,
                             max_realtime_factor=args.max_realtime_factor,
                             max_messages_per_s=args.max_messages_per_s, twilio_auth_token=args.twilio_auth_token,
                             audiosocket_track=args.audiosocket_track),
        events=args.events, event_log=EventLogOptions(fsync_interval_s=args.events_fsync_s),
        webhook=webhook)


def as_flags(ap: argparse.ArgumentParser, message: str) -> str:
    """``message`` with its leading option field named as on the command line (``hop_s`` -> ``--hop``)."""
    name, sep, rest = message.partition(" ")
    flags = {a.dest: a.option_strings[0] for a in ap._actions if a.option_strings}  # the long form is first
    aliases = {"fsync_interval_s": "events_fsync_s", "n": "alert_n", "k_on": "alert_on", "k_off": "alert_off",
               "gate": "speech_gate"}
    flag = flags.get(aliases.get(name, name))
    return f"{flag}{sep}{rest}" if flag else message
