"""WebSocket server, protocol v1 (DESIGN.md section 5), on the websockets asyncio API.

    realtime-detect --input ws --port 8765 [--token T] [--allow-origin https://app.example]

* ``ws://HOST:PORT/v1/stream``: the client sends a text ``start`` message, then binary
  frames of interleaved PCM, then ``{"type":"end"}``; the server answers ``ready``, one
  ``score`` event per window, a ``summary``, and closes with 1000.
* ``GET /healthz``: 200 and a JSON status (streams, queue, shed counts).
  ``GET /`` and the other files of ``realtime/web/``: the browser client (a fixed table of
  the files present at start-up, so no request path ever reaches the file system).

Start message (unknown keys are ignored, for forward compatibility)::

    {"type": "start", "sample_rate": 48000, "channels": 1, "format": "f32le",
     "stream": "call-42", "token": "..."}

``sample_rate`` (required) is an integer in 8000..192000 Hz: below 8 kHz there is not
enough band for the model; above 192 kHz no capture device exists and resampling cost per
connection grows with the rate. ``format`` (required) is ``f32le`` or ``s16le``;
``channels`` 1..8 (default 1), downmixed; ``stream`` optional, 1..64 of ``[A-Za-z0-9_.:-]``
(default ``ws-N``).

Refusals send an ``error`` event (codes of :data:`realtime.events.ERROR_CODES`), then close:
1008 policy (``bad_request``, ``unauthorized``, ``timeout``), 1003 unsupported data
(``bad_format``, ``bad_audio``), 1009 too big (``too_big``), 1013 busy (``busy``). Over
``max_connections`` the handshake itself is refused with HTTP 503; a bad ``Authorization``
header with 401; a foreign ``Origin`` with 403. Each refusal is one log line; tokens are
never logged.

Per connection, memory is bounded: messages up to ``max_message_bytes``, websockets'
receive queue, the stream's fixed ring buffer, its pending windows in the batcher, and an
outbound queue of ``send_queue`` events; a client that does not read its events loses the
oldest score events (counted, logged at the end), never the summary, and never slows
anybody else. All per-connection state lives in the handler's locals.

SIGTERM/SIGINT: stop accepting (new handshakes get 503), finish every stream (its last
windows are scored and its summary sent), close them with 1001, then stop the batcher.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import itertools
import json
import logging
import re
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .errors import AudioFormatError, EmptyStreamError
from .events import ErrorEvent, Event, ScoreEvent
from .options import DetectorOptions
from .pcm import PCM_FORMATS, PcmDecoder
from .session import LiveDetector, StreamSession

__all__ = ["DetectorServer", "ProtocolError", "StartRequest", "parse_start", "run_server", "WEB_DIR",
           "CONTENT_TYPES", "MIN_RATE", "MAX_RATE", "MAX_CHANNELS", "STREAM_PATH"]

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"
WEB_DIR = Path(__file__).resolve().parent / "web"
MIN_RATE, MAX_RATE, MAX_CHANNELS = 8000, 192000, 8
_STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_WEB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED = 1000, 1001, 1003
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_BUSY = 1008, 1009, 1013

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
class StartRequest:
    sample_rate: int
    channels: int
    format: str
    stream: str | None
    token: str | None


def _int_in(start: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = start.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        what = "missing" if key not in start else f"{v!r} not accepted"
        raise ProtocolError("bad_format", CLOSE_UNSUPPORTED,
                            f"{key} {what}; accepted: an integer in {lo}..{hi}")
    return v


def parse_start(message: str | bytes) -> StartRequest:
    """Validate the first message of a stream; raises :class:`ProtocolError` naming the field."""
    if isinstance(message, bytes):
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"binary frame ({len(message)} bytes) before the start message; send "
                            '{"type":"start","sample_rate":...,"format":...} as text first')
    try:
        start = json.loads(message)
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_request", CLOSE_POLICY, f"start message is not valid JSON ({e.msg} at "
                            f"character {e.pos})") from None
    if not isinstance(start, dict) or start.get("type") != "start":
        got = start.get("type") if isinstance(start, dict) else type(start).__name__
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"first message must be {{\"type\":\"start\",...}}, got type {got!r}")
    rate = _int_in(start, "sample_rate", MIN_RATE, MAX_RATE)
    channels = _int_in(start, "channels", 1, MAX_CHANNELS, default=1)
    fmt = start.get("format")
    if fmt not in PCM_FORMATS:
        what = "missing" if "format" not in start else f"{fmt!r} not accepted"
        raise ProtocolError("bad_format", CLOSE_UNSUPPORTED, f"format {what}; accepted: {', '.join(PCM_FORMATS)}")
    stream = start.get("stream")
    if stream is not None and (not isinstance(stream, str) or not _STREAM_ID.fullmatch(stream)):
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"stream {str(stream)[:80]!r} not accepted; accepted: 1..64 characters of A-Z a-z 0-9 _ . : -")
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


def _token_ok(expected: str, given: str | None) -> bool:
    # Constant time: the comparison must not reveal how many leading characters were right.
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


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


class _Outbox:
    """A connection's outbound events: bounded queue + one sender task.

    Used as the session's sink. When ``limit`` events are queued, the oldest score event is
    dropped (never ready/summary/error), so a client that does not read costs bounded memory
    and only delays itself.
    """

    def __init__(self, ws: ServerConnection, limit: int) -> None:
        self._ws = ws
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.dropped = 0
        self.task = asyncio.create_task(self._run())

    def __call__(self, event: Event) -> None:
        if len(self._queue) >= self._limit:
            for i, queued in enumerate(self._queue):
                if isinstance(queued, ScoreEvent):
                    del self._queue[i]
                    self.dropped += 1
                    break
        self._queue.append(event)
        self._wake.set()

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
        if not o.idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be > 0 seconds, got {o.idle_timeout_s}")
        if o.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {o.max_message_bytes}")
        self.web_files = load_web_files(web_root)
        self.flush_s = flush_s
        self.drain_s = drain_s
        self._ids = itertools.count(1)
        self._active = 0  # streams between ready and close (a count, not a registry)
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._stopping = asyncio.Event()
        self._server: Server | None = None
        self.refused = 0
        self.dropped_events = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        self._server = await serve(
            self._handler, o.host, o.port,
            process_request=self._process_request,
            compression=None,  # PCM does not deflate well, and deflate state costs ~100 KB per client
            # A hard cap well above max_message_bytes, so that a big message is refused with an
            # error event (by the handler) rather than dropped by the library without one.
            max_size=4 * o.max_message_bytes,
            max_queue=8,
            close_timeout=self.flush_s,
            ping_interval=20, ping_timeout=20,
            server_header=None,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        assert self._server is not None, "start() first"
        return self._server.sockets[0].getsockname()[1]

    def shutdown(self) -> None:
        """Stop accepting; every open stream is finished (summary sent) and closed with 1001."""
        if self._stopping.is_set() or self._server is None:
            return
        log.info("shutting down: finishing %d streams", self._active)
        self._stopping.set()
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
        # Streams are done; what is left is stuck streams and clients that never sent "start".
        assert self._server is not None
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY, "server shutting down")
                               for c in list(self._server.connections)), return_exceptions=True)
        await self._server.wait_closed()
        await self.detector.aclose()

    def health(self) -> dict[str, Any]:
        s = self.detector.batcher.stats()
        return {"status": "stopping" if self._stopping.is_set() else "ok", "model": self.detector.model,
                "streams": self._active, "queued": s.queued, "batches": s.batches, "scored": s.scored,
                "shed": s.shed, "errors": s.errors, "mean_batch": round(s.mean_batch, 2),
                "busy_s": round(s.busy_s, 3), "refused": self.refused, "dropped_events": self.dropped_events}

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
        if path == STREAM_PATH:
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
            given = _bearer(request.headers)
            if token is not None and given is not None and not _token_ok(token, given):
                return self._refuse_http(connection, http.HTTPStatus.UNAUTHORIZED, "wrong bearer token")
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

    async def _recv(self, ws: ServerConnection) -> str | bytes:
        try:
            async with asyncio.timeout(self.options.idle_timeout_s):
                return await ws.recv()  # cancelling recv() loses no data
        except TimeoutError:
            raise ProtocolError("timeout", CLOSE_POLICY,
                                f"no message for {self.options.idle_timeout_s:g} s; idle streams are closed") from None

    async def _refuse(self, ws: ServerConnection, e: ProtocolError, stream: str | None = None) -> None:
        self.refused += 1
        log.warning("refused %s: %s (%s)", _peer(ws), e.code, e.message)
        try:
            await ws.send(ErrorEvent(code=e.code, message=e.message, stream=stream).to_json())
            await ws.close(e.close, e.code)
        except ConnectionClosed:
            pass

    async def _open(self, ws: ServerConnection) -> tuple[StartRequest, str]:
        start = parse_start(await self._recv(ws))
        token = self.options.token
        if token is not None and not (_token_ok(token, _bearer(ws.request.headers) if ws.request else None)
                                      or _token_ok(token, start.token)):
            raise ProtocolError("unauthorized", CLOSE_POLICY,
                                "a token is required: 'Authorization: Bearer ...' header or \"token\" in the start message")
        if self._stopping.is_set():
            raise ProtocolError("busy", CLOSE_BUSY, "server shutting down; retry later")
        if self._active >= self.options.max_connections:
            raise ProtocolError("busy", CLOSE_BUSY, f"{self.options.max_connections} streams open; retry later")
        return start, start.stream or f"ws-{next(self._ids)}"

    async def _receive(self, ws: ServerConnection, session: StreamSession, decoder: PcmDecoder) -> None:
        """Audio until ``end``; returns at ``end``, raises ProtocolError or ConnectionClosed."""
        limit = self.options.max_message_bytes
        while True:
            msg = await self._recv(ws)
            if isinstance(msg, bytes):
                if len(msg) > limit:
                    raise ProtocolError("too_big", CLOSE_TOO_BIG,
                                        f"binary message of {len(msg)} bytes; at most {limit} per message")
                frames = decoder.decode(msg)
                if frames.shape[0]:
                    try:
                        await session.push(frames)  # live streams shed, never wait
                    except AudioFormatError as e:
                        raise ProtocolError("bad_audio", CLOSE_UNSUPPORTED, str(e)) from None
                continue
            try:
                data = json.loads(msg)
            except json.JSONDecodeError:
                data = None
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "end":
                return
            raise ProtocolError("bad_request", CLOSE_POLICY,
                                f"text message {msg[:60]!r} not understood; after start, send binary PCM "
                                'frames and {"type":"end"}')

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            start, stream_id = await self._open(ws)
        except ProtocolError as e:
            await self._refuse(ws, e)
            return
        except ConnectionClosed:
            return
        self._active += 1
        self._all_done.clear()
        outbox = _Outbox(ws, self.options.send_queue)
        try:
            await self._serve_stream(ws, start, stream_id, outbox)
        finally:
            self._active -= 1
            if self._active == 0:
                self._all_done.set()
            if outbox.dropped:
                self.dropped_events += outbox.dropped
                log.warning("stream %s: client read too slowly, %d score events dropped", stream_id, outbox.dropped)

    async def _serve_stream(self, ws: ServerConnection, start: StartRequest, stream_id: str,
                            outbox: _Outbox) -> None:
        session = self.detector.open_stream(stream_id, start.sample_rate, start.channels, sinks=[outbox])
        decoder = PcmDecoder(start.format, start.channels)
        ready = self.detector.ready(stream_id)
        for sink in session.sinks:
            sink(ready)
        receiver = asyncio.create_task(self._receive(ws, session, decoder))
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait((receiver, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        code, reason = CLOSE_NORMAL, "end of stream"
        try:
            if not receiver.done():  # shutdown: what arrived so far is scored and summarised
                receiver.cancel()
                code, reason = CLOSE_GOING_AWAY, "server shutting down"
                try:
                    await receiver
                except asyncio.CancelledError:
                    pass
            else:
                receiver.result()
            try:
                await session.finish()
            except EmptyStreamError as e:
                session.error("empty_stream", str(e))
        except ProtocolError as e:
            log.warning("stream %s from %s: %s (%s)", stream_id, _peer(ws), e.code, e.message)
            session.error(e.code, e.message)
            session.abort()
            code, reason = e.close, e.code
        except ConnectionClosed:  # the client left without "end": nothing to send it
            session.abort()
            outbox.task.cancel()
            return
        await outbox.close(code, reason, self.flush_s)


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)


async def run_server(detector: LiveDetector, options: DetectorOptions | None = None, *,
                     on_ready: Callable[[DetectorServer], None] | None = None, **kwargs: Any) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see module doc). ``detector`` is started here."""
    detector.start()
    server = DetectorServer(detector, options, **kwargs)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, server.shutdown)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not POSIX
            pass
    o = server.options
    log.info("listening on ws://%s:%d%s (model %s)", o.host, server.port, STREAM_PATH, detector.model)
    if on_ready is not None:
        on_ready(server)
    await server.wait_closed()
