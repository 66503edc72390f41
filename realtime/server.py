"""WebSocket server, protocol v1 (docs/protocol.md), on the websockets asyncio API.

    realtime-detect --input ws --port 8765 [--token T] [--allow-origin https://app.example]

* ``ws://HOST:PORT/v1/stream``: the client sends a text ``start`` message, then binary
  frames of interleaved PCM, then ``{"type":"end"}``; the server answers ``ready``, one
  ``score`` event per window, a ``summary``, and closes with 1000.
* ``/v1/twilio`` and ``/v1/audiohook``: Twilio Media Streams and Genesys AudioHook
  (:mod:`realtime.telephony`), :class:`Endpoint` s with the same checks before the handshake.
* ``GET /healthz``: 200 and a JSON status (streams, queue, shed counts, event log, webhook).
  ``GET /`` and the other files of ``realtime/web/``: the browser client (a fixed table of
  the files present at start-up, so no request path ever reaches the file system).

Start message (unknown keys are ignored, for forward compatibility)::

    {"type": "start", "sample_rate": 48000, "channels": 1, "format": "f32le",
     "stream": "call-42", "token": "..."}

``sample_rate`` (required) is an integer in 8000..192000 Hz: below 8 kHz there is not
enough band for the model; above 192 kHz no capture device exists and resampling cost per
connection grows with the rate. ``format`` (required) is ``f32le`` or ``s16le``;
``channels`` 1..8 (default 1), downmixed; ``stream`` optional, 1..64 of ``[A-Za-z0-9_.:-]``
(default ``ws-N``). A binary message may end inside a frame (the rest comes with the next
one); the stream as a whole must be whole frames.

Refusals: an ``error`` event (codes of :data:`realtime.events.ERROR_CODES`), then the close
code. Every refusal is one ``refused ...`` warning line in the log, without traceback and
without the token.

=====================================================  ============  ===========
situation                                              error code    close
=====================================================  ============  ===========
first message not JSON, not ``start``, bad ``stream``  bad_request   1008
binary message before ``start``                        bad_request   1008
unknown text message after ``start``                   bad_request   1008
a message after ``end`` (after the summary)            bad_request   1008
text not UTF-8 / broken WebSocket framing              bad_request   1007 / 1002
bad ``sample_rate``, ``channels``, ``format``          bad_format    1003
NaN/Inf samples                                        bad_audio     1003
stream ends inside a frame (after the summary)         bad_audio     1003
missing or wrong token (start message)                 unauthorized  1008
no ``start`` in ``start_timeout_s``; silent stream     timeout       1008
text over 4 KiB, binary over ``max_message_bytes``     too_big       1009
more than ``max_messages_per_s`` frames (flood)        rate_limited  1008
unread pongs over ``MAX_UNREAD_BYTES`` (ping flood)    not_reading   (dropped)
at capacity or shutting down (at ``start``)            busy          1013
``end`` without any audio                              empty_stream  1000
=====================================================  ============  ===========

Before the WebSocket handshake: a repeated ``Host``, ``Origin`` or ``Authorization`` header
HTTP 400; over ``max_connections`` (or while shutting down) 503;
a wrong ``Authorization: Bearer`` header 401; a token in the URL query 401 unless
``allow_url_token`` (URLs end up in proxy logs and browser history); a foreign ``Origin``
403. Without a token, every request (pages and ``/healthz`` too) must name ``localhost`` or
a loopback address in its ``Host`` header, else 403: a DNS-rebinding page gets past the
same-origin check, not this. Binding a non-loopback address without a token raises
:class:`InsecureBindError` unless ``insecure`` (which also lifts the Host check).

Limits, per connection. Audio faster than ``max_realtime_factor`` times real time (a token
bucket of ``realtime_burst_s`` seconds of audio, refilled at that factor) is *throttled*,
not refused: the server goes on reading the connection into a backlog of at most
``max_backlog_bytes`` (so the library answers the client's pings: its keepalive holds) and
feeds the backlog to the stream at that factor; only past the backlog's bound does it stop
reading and let TCP push back. Nothing is lost, a file streamed as fast as possible is scored
at (at most) 4x real time, and one client can never cost more than that factor in inference.
The feed goes one hop at a time, when the stream has room in the batcher, so the windows of
one large message are never shed for arriving together. Many tiny frames are a flood instead
(each costs the same fixed overhead, whatever its size): every frame (message, fragment,
ping) counts against ``max_messages_per_s`` (after a burst of two seconds' worth), in the
parser, and past it the client is refused with ``rate_limited`` and its socket closed.
Memory is bounded: one message is at most ``max_message_bytes`` (the library refuses bigger
ones from the frame header, before reading them; the server sends the ``too_big`` event
first), the library queues at most ``RECV_QUEUE`` messages, then the backlog, the stream's
fixed ring buffer (allocated untouched: see :func:`pin_mmap_threshold`), its pending windows
in the batcher, an outbound queue of ``send_queue`` events (a client that does not read its
events loses the oldest score events, counted, logged at the end, never the summary, and
never slows anybody else), and ``MAX_UNREAD_BYTES`` of replies it has not read. Out of file
descriptors, ``accept()`` failures are one log line per 10 s. All per-connection state lives
in the handler's locals and its connection object.

Whatever way a stream ends (``end``, a refusal, the client vanishing, shutdown), the windows
it delivered are scored and its summary (or ``empty_stream`` error) goes to the shared sinks
(``--json``, ``--events``); the client gets them when it is still there and ended with
``end`` or was ended by the shutdown.

SIGTERM/SIGINT: stop accepting (new handshakes get 503), finish every stream (its last
windows are scored and its summary sent), close them with 1001, then stop the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hmac
import http
import ipaddress
import itertools
import json
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.exceptions import ProtocolError as WebSocketProtocolError
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State

from .errors import AudioFormatError, EmptyStreamError, RealtimeError
from .events import ErrorEvent, Event, ScoreEvent
from .options import DetectorOptions
from .pacing import Backlog, TokenBucket
from .pcm import PCM_FORMATS, PcmDecoder
from .session import LiveDetector, StreamSession

__all__ = ["DetectorServer", "ProtocolError", "Endpoint", "AudioFeed", "StartRequest", "parse_start", "run_server",
           "WEB_DIR", "CONTENT_TYPES", "WS_MIN_RATE", "WS_MAX_RATE", "WS_MAX_CHANNELS", "STREAM_PATH", "MAX_TEXT_BYTES",
           "RECV_QUEUE", "InsecureBindError", "ListenError", "TokenBucket", "is_loopback", "pin_mmap_threshold"]

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"
WEB_DIR = Path(__file__).resolve().parent / "web"
# What a client may declare in ``start``: narrower than what the resampler takes from files and
# microphones (realtime.resample.MIN_RATE..MAX_RATE), as a network peer is not trusted as far.
WS_MIN_RATE, WS_MAX_RATE, WS_MAX_CHANNELS = 8000, 192000, 8
MAX_TEXT_BYTES = 4096  # start and end messages are ~100 bytes; bigger text is abuse or a bug
RECV_QUEUE = 4  # messages the library buffers per connection before TCP pushes back
#: Replies (pongs, events) queued for a client that does not read them; past this it is closed.
#: Events wait for the socket (write_limit, 32 KiB), so only pongs to a ping flood get here.
MAX_UNREAD_BYTES = 256 * 1024
_STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_WEB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL, CLOSE_UNSUPPORTED = 1000, 1001, 1002, 1003
CLOSE_INVALID_DATA, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_BUSY = 1007, 1008, 1009, 1013

#: Close codes the websockets library fails a connection with -> our error code.
_LIBRARY_REFUSALS = {CLOSE_TOO_BIG: "too_big", CLOSE_INVALID_DATA: "bad_request", CLOSE_PROTOCOL: "bad_request"}

#: The only files served, by extension (anything else in realtime/web/ is not served).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
    ".png": "image/png", ".ico": "image/x-icon", ".wasm": "application/wasm", ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}


class ProtocolError(Exception):
    """A client broke protocol v1: ``code`` for the error event, ``close`` for the close frame."""

    def __init__(self, code: str, close: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.close = close
        self.message = message


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A WebSocket path the server speaks a protocol on. Every endpoint gets the same checks
    before the handshake (capacity, Host, Origin, bearer and URL token); ``handshake`` adds its
    own (returns why the request is refused, or None); ``serve`` runs the connection."""

    serve: Callable[[DetectorServer, _Connection], Awaitable[None]]
    handshake: Callable[[DetectorServer, Request], str | None] | None = None


class ListenError(RealtimeError):
    """The server cannot listen where asked (port in use, address not on this machine)."""


class InsecureBindError(RealtimeError, ValueError):
    """Listening beyond loopback without a token (and without ``insecure``)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (anything else may be reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class StartRequest:
    sample_rate: int
    channels: int
    format: str
    stream: str | None
    token: str | None


def _show(v: object, n: int = 40) -> str:
    """A client-supplied value for a message: its repr, cut to ``n`` characters."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def _int_in(start: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = start.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        what = "missing" if key not in start else f"{_show(v)} not accepted"
        raise ProtocolError("bad_format", CLOSE_UNSUPPORTED,
                            f"{key} {what}; accepted: an integer in {lo}..{hi}")
    return v


def _too_big_text(message: str) -> ProtocolError:
    return ProtocolError("too_big", CLOSE_TOO_BIG, f"text message of {len(message)} characters; "
                         f"control messages are at most {MAX_TEXT_BYTES} bytes")


def parse_start(message: str | bytes) -> StartRequest:
    """Validate the first message of a stream; raises :class:`ProtocolError` naming the field."""
    if isinstance(message, bytes):
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"binary frame ({len(message)} bytes) before the start message; send "
                            '{"type":"start","sample_rate":...,"format":...} as text first')
    if len(message) > MAX_TEXT_BYTES:
        raise _too_big_text(message)
    try:
        start = json.loads(message)
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_request", CLOSE_POLICY, f"start message is not valid JSON ({e.msg} at "
                            f"character {e.pos})") from None
    except RecursionError:  # [[[[...]]]]: nesting deeper than the parser's recursion limit
        raise ProtocolError("bad_request", CLOSE_POLICY, "start message is nested too deeply; "
                            "expected a flat JSON object") from None
    if not isinstance(start, dict) or start.get("type") != "start":
        got = start.get("type") if isinstance(start, dict) else type(start).__name__
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"first message must be {{\"type\":\"start\",...}}, got type {_show(got)}")
    rate = _int_in(start, "sample_rate", WS_MIN_RATE, WS_MAX_RATE)
    channels = _int_in(start, "channels", 1, WS_MAX_CHANNELS, default=1)
    fmt = start.get("format")
    if not isinstance(fmt, str) or fmt not in PCM_FORMATS:
        what = "missing" if "format" not in start else f"{_show(fmt)} not accepted"
        raise ProtocolError("bad_format", CLOSE_UNSUPPORTED, f"format {what}; accepted: {', '.join(PCM_FORMATS)}")
    stream = start.get("stream")
    if stream is not None and (not isinstance(stream, str) or not _STREAM_ID.fullmatch(stream)):
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"stream {_show(stream, 80)} not accepted; accepted: 1..64 characters of A-Z a-z 0-9 _ . : -")
    token = start.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("bad_request", CLOSE_POLICY, "token must be a string")
    return StartRequest(rate, channels, fmt, stream, token)


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _url_token(request: Request) -> str | None:
    """The ``token`` query parameter, if any (``""`` when present but empty)."""
    query = request.path.partition("?")[2]
    values = parse_qs(query, keep_blank_values=True).get("token") if query else None
    return values[0] if values else None


def _loopback_host(value: str) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost`` or a loopback address, any port."""
    if value.startswith("["):  # [::1]:8765
        host = value[1:value.find("]")] if "]" in value else ""
    else:
        host = value.rpartition(":")[0] if value.count(":") == 1 else value
    return is_loopback(host.lower().rstrip("."))


def _token_ok(expected: str, given: str | None) -> bool:
    # Constant time: the comparison must not reveal how many leading characters were right.
    # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which is a wrong token, not a crash.
    return given is not None and hmac.compare_digest(expected.encode("utf-8", "surrogatepass"),
                                                     given.encode("utf-8", "surrogatepass"))


def load_web_files(root: Path) -> dict[str, tuple[bytes, str]]:
    """URL path -> (body, content type) for the files of ``root`` and ``root/vendor``."""
    files: dict[str, tuple[bytes, str]] = {}
    for folder, prefix in ((root, "/"), (root / "vendor", "/vendor/")):
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            ctype = CONTENT_TYPES.get(f.suffix.lower())
            if ctype and _WEB_NAME.fullmatch(f.name) and f.is_file() and not f.is_symlink():
                files[prefix + f.name] = (f.read_bytes(), ctype)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


_connection_numbers = itertools.count(1)  # process-wide: two servers in one process never share one


# How long a refused connection's socket stays open, half-closed, for its error to be read.
LINGER_S = 2.0


class _Connection(ServerConnection):
    """A connection that tells the client *why* when the library fails it, and bounds what a
    client may make the server do without reading or sending audio.

    websockets refuses an oversized frame from its header (1009), invalid UTF-8 (1007) and
    broken framing (1002) inside its parser, with only a close reason. Wrapping the
    protocol's ``fail`` lets us send the ``error`` event first, like every other refusal;
    the handler then finds :attr:`refusal` set and logs it.

    Every frame counts against ``frame_rate`` (a message, each of its fragments, a ping), in
    the parser, before any work is done for it: a flood of empty fragments or pings is refused
    within its burst. A client whose unread replies pass :data:`MAX_UNREAD_BYTES` (it sends
    pings and never reads the pongs) is dropped.
    """

    def __init__(self, protocol: Protocol, *args: Any, frame_rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)  # type: ignore[arg-type]
        self.stream_id: str | None = None
        self.number = next(_connection_numbers)  # in every event of its stream, and in clip names
        self.refusal: ProtocolError | None = None
        self.lingering = False  # refused and half-closed: input is discarded until the socket closes
        library_fail = protocol.fail
        library_recv_frame = protocol.recv_frame
        frames = TokenBucket(frame_rate, 2 * frame_rate) if frame_rate > 0 else None

        def fail(code: int, reason: str = "") -> None:
            if protocol.state is State.OPEN and code in _LIBRARY_REFUSALS and self.refusal is None:
                message = reason or "invalid WebSocket frame"
                if code == CLOSE_TOO_BIG:
                    message += f"; at most {protocol.max_message_size} bytes per message: send smaller frames"
                self._tell(ProtocolError(_LIBRARY_REFUSALS[code], code, message))
            library_fail(code, reason)

        def recv_frame(frame: Any) -> None:
            if frames is not None and frames.take(1.0, time.monotonic()) > 0:
                if self.refusal is None and protocol.state is State.OPEN:
                    self._tell(ProtocolError(
                        "rate_limited", CLOSE_POLICY,
                        f"more than {frame_rate:g} WebSocket frames per second (each message, fragment and ping "
                        "counts); send fewer, larger messages (20-100 ms of audio each)"))
                    library_fail(CLOSE_POLICY, "rate_limited")
                # Leaves the parser's loop: the rest of what was read is discarded unparsed.
                raise WebSocketProtocolError("frame rate limit")
            library_recv_frame(frame)

        protocol.fail = fail  # type: ignore[method-assign]
        protocol.recv_frame = recv_frame  # type: ignore[method-assign]

    def _tell(self, refusal: ProtocolError) -> None:
        """Record the refusal and send its error event (before the library's close frame); then
        end the connection once they are written, without waiting for a hostile client that goes
        on sending: half-close (FIN after the frames), stop reading (a flood backs up in its own
        socket instead of being read and thrown away), close after LINGER_S. Closing at once with
        unread input would make the kernel send a reset at once, and a client that reads could
        lose the error it is owed."""
        self.refusal = refusal
        ev = ErrorEvent(code=refusal.code, message=refusal.message, stream=self.stream_id,
                        connection=self.number if self.stream_id else None)
        try:
            self.protocol.send_text(ev.to_json().encode())
        except (InvalidState, WebSocketProtocolError):  # closing already: nothing more to say
            pass
        self.loop.call_soon(self._linger)  # after data_received has written them out

    def _linger(self) -> None:
        self.lingering = True
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()  # sent once the write buffer has drained
            self.transport.pause_reading()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # refused: what the client still sends is dropped unread
        super().data_received(data)
        unread = self.transport.get_write_buffer_size()
        if unread > MAX_UNREAD_BYTES and not self.transport.is_closing():
            if self.refusal is None:
                self.refusal = ProtocolError("not_reading", CLOSE_POLICY,
                                             f"{unread} bytes of replies unread (pongs to its pings); dropped")
            self.transport.abort()


class _Outbox:
    """A connection's outbound events: bounded queue + one sender task.

    Used as the session's sink. When ``limit`` events are queued, the oldest score event is
    dropped (never ready/summary/error), so a client that does not read costs bounded memory
    and only delays itself. After :meth:`stop` (the client is gone, or was refused), further
    events are not for it and are ignored.
    """

    def __init__(self, ws: ServerConnection, limit: int) -> None:
        self._ws = ws
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = False
        self.dropped = 0
        self.task = asyncio.create_task(self._run())

    def __call__(self, event: Event) -> None:
        if self._stopped:
            return
        if len(self._queue) >= self._limit:
            for i, queued in enumerate(self._queue):
                if isinstance(queued, ScoreEvent):
                    del self._queue[i]
                    self.dropped += 1
                    break
        self._queue.append(event)
        self._wake.set()

    def stop(self) -> None:
        """Accept no more events (what is queued is still sent by :meth:`close`)."""
        self._stopped = True

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    await self._ws.send(self._queue.popleft().to_json())
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            return

    async def close(self, code: int, reason: str, flush_s: float) -> None:
        """Send what is queued (for at most ``flush_s``), then close the connection."""
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(flush_s):
                await asyncio.shield(self.task)
        except TimeoutError:
            self.task.cancel()
        await self._ws.close(code, reason)


class DetectorServer:
    """Serves protocol v1 for a :class:`~realtime.session.LiveDetector`.

    ``await start()``, then ``shutdown()`` (what SIGTERM does) and ``await wait_closed()``.
    """

    def __init__(self, detector: LiveDetector, options: DetectorOptions | None = None, *,
                 web_root: Path = WEB_DIR, flush_s: float = 5.0, drain_s: float = 15.0) -> None:
        self.detector = detector
        self.options = options if options is not None else detector.options
        o = self.options
        if o.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {o.max_connections}")
        for name in ("idle_timeout_s", "start_timeout_s"):
            if not getattr(o, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(o, name)}")
        if o.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {o.max_message_bytes}")
        for name in ("max_realtime_factor", "max_messages_per_s"):
            if not 0 <= getattr(o, name) < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0 (0: no limit), got {getattr(o, name)}")
        if o.max_backlog_bytes < o.max_message_bytes:
            raise ValueError(f"max_backlog_bytes must be >= max_message_bytes ({o.max_message_bytes}), "
                             f"got {o.max_backlog_bytes}")
        if not 0 < o.realtime_burst_s < float("inf"):
            raise ValueError(f"realtime_burst_s must be > 0 seconds, got {o.realtime_burst_s}")
        self.web_files = load_web_files(web_root)
        self.flush_s = flush_s
        self.drain_s = drain_s
        self._active = 0  # streams between ready and close (a count, not a registry)
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._stopping = asyncio.Event()
        self._server: Server | None = None
        self.refused = 0
        self.dropped_events = 0
        from .telephony import audiohook, twilio  # they build on this module: imported once it is loaded

        self.endpoints: dict[str, Endpoint] = {STREAM_PATH: Endpoint(DetectorServer._handler),
                                               twilio.PATH: twilio.ENDPOINT, audiohook.PATH: audiohook.ENDPOINT}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        if o.token is None and not o.insecure and not is_loopback(o.host):
            raise InsecureBindError(f"host {o.host!r} is reachable beyond this machine and no token is set; "
                                    "set a token (REALTIME_DETECT_TOKEN or --token) or pass --insecure")
        self._server = await serve(
            self._dispatch, o.host, o.port,
            process_request=self._process_request,
            create_connection=partial(_Connection, frame_rate=o.max_messages_per_s),  # type: ignore[arg-type]
            compression=None,  # PCM does not deflate well, and deflate state costs ~100 KB per client
            max_size=o.max_message_bytes,  # bigger: refused from the frame header, with an error event
            max_queue=RECV_QUEUE,
            close_timeout=self.flush_s,
            ping_interval=20, ping_timeout=20,
            server_header=None,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        assert self._server is not None, "start() first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """Where clients connect (the log line a supervisor or a test waits for)."""
        return f"ws://{self.options.host}:{self.port}{STREAM_PATH}"

    @property
    def stopping(self) -> asyncio.Event:
        """Set by :meth:`shutdown`: streams finish what arrived and close with 1001."""
        return self._stopping

    @contextlib.contextmanager
    def active_stream(self) -> Iterator[None]:
        """Count a stream (or call) as open: /healthz, capacity and the drain at shutdown see it."""
        self._active += 1
        self._all_done.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._all_done.set()

    def shutdown(self) -> None:
        """Stop accepting; every open stream is finished (summary sent) and closed with 1001."""
        if self._stopping.is_set() or self._server is None:
            return
        log.info("shutting down: finishing %d streams", self._active)
        self._stopping.set()
        self._stop_listening()

    def _stop_listening(self) -> None:
        assert self._server is not None
        self._server.close(close_connections=False)

    async def wait_closed(self) -> None:
        """After :meth:`shutdown`: wait for the streams to finish (at most ``drain_s``), then
        close what is left and stop the detector."""
        await self._stopping.wait()
        try:
            async with asyncio.timeout(self.drain_s):
                await self._all_done.wait()
        except TimeoutError:
            log.warning("%d streams still open after %.0f s; closing them", self._active, self.drain_s)
        await self._close_connections()
        await self.detector.aclose()

    async def _close_connections(self) -> None:
        # Streams are done; what is left is stuck streams and clients that never sent "start".
        assert self._server is not None
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY, "server shutting down")
                               for c in list(self._server.connections)), return_exceptions=True)
        await self._server.wait_closed()

    def health(self) -> dict[str, Any]:
        s = self.detector.batcher.stats()
        h: dict[str, Any] = {
            "status": "stopping" if self._stopping.is_set() else "ok", "model": self.detector.model,
            "streams": self._active, "connections": len(self._server.connections) if self._server else 0,
            "queued": s.queued, "batches": s.batches, "scored": s.scored, "shed": s.shed, "errors": s.errors,
            "mean_batch": round(s.mean_batch, 2), "busy_s": round(s.busy_s, 3), "refused": self.refused,
            "dropped_events": self.dropped_events}
        from .eventlog import EventLog  # no import cycle at module load; only when asked
        from .webhook import WebhookSink

        for sink in self.detector.sinks:
            if isinstance(sink, EventLog):
                st = sink.stats()
                h["event_log"] = {"written": st.written, "queued": st.queued, "dropped": st.dropped,
                                  "failed": st.failed, "available": st.available}
            elif isinstance(sink, WebhookSink):
                w = sink.stats()
                h["webhook"] = {"sent": w.sent, "failed": w.failed, "retried": w.retried, "dropped": w.dropped}
        return h

    # -- HTTP side (opening handshake) -----------------------------------------------------

    def _refuse_http(self, connection: ServerConnection, status: http.HTTPStatus, why: str) -> Response:
        self.refused += 1
        log.warning("refused %s: HTTP %d %s", _peer(connection), status.value, why)
        return connection.respond(status, why + "\n")

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser: origins only defend against cross-site pages
            return True
        allowed = self.options.allowed_origins
        if allowed:
            return "*" in allowed or origin in allowed
        # Default: same origin only (the page this server serves).
        host = request.headers.get("Host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        o = self.options
        for name in ("Host", "Origin", "Authorization"):
            # Headers.get() raises on repeated headers; and two answers to one question is a refusal.
            if len(request.headers.get_all(name)) > 1:
                return self._refuse_http(connection, http.HTTPStatus.BAD_REQUEST, f"more than one {name} header")
        if o.token is None and not o.insecure and not _loopback_host(request.headers.get("Host", "")):
            # DNS rebinding: a page from evil.example whose name now resolves to 127.0.0.1 sends
            # Host and Origin evil.example, which pass the same-origin check; the Host does not.
            return self._refuse_http(connection, http.HTTPStatus.FORBIDDEN,
                                     f"Host {request.headers.get('Host', '')[:100]!r} not served without a token "
                                     "(only localhost and loopback addresses are); set a token or pass --insecure")
        endpoint = self.endpoints.get(path)
        if endpoint is not None:
            if self._stopping.is_set():
                return self._refuse_http(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down")
            assert self._server is not None
            if len(self._server.connections) >= self.options.max_connections:
                return self._refuse_http(connection, http.HTTPStatus.SERVICE_UNAVAILABLE,
                                         f"busy: {self.options.max_connections} connections open")
            if not self._origin_ok(request):
                return self._refuse_http(connection, http.HTTPStatus.FORBIDDEN,
                                         f"origin {request.headers.get('Origin', '')[:100]!r} not allowed")
            token = self.options.token
            if token is not None:
                given = _bearer(request.headers)
                if given is not None and not _token_ok(token, given):
                    return self._refuse_http(connection, http.HTTPStatus.UNAUTHORIZED, "wrong bearer token")
                in_url = _url_token(request)
                if in_url is not None and not self.options.allow_url_token:
                    return self._refuse_http(connection, http.HTTPStatus.UNAUTHORIZED,
                                             "token in the URL not accepted (URLs end up in logs and histories); "
                                             "send 'Authorization: Bearer', or \"token\" in the start message")
                if in_url is not None and not _token_ok(token, in_url):
                    return self._refuse_http(connection, http.HTTPStatus.UNAUTHORIZED, "wrong token in the URL")
            why = endpoint.handshake(self, request) if endpoint.handshake is not None else None
            if why is not None:
                return self._refuse_http(connection, http.HTTPStatus.FORBIDDEN, why)
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return _response(http.HTTPStatus.OK, json.dumps(self.health()).encode(), "application/json")
        page = self.web_files.get(path)
        if page is not None:
            return _response(http.HTTPStatus.OK, *page)
        if path == "/":
            return _response(http.HTTPStatus.NOT_FOUND, b"browser page not installed (realtime/web/index.html)\n",
                             CONTENT_TYPES[".txt"])
        return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", CONTENT_TYPES[".txt"])

    # -- WebSocket side --------------------------------------------------------------------

    async def _recv(self, ws: ServerConnection, timeout: float) -> str | bytes:
        try:
            async with asyncio.timeout(timeout):
                return await ws.recv()  # cancelling recv() loses no data
        except TimeoutError:
            raise ProtocolError("timeout", CLOSE_POLICY,
                                f"no message for {timeout:g} s; idle connections are closed") from None

    def log_refusal(self, ws: ServerConnection, e: ProtocolError, stream: str | None = None) -> None:
        self.refused += 1
        where = f" stream {stream}" if stream else ""
        log.warning("refused %s%s: %s (%s), close %d", _peer(ws), where, e.code, e.message, e.close)

    async def _refuse(self, ws: ServerConnection, e: ProtocolError) -> None:
        self.log_refusal(ws, e)
        try:
            await ws.send(ErrorEvent(code=e.code, message=e.message).to_json())
            await ws.close(e.close, e.code)
        except ConnectionClosed:
            pass

    def authorized(self, request: Request | None, *given: str | None) -> bool:
        """Whether a connection holds the token (if one is set): in its ``Authorization: Bearer``
        header, in the URL (with ``allow_url_token``), or in ``given`` (a protocol's own field)."""
        token = self.options.token
        if token is None:
            return True
        if request is not None and (_token_ok(token, _bearer(request.headers)) or (
                self.options.allow_url_token and _token_ok(token, _url_token(request)))):
            return True
        return any(_token_ok(token, g) for g in given)

    async def _open(self, ws: ServerConnection) -> tuple[StartRequest, str]:
        start = parse_start(await self._recv(ws, self.options.start_timeout_s))
        if not self.authorized(ws.request, start.token):
            raise ProtocolError("unauthorized", CLOSE_POLICY,
                                "a token is required: 'Authorization: Bearer ...' header or \"token\" in the start message")
        self.admit()
        return start, start.stream or f"ws-{ws.number}"

    def admit(self) -> None:
        """Raise ``busy`` when a new stream (or call) cannot start: shutting down, or full."""
        if self._stopping.is_set():
            raise ProtocolError("busy", CLOSE_BUSY, "server shutting down; retry later")
        if self._active >= self.options.max_connections:
            raise ProtocolError("busy", CLOSE_BUSY, f"{self.options.max_connections} streams open; retry later")

    async def _next_message(self, ws: ServerConnection, backlog: Backlog) -> str | bytes:
        """The next message. The idle timeout counts from when the stream's audio has all been
        fed: a client that sent minutes at once and waits for its scores is not idle, we are."""
        limit = self.options.idle_timeout_s
        while True:
            since = backlog.starved_since
            left = limit if since is None else limit - (time.monotonic() - since)
            if left <= 0:
                raise ProtocolError("timeout", CLOSE_POLICY, f"no message for {limit:g} s; idle connections are closed")
            try:
                async with asyncio.timeout(left):
                    return await ws.recv()  # cancelling recv() loses no data
            except TimeoutError:
                continue  # look again: the feed may have been busy all along

    async def _read(self, ws: ServerConnection, backlog: Backlog) -> str | bytes | None:
        """Binary messages into ``backlog`` until ``end``, as fast as they come: reading on while
        the stream is throttled keeps the client's pings answered. Then waits for a message after
        ``end`` (returned: a protocol error). A fault ends the backlog with it, returns None."""
        try:
            while True:
                msg = await self._next_message(ws, backlog)
                if isinstance(msg, bytes):
                    await backlog.put(msg)  # waits at the backlog's limit: TCP pushes back
                    continue
                if len(msg) > MAX_TEXT_BYTES:
                    raise _too_big_text(msg)
                kind = _message_type(msg)
                if kind == "end":
                    break
                raise ProtocolError("bad_request", CLOSE_POLICY,
                                    f"text message of type {_show(kind)} not understood; after start, send binary "
                                    'PCM frames and {"type":"end"}')
        except (ProtocolError, ConnectionClosed) as e:
            backlog.fail(e)
            return None
        backlog.close()
        try:
            return await ws.recv()  # nothing may follow "end"
        except ConnectionClosed:
            return None

    async def _dispatch(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _Connection) and ws.request is not None
        await self.endpoints[ws.request.path.partition("?")[0]].serve(self, ws)

    async def _handler(self, ws: _Connection) -> None:
        try:
            start, stream_id = await self._open(ws)
        except ProtocolError as e:
            await self._refuse(ws, e)
            return
        except ConnectionClosed:
            if ws.refusal is not None:  # the library refused a message (the client was told)
                self.log_refusal(ws, ws.refusal)
            return
        outbox = _Outbox(ws, self.options.send_queue)
        try:
            with self.active_stream():
                await self._serve_stream(ws, start, stream_id, outbox)
        finally:
            if outbox.dropped:
                self.dropped_events += outbox.dropped
                log.warning("stream %s: client read too slowly, %d score events dropped", stream_id, outbox.dropped)

    async def _serve_stream(self, ws: _Connection, start: StartRequest, stream_id: str,
                            outbox: _Outbox) -> None:
        o = self.options
        session = self.detector.open_stream(stream_id, start.sample_rate, start.channels, sinks=[outbox],
                                            connection=ws.number)
        decoder = PcmDecoder(start.format, start.channels)
        ws.stream_id = stream_id
        ready = self.detector.ready(stream_id, ws.number)
        for sink in session.sinks:
            sink(ready)
        backlog = Backlog(o.max_backlog_bytes)
        feed = AudioFeed(session, decoder, backlog, start.sample_rate, self.detector.window.hop_s)
        reader = asyncio.create_task(self._read(ws, backlog))
        pace = TokenBucket(o.max_realtime_factor, o.realtime_burst_s) if o.max_realtime_factor > 0 else None
        feeder = asyncio.create_task(feed.run(pace))
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait((feeder, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        code, reason = CLOSE_NORMAL, "end of stream"
        late: ProtocolError | None = None  # a fault found after "end": reported after the summary
        gone = False
        try:
            if not feeder.done():  # shutdown: what arrived so far is scored (unpaced) and summarised
                code, reason = CLOSE_GOING_AWAY, "server shutting down"
                reader.cancel()
                feeder.cancel()
                await asyncio.wait((feeder,))
                if feeder.cancelled():
                    backlog.close()
                    await feed.run(None)
                else:
                    feeder.result()
            else:
                feeder.result()
                if decoder.pending_bytes:
                    late = ProtocolError("bad_audio", CLOSE_UNSUPPORTED, (
                        f"stream ended inside a frame: the last {decoder.pending_bytes} byte(s) are not a whole "
                        f"{decoder.frame_bytes}-byte frame ({start.format}, {start.channels} channel(s)); dropped"))
        except ProtocolError as e:
            self.log_refusal(ws, e, stream_id)
            session.error(e.code, e.message)  # to the client and to the shared sinks
            outbox.stop()  # what follows (the summary) is only for the shared sinks
            code, reason = e.close, e.code
        except ConnectionClosed:  # the client left, or the library refused a message
            gone = True
            outbox.stop()
            if ws.refusal is not None:
                self.log_refusal(ws, ws.refusal, stream_id)
                session.error(ws.refusal.code, ws.refusal.message)  # the client already has it
        # However the stream ended, score what arrived and record the summary.
        try:
            await session.finish()
        except EmptyStreamError as e:
            session.error("empty_stream", str(e))
        extra = _message_after_end(reader)  # always: it also cancels the read
        late = late or extra
        # A task's exception has this frame in its traceback, and this frame holds the task: a
        # cycle that would keep the session's buffers until the cyclic GC runs. Drop our end.
        reader = feeder = feed = backlog = None  # type: ignore[assignment]  # noqa: F841
        if gone:
            outbox.task.cancel()
            return
        if late is not None:
            self.log_refusal(ws, late, stream_id)
            session.error(late.code, late.message)
            code, reason = late.close, late.code
        await outbox.close(code, reason, self.flush_s)


class AudioFeed:
    """A stream's backlog into its session: at most ``pace``'s rate (None: as fast as the
    batcher takes it), one hop of audio at a time, each only when the stream has room for its
    windows. So a within-limits client never has windows shed for arriving together (one
    large message holds many); only an overloaded server sheds (``max_delay_ms``, ``max_queue``).
    """

    def __init__(self, session: StreamSession, decoder: PcmDecoder, backlog: Backlog, rate: int,
                 hop_s: float) -> None:
        self.session, self.decoder, self.backlog, self.rate = session, decoder, backlog, rate
        self.step = max(1, int(hop_s * rate))  # frames per push: at most two windows complete
        self.rest: np.ndarray | None = None  # frames taken from the backlog, not yet pushed

    async def run(self, pace: TokenBucket | None) -> None:
        """Until the backlog ends; raises its failure, or ProtocolError for bad audio. Safe to
        cancel: nothing taken is lost, a later run goes on from there."""
        loop = asyncio.get_running_loop()
        while True:
            if self.rest is None or not self.rest.shape[0]:
                msg = await self.backlog.get()
                if msg is None:
                    return
                self.rest = self.decoder.decode(msg)
                continue
            n = min(self.step, self.rest.shape[0])
            if pace is not None:
                wait = pace.take(n / self.rate, loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)
            await self.session.wait_room(2)
            piece, self.rest = self.rest[:n], self.rest[n:]  # no await between taking and pushing
            try:
                await self.session.push(piece)  # live streams shed, never wait
            except AudioFormatError as e:
                raise ProtocolError("bad_audio", CLOSE_UNSUPPORTED, str(e)) from None


def _message_type(msg: str) -> object:
    """The ``type`` of a JSON text message, or None (not JSON, not an object, nested too deep)."""
    try:
        data = json.loads(msg)
    except (json.JSONDecodeError, RecursionError):
        return None
    return data.get("type") if isinstance(data, dict) else None


def _message_after_end(task: asyncio.Task[str | bytes | None]) -> ProtocolError | None:
    """Cancel the read after ``end``; a message it got is an error (a closed connection is not)."""
    if not task.done():
        task.cancel()
        return None
    if task.cancelled() or task.exception() is not None:
        return None
    msg = task.result()
    if msg is None:
        return None
    if isinstance(msg, bytes):
        what = f"binary message of {len(msg)} bytes"
    else:
        what = f"text message of type {_show(_message_type(msg) if len(msg) <= MAX_TEXT_BYTES else None)}"
    return ProtocolError("bad_request", CLOSE_POLICY, f"{what} after end; nothing may follow {{\"type\":\"end\"}}")


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """glibc: serve every allocation of ``nbytes`` or more with its own mmap, for good.

    By default glibc raises that threshold each time such a block is freed, after which the
    256-KB windows and ring buffers come from the heap: the heap's high-water mark then stays
    resident (measured: +60 MB per round of 200 streams, never given back) and ``calloc``
    touches pages it would otherwise leave unmapped (an idle stream cost ~300 KB instead of
    ~25 KB). Pinned, freed blocks go back to the system at once; the cost is a few mmap calls
    per window. Not done when ``MALLOC_MMAP_THRESHOLD_`` is set (the operator decided) or
    outside glibc. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends: no mallopt
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes))


class _AcceptErrors:
    """The loop's exception handler, except for ``accept()`` failing for lack of descriptors.

    asyncio logs that with a traceback up to ``backlog`` times a tick and retries every second:
    ~90,000 lines in 15 s at ``ulimit -n 32``. Here it is one line per ``interval_s``, with the
    count; serving resumes by itself when descriptors are freed.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.count = 0
        self._last = -float("inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and context.get("message", "").startswith("socket.accept() out of")):
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            log.error("cannot accept connections: %s (%d failed accept() since the last report); retrying "
                      "every second; raise the open-file limit (ulimit -n) or lower --max-connections",
                      exc.strerror or exc, self.count)
            self.count = 0


async def run_server(detector: LiveDetector, options: DetectorOptions | None = None, *,
                     on_ready: Callable[[DetectorServer], None] | None = None,
                     server_class: type[DetectorServer] = DetectorServer, **kwargs: Any) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see module doc). ``detector`` is started here.
    ``server_class``: :class:`DetectorServer`, or the AudioSocket listener built on it."""
    pin_mmap_threshold()  # a server runs for days: memory must go back when streams end
    asyncio.get_running_loop().set_exception_handler(_AcceptErrors())
    detector.start()
    server = server_class(detector, options, **kwargs)
    try:
        await server.start()
    except OSError as e:  # the port is taken, the address is not ours: one line, not a traceback
        await detector.aclose()  # its worker thread must not be torn down by the exit (ORT aborts)
        o = server.options
        if e.errno == errno.EADDRINUSE:
            raise ListenError(f"port {o.port} on {o.host} is already in use; choose another with --port "
                              "(0: any free one)") from None
        raise ListenError(f"cannot listen on {o.host}:{o.port}: "
                          f"{os.strerror(e.errno) if e.errno else e}") from None
    except BaseException:
        await detector.aclose()
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, server.shutdown)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not POSIX
            pass
    log.info("listening on %s (model %s, threshold %.2f: each model has its own)", server.url,
             detector.model, detector.threshold)
    if on_ready is not None:
        on_ready(server)
    await server.wait_closed()
