"""Options shared by every input mode (file, mic, WebSocket, stdin), filled by the CLI."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .alerts import AlertOptions
from .webhook import WebhookOptions


@dataclass
class DetectorOptions:
    # Model and engine
    model: str = "specrnet"  # shipped name or checkpoint folder
    engine: str = "auto"  # auto | onnx | onnx-int8 | torch | cuda | tensorrt | triton
    triton_url: str | None = None  # engine triton: grpc://HOST:PORT
    triton_model: str | None = None  # engine triton: served model name (None: the architecture)
    triton_timeout_s: float = 2.0  # engine triton: deadline of one inference call
    threads: int = 1  # inference threads (ONNX Runtime intra-op / torch)
    max_batch: int = 64  # micro-batcher: most windows per engine call
    max_wait_ms: float = 5.0  # micro-batcher: longest a window waits for company
    max_queue: int = 256  # micro-batcher: windows queued in all (256 KB each) before shedding
    max_pending: int = 8  # micro-batcher: windows queued per stream before shedding its oldest
    max_delay_ms: float = 1000.0  # micro-batcher: live windows waiting longer than this are shed
    parallel: int = 1  # micro-batcher: concurrent engine calls each batch is split over
    # Windowing and verdicts
    hop_s: float = 0.5
    threshold: float | None = None  # None: the checkpoint's threshold
    aggregate: str = "mean_logit"  # window -> file summary
    # Output
    json: bool = False  # JSON lines on stdout
    quiet: bool = False  # no console view
    color: bool | None = None  # None: auto (TTY, NO_COLOR)
    # File input
    offline: bool = False  # files read as fast as they decode, not paced (the pipeline is the same)
    speed: float = 1.0  # replay speed for paced files
    chunk_s: float = 0.1  # paced files and stdin: chunk size
    plot: Path | None = None
    # stdin input
    stdin_format: str = "s16le"
    stdin_rate: int = 16000
    stdin_channels: int = 1
    # Microphone
    device: str | None = None
    retry: bool = False
    # WebSocket server
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    max_connections: int = 64
    idle_timeout_s: float = 30.0
    max_message_bytes: int = 1 << 20  # larger WebSocket messages are refused (close 1009)
    send_queue: int = 64  # events queued per client before the oldest score events are dropped
    insecure: bool = False
    allow_url_token: bool = False  # accept ?token= in the URL (it leaks into logs and histories)
    start_timeout_s: float = 10.0  # a connection must send "start" within this
    max_realtime_factor: float = 4.0  # audio faster than this x real time is throttled (0: no limit)
    realtime_burst_s: float = 8.0  # seconds of audio a stream may send at once before throttling
    max_messages_per_s: float = 500.0  # more frames per second (after a 2-s burst): rate_limited (0: none)
    max_backlog_bytes: int = 8 << 20  # audio read ahead of the realtime factor, per stream; then TCP pushes back
    twilio_auth_token: str | None = None  # /v1/twilio: check X-Twilio-Signature with the account's auth token
    audiosocket_track: str = "caller"  # --input audiosocket: which party the channel's audio is (events' track)
    # Durable event log (realtime.eventlog)
    events: str | None = None  # FILE.jsonl or sqlite:PATH
    events_fsync_s: float = 1.0  # fsync at most this long after a batch (0: every batch)
    # Alerts and review
    alerts: AlertOptions = field(default_factory=AlertOptions)  # smoothing, k-of-n rule, speech gate
    save_alerts: Path | None = None
    webhook: WebhookOptions | None = None  # POST alerts (and summaries) to a URL
    dashboard: bool = False
