"""The WebSocket server: protocol v1 on ``/v1/stream``, Twilio Media Streams and Genesys AudioHook
(:mod:`realtime.telephony`), ``GET /healthz`` and the browser page, on the websockets asyncio API.

    realtime-detect --input ws --port 8765 [--token T] [--allow-origin https://app.example]

The protocol, its events and every refusal: docs/protocol.md; access, limits and memory:
docs/server.md. This module wires the parts: who may connect (:mod:`.access`), the page
(:mod:`.webpage`), what each path speaks (:mod:`.stream_endpoint`, :mod:`.telephony`), the
per-connection limits (:mod:`.connection`, :mod:`.outbox`, :mod:`.pacing`) and the process's
(:mod:`.process_limits`).

SIGTERM/SIGINT: stop accepting (new handshakes get 503), finish every stream (its last
windows are scored and its summary sent), close them with 1001, then stop the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from . import stream_endpoint
from .access import Denied, check_bind, check_handshake, check_headers
from .connection import Connection
from .endpoint import Endpoint
from .errors import RealtimeError
from .eventlog import EventLog
from .options import ServerOptions
from .process_limits import AcceptErrors, pin_mmap_threshold
from .protocol import CLOSE_BUSY, CLOSE_GOING_AWAY, STREAM_PATH, ProtocolError
from .session import LiveDetector
from .sizing import describe_engine
from .telephony import audiohook, twilio
from .webhook import WebhookSink
from .webpage import WEB_DIR, file_response, http_response, load_web_files

__all__ = ["RECV_QUEUE", "DetectorServer", "ListenError", "run_server"]

log = logging.getLogger(__name__)

RECV_QUEUE = 4  # messages the library buffers per connection before TCP pushes back


class ListenError(RealtimeError):
    """The server cannot listen where asked (port in use, address not on this machine)."""


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)


class DetectorServer:
    """Serves protocol v1 for a :class:`~realtime.session.LiveDetector`.

    ``await start()``, then ``shutdown()`` (what SIGTERM does) and ``await wait_closed()``.
    """

    def __init__(self, detector: LiveDetector, options: ServerOptions | None = None, *,
                 web_root: Path = WEB_DIR, flush_s: float = 5.0, drain_s: float = 15.0) -> None:
        self.detector = detector
        self.options = options if options is not None else detector.options.server  # validated there
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
        self.endpoints: dict[str, Endpoint] = {STREAM_PATH: stream_endpoint.ENDPOINT, twilio.PATH: twilio.ENDPOINT,
                                               audiohook.PATH: audiohook.ENDPOINT}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        check_bind(o)
        self._server = await serve(
            self._dispatch, o.host, o.port,
            process_request=self._process_request,
            create_connection=partial(Connection, frame_rate=o.max_messages_per_s),  # type: ignore[arg-type]
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

    def _refuse_http(self, connection: ServerConnection, denied: Denied) -> Response:
        self.refused += 1
        log.warning("refused %s: HTTP %d %s", _peer(connection), denied.status.value, denied.why)
        return connection.respond(denied.status, denied.why + "\n")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        endpoint = self.endpoints.get(path)
        denied = check_headers(self.options, request.headers)
        if denied is None and endpoint is not None:
            denied = self._handshake_denied(endpoint, request)
        if denied is not None:
            return self._refuse_http(connection, denied)
        if endpoint is not None:
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return http_response(http.HTTPStatus.OK, json.dumps(self.health()).encode(), "application/json")
        return file_response(self.web_files, path)

    def _handshake_denied(self, endpoint: Endpoint, request: Request) -> Denied | None:
        """Why a WebSocket request is refused, or None: shutting down, full, access, the endpoint's check."""
        if self._stopping.is_set():
            return Denied(http.HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down")
        assert self._server is not None
        if len(self._server.connections) >= self.options.max_connections:
            return Denied(http.HTTPStatus.SERVICE_UNAVAILABLE, f"busy: {self.options.max_connections} connections open")
        denied = check_handshake(self.options, request)
        if denied is not None or endpoint.handshake is None:
            return denied
        why = endpoint.handshake(self, request)
        return None if why is None else Denied(http.HTTPStatus.FORBIDDEN, why)

    # -- WebSocket side --------------------------------------------------------------------

    def log_refusal(self, ws: ServerConnection, e: ProtocolError, stream: str | None = None) -> None:
        self.refused += 1
        where = f" stream {stream}" if stream else ""
        log.warning("refused %s%s: %s (%s), close %d", _peer(ws), where, e.code, e.message, e.close)

    def admit(self) -> None:
        """Raise ``busy`` when a new stream (or call) cannot start: shutting down, or full."""
        if self._stopping.is_set():
            raise ProtocolError("busy", CLOSE_BUSY, "server shutting down; retry later")
        if self._active >= self.options.max_connections:
            raise ProtocolError("busy", CLOSE_BUSY, f"{self.options.max_connections} streams open; retry later")

    async def _dispatch(self, ws: ServerConnection) -> None:
        assert isinstance(ws, Connection) and ws.request is not None
        await self.endpoints[ws.request.path.partition("?")[0]].serve(self, ws)


async def run_server(detector: LiveDetector, options: ServerOptions | None = None, *,
                     on_ready: Callable[[DetectorServer], None] | None = None,
                     server_class: type[DetectorServer] = DetectorServer, **kwargs: Any) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see :meth:`DetectorServer.wait_closed`).
    ``detector`` is started here. ``server_class``: :class:`DetectorServer`, or the AudioSocket
    listener built on it."""
    pin_mmap_threshold()  # a server runs for days: memory must go back when streams end
    asyncio.get_running_loop().set_exception_handler(AcceptErrors())
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
    # What the run chose (engine, workers, front end) and why, then where it listens: the start lines.
    log.info("%s, %s; %s", describe_engine(detector.engine), detector.batcher.workers, detector.scoring)
    log.info("listening on %s (model %s, threshold %.2f: each model has its own)", server.url,
             detector.model, detector.threshold)
    if on_ready is not None:
        on_ready(server)
    await server.wait_closed()
