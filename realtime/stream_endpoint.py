"""Protocol v1 on ``/v1/stream`` (docs/protocol.md): one connection, from its ``start`` message
(checked by :mod:`realtime.protocol`) through its PCM (paced by :mod:`realtime.pacing`) to its
summary and close code.

Whatever way a stream ends (``end``, a refusal, the client vanishing, shutdown), the windows it
delivered are scored and its summary (or ``empty_stream`` error) goes to the shared sinks
(``--json``, ``--events``); the client gets them when it is still there and ended with ``end``
or was ended by the shutdown. All per-connection state lives in these functions' locals and the
connection object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .access import authorized
from .connection import Connection
from .endpoint import Endpoint
from .errors import EmptyStreamError
from .events import ErrorEvent
from .outbox import Outbox
from .pacing import AudioFeed, Backlog, TokenBucket
from .pcm import PcmDecoder
from .protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    ProtocolError,
    StartRequest,
    after_end_refusal,
    expect_end,
    parse_start,
)

if TYPE_CHECKING:
    from .server import DetectorServer

__all__ = ["ENDPOINT"]

log = logging.getLogger(__name__)


async def _recv(ws: ServerConnection, timeout: float) -> str | bytes:
    try:
        async with asyncio.timeout(timeout):
            return await ws.recv()  # cancelling recv() loses no data
    except TimeoutError:
        raise ProtocolError("timeout", CLOSE_POLICY,
                            f"no message for {timeout:g} s; idle connections are closed") from None


async def _refuse(server: DetectorServer, ws: ServerConnection, e: ProtocolError) -> None:
    server.log_refusal(ws, e)
    try:
        await ws.send(ErrorEvent(code=e.code, message=e.message).to_json())
        await ws.close(e.close, e.code)
    except ConnectionClosed:
        pass


async def _open(server: DetectorServer, ws: Connection) -> tuple[StartRequest, str]:
    start = parse_start(await _recv(ws, server.options.start_timeout_s))
    if not authorized(server.options, ws.request, start.token):
        raise ProtocolError("unauthorized", CLOSE_POLICY,
                            "a token is required: 'Authorization: Bearer ...' header or \"token\" in the start message")
    server.admit()
    return start, start.stream or f"ws-{ws.number}"


async def _next_message(ws: ServerConnection, backlog: Backlog, limit: float) -> str | bytes:
    """The next message. The idle timeout (``limit``) counts from when the stream's audio has
    all been fed: a client that sent minutes at once and waits for its scores is not idle, we are."""
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


async def _read(ws: ServerConnection, backlog: Backlog, idle_timeout_s: float) -> str | bytes | None:
    """Binary messages into ``backlog`` until ``end``, as fast as they come: reading on while
    the stream is throttled keeps the client's pings answered. Then waits for a message after
    ``end`` (returned: a protocol error). A fault ends the backlog with it, returns None."""
    try:
        while True:
            msg = await _next_message(ws, backlog, idle_timeout_s)
            if isinstance(msg, bytes):
                await backlog.put(msg)  # waits at the backlog's limit: TCP pushes back
                continue
            expect_end(msg)
            break
    except (ProtocolError, ConnectionClosed) as e:
        backlog.fail(e)
        return None
    backlog.close()
    try:
        return await ws.recv()  # nothing may follow "end"
    except ConnectionClosed:
        return None


def _message_after_end(task: asyncio.Task[str | bytes | None]) -> ProtocolError | None:
    """Cancel the read after ``end``; a message it got is an error (a closed connection is not)."""
    if not task.done():
        task.cancel()
        return None
    if task.cancelled() or task.exception() is not None:
        return None
    msg = task.result()
    return None if msg is None else after_end_refusal(msg)


async def _serve(server: DetectorServer, ws: Connection) -> None:
    try:
        start, stream_id = await _open(server, ws)
    except ProtocolError as e:
        await _refuse(server, ws, e)
        return
    except ConnectionClosed:
        if ws.refusal is not None:  # the library refused a message (the client was told)
            server.log_refusal(ws, ws.refusal)
        return
    outbox = Outbox(ws, server.options.send_queue)
    try:
        with server.active_stream():
            await _serve_stream(server, ws, start, stream_id, outbox)
    finally:
        if outbox.dropped:
            server.dropped_events += outbox.dropped
            log.warning("stream %s: client read too slowly, %d score events dropped", stream_id, outbox.dropped)


async def _serve_stream(server: DetectorServer, ws: Connection, start: StartRequest, stream_id: str,
                        outbox: Outbox) -> None:
    o, detector = server.options, server.detector
    session = detector.open_stream(stream_id, start.sample_rate, start.channels, sinks=[outbox],
                                   connection=ws.number)
    decoder = PcmDecoder(start.format, start.channels)
    ws.stream_id = stream_id
    ready = detector.ready(stream_id, ws.number)
    for sink in session.sinks:
        sink(ready)
    backlog = Backlog(o.max_backlog_bytes)
    feed = AudioFeed(session, decoder, backlog, start.sample_rate, detector.window.hop_s)
    reader = asyncio.create_task(_read(ws, backlog, o.idle_timeout_s))
    pace = TokenBucket(o.max_realtime_factor, o.realtime_burst_s) if o.max_realtime_factor > 0 else None
    feeder = asyncio.create_task(feed.run(pace))
    stopping = asyncio.create_task(server.stopping.wait())
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
        server.log_refusal(ws, e, stream_id)
        session.error(e.code, e.message)  # to the client and to the shared sinks
        outbox.stop()  # what follows (the summary) is only for the shared sinks
        code, reason = e.close, e.code
    except ConnectionClosed:  # the client left, or the library refused a message
        gone = True
        outbox.stop()
        if ws.refusal is not None:
            server.log_refusal(ws, ws.refusal, stream_id)
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
    reader = feeder = feed = backlog = None  # type: ignore[assignment]
    if gone:
        outbox.task.cancel()
        return
    if late is not None:
        server.log_refusal(ws, late, stream_id)
        session.error(late.code, late.message)
        code, reason = late.close, late.code
    await outbox.close(code, reason, server.flush_s)


ENDPOINT = Endpoint(_serve)
