"""Options of a run, one frozen dataclass per concern, each validated once, in its constructor.

    DetectorOptions(engine=EngineOptions(model="resmax"), server=ServerOptions(port=0))

Every part has defaults, so tests and tools name only what they change. A bad value raises
ValueError naming the option and what is accepted; the CLI turns it into a usage error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .alerts import AlertOptions
from .batcher import BatcherOptions
from .eventlog_base import EventLogOptions
from .events import TRACKS
from .hop_scoring import HOP_FRONTEND_MODES
from .webhook import WebhookOptions

__all__ = ["DetectorOptions", "EngineOptions", "WindowingOptions", "InputOptions", "OutputOptions", "ServerOptions",
           "AGGREGATES"]

AGGREGATES = ("mean_logit", "mean_prob", "max")


def _number(name: str, v: object, lo: float, hi: float, *, open_lo: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not (lo < v <= hi if open_lo else lo <= v <= hi):  # type: ignore[operator]
        raise ValueError(f"{name} {v!r} not accepted; accepted: a number in {'(' if open_lo else '['}{lo:g}, {hi:g}]")


def _integer(name: str, v: object, lo: int, hi: int | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name} {v!r} not accepted; accepted: an integer {lo}..{hi}" if hi is not None
                         else f"{name} {v!r} not accepted; accepted: an integer >= {lo}")


def _choice(name: str, v: object, accepted: tuple[str, ...]) -> None:
    if v not in accepted:
        raise ValueError(f"{name} {v!r} not accepted; accepted: {', '.join(accepted)}")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Which network, on which backend."""

    model: str = "specrnet"  # shipped name or checkpoint folder
    engine: str = "auto"  # engines.engine_choices(): auto, onnx, torch, ..., triton
    threads: int = 1  # inference threads (ONNX Runtime intra-op / torch)
    triton_url: str | None = None  # engine triton: grpc://HOST:PORT
    triton_model: str | None = None  # engine triton: served model name (None: the architecture)
    triton_timeout_s: float = 2.0  # engine triton: deadline of one inference call
    hop_frontend: str = "auto"  # front end once per hop (realtime.hop_scoring): auto, on or off

    def __post_init__(self) -> None:
        _integer("threads", self.threads, 1)
        _choice("hop_frontend", self.hop_frontend, HOP_FRONTEND_MODES)
        if self.engine != "triton":
            if self.triton_url or self.triton_model:
                raise ValueError(f"--triton-url/--triton-model are for --engine triton, not --engine {self.engine}")
        elif not self.triton_url:
            raise ValueError("--engine triton needs --triton-url grpc://HOST:PORT (the Triton server's gRPC port)")
        else:
            try:
                self.triton()
            except RuntimeError as e:  # EngineError: a malformed URL or timeout is a bad option
                raise ValueError(str(e)) from None

    def triton(self):  # -> engines.backends.triton_backend.TritonOptions | None
        """The Triton tier's options (engine triton), else None."""
        if self.engine != "triton":
            return None
        from engines.backends.triton_backend import TritonOptions

        return TritonOptions(self.triton_url or "", self.triton_model, self.triton_timeout_s)


@dataclass(frozen=True, slots=True)
class WindowingOptions:
    """Window placement and the per-stream verdict from its windows."""

    hop_s: float | None = None  # seconds between window starts; None: the checkpoint's hop_s
    aggregate: str = "mean_logit"  # windows -> stream verdict

    def __post_init__(self) -> None:
        if self.hop_s is not None:
            _number("hop_s", self.hop_s, 0.01, 30.0)
        _choice("aggregate", self.aggregate, AGGREGATES)


@dataclass(frozen=True, slots=True)
class InputOptions:
    """How the CLI's own inputs are read: files, stdin, the microphone."""

    offline: bool = False  # files read as fast as they decode, not paced (the pipeline is the same)
    speed: float = 1.0  # replay speed for paced files
    chunk_s: float = 0.1  # paced files and stdin: chunk size
    stdin_format: str = "s16le"
    stdin_rate: int = 16000
    stdin_channels: int = 1
    device: str | None = None  # microphone: index or part of its name (None: the default input)
    retry: bool = False  # microphone: reopen a lost device

    def __post_init__(self) -> None:
        _number("speed", self.speed, 0.01, 1000.0)  # chunk_s and the stdin format: checked by their sources


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """Where events go besides the event log and webhook: stdout, images, a window, clips."""

    json: bool = False  # JSON lines on stdout
    quiet: bool = False  # no console view
    color: bool | None = None  # None: auto (TTY, NO_COLOR)
    windows: bool = True  # score events too (--offline without --windows: summaries and errors only)
    plot: Path | None = None  # files: timeline images
    dashboard: bool = False
    dashboard_exit: bool = False  # close the dashboard when the input ends
    save_alerts: Path | None = None  # alerting windows as WAV + JSON

    def __post_init__(self) -> None:
        if self.plot is not None and not self.plot.is_dir():
            from .plot import FORMATS

            if self.plot.suffix.lower() not in FORMATS:
                raise ValueError(f"plot {str(self.plot)!r} not accepted; accepted: an image "
                                 f"({', '.join(FORMATS)}) or an existing folder")
        if self.dashboard_exit and not self.dashboard:
            raise ValueError("--dashboard-exit needs --dashboard")


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The WebSocket server and the AudioSocket listener: address, access, per-connection limits."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    insecure: bool = False  # listen beyond loopback without a token
    allow_url_token: bool = False  # accept ?token= in the URL (it leaks into logs and histories)
    max_connections: int = 64
    idle_timeout_s: float = 30.0
    start_timeout_s: float = 10.0  # a connection must send "start" within this
    max_message_bytes: int = 1 << 20  # larger WebSocket messages are refused (close 1009)
    send_queue: int = 64  # events queued per client before the oldest score events are dropped
    max_realtime_factor: float = 4.0  # audio faster than this x real time is throttled (0: no limit)
    realtime_burst_s: float = 8.0  # seconds of audio a stream may send at once before throttling
    max_messages_per_s: float = 500.0  # more frames per second (after a 2-s burst): rate_limited (0: none)
    max_backlog_bytes: int = 8 << 20  # audio read ahead of the realtime factor, per stream; then TCP pushes back
    twilio_auth_token: str | None = None  # /v1/twilio: check X-Twilio-Signature with the account's auth token
    audiosocket_track: str = "caller"  # --input audiosocket: which party the channel's audio is (events' track)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))  # a list from argparse
        _integer("port", self.port, 0, 65535)
        _integer("max_connections", self.max_connections, 1)
        _integer("send_queue", self.send_queue, 1)
        _number("idle_timeout_s", self.idle_timeout_s, 0.0, 86400.0, open_lo=True)
        _number("start_timeout_s", self.start_timeout_s, 0.0, 86400.0, open_lo=True)
        _integer("max_message_bytes", self.max_message_bytes, 1024)
        _number("max_realtime_factor", self.max_realtime_factor, 0.0, 1000.0)
        _number("realtime_burst_s", self.realtime_burst_s, 0.0, 3600.0, open_lo=True)
        _number("max_messages_per_s", self.max_messages_per_s, 0.0, 1e6)
        _integer("max_backlog_bytes", self.max_backlog_bytes, self.max_message_bytes)
        _choice("audiosocket_track", self.audiosocket_track, TRACKS)


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """A run's options: the parts above, plus where events are recorded."""

    engine: EngineOptions = field(default_factory=EngineOptions)
    windowing: WindowingOptions = field(default_factory=WindowingOptions)
    batching: BatcherOptions = field(default_factory=BatcherOptions)
    alerts: AlertOptions = field(default_factory=AlertOptions)  # threshold, smoothing, k-of-n rule, speech gate
    input: InputOptions = field(default_factory=InputOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    events: str | None = None  # durable event log: FILE.jsonl, sqlite:PATH, redis://..., postgresql://...
    event_log: EventLogOptions = field(default_factory=EventLogOptions)
    webhook: WebhookOptions | None = None  # POST alerts (and summaries) to a URL
