"""One call's detector streams (one per track), and the connection loop every telephony
protocol shares (:func:`serve_call`), with the WebSocket helpers of Twilio and AudioHook.

A track is fed exactly like a protocol-v1 stream (:class:`realtime.pacing.AudioFeed`): its
decoded audio goes into a bounded :class:`~realtime.pacing.Backlog` (past the bound the reader
waits and TCP pushes back), and from there to its session at most ``max_realtime_factor``
times real time, one hop at a time, when the stream has room in the batcher. Its events go to
the detector's shared sinks (``--json``, ``--events``, webhooks, the dashboard): the
platforms forking call audio do not read them.

However a call ends (the platform's end message, a refusal, the connection lost, shutdown),
what arrived is scored and each track's summary recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Protocol

from websockets.exceptions import ConnectionClosed

from ..errors import EmptyStreamError
from ..events import ErrorEvent
from ..pacing import AudioFeed, Backlog, TokenBucket
from ..pcm import PcmDecoder
from ..protocol import CLOSE_POLICY, CLOSE_TOO_BIG, ProtocolError, show_value

if TYPE_CHECKING:
    from ..connection import Connection
    from ..server import DetectorServer
    from ..session import StreamSession

__all__ = ["Call", "CallProtocol", "Gone", "serve_call", "recv_json", "send_or_gone", "close_ws", "refuse_with_event",
           "check_call_id", "TEXT_LIMIT"]

log = logging.getLogger(__name__)

#: Control messages of the platforms (Twilio's start with its parameters, AudioHook's open)
#: stay far below this; a bigger text message is refused before it is parsed.
TEXT_LIMIT = 64 * 1024
CLOSE_INTERNAL = 1011
_CALL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,50}")  # a stream id is the call id, ":" and the track


def check_call_id(value: object, what: str) -> str:
    """A platform's call identifier, usable in stream ids (``<call>:<track>``)."""
    if not isinstance(value, str) or not _CALL_ID.fullmatch(value):
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"{what} {show_value(value)} not accepted; accepted: 1..50 characters of A-Z a-z 0-9 _ . : -")
    return value


class _Track:
    __slots__ = ("session", "backlog", "feed", "task")

    def __init__(self, session: StreamSession, backlog: Backlog, feed: AudioFeed, task: asyncio.Task[None]) -> None:
        self.session, self.backlog, self.feed, self.task = session, backlog, feed, task


class Call:
    """The streams of one call, ``<call id>:<track>`` each, counted as one open stream of the
    server (capacity, drain at shutdown) from creation to :meth:`finish`."""

    def __init__(self, server: DetectorServer, call_id: str, connection: int | None) -> None:
        server.admit()  # busy: full or shutting down
        self.server = server
        self.call_id = call_id
        self.connection = connection
        self.tracks: dict[str, _Track] = {}
        self._counted = contextlib.ExitStack()
        self._counted.enter_context(server.active_stream())

    def open(self, track: str, rate: int = 8000) -> None:
        """Start the stream of ``track`` (s16le mono at ``rate``): its ready event, its feed."""
        detector, o = self.server.detector, self.server.options
        stream = f"{self.call_id}:{track}"
        session = detector.open_stream(stream, rate, 1, connection=self.connection, track=track)
        ready = detector.ready(stream, self.connection, track)
        for sink in session.sinks:
            sink(ready)
        backlog = Backlog(o.max_backlog_bytes)
        feed = AudioFeed(session, PcmDecoder("s16le", 1), backlog, rate, detector.window.hop_s)
        pace = TokenBucket(o.max_realtime_factor, o.realtime_burst_s) if o.max_realtime_factor > 0 else None
        self.tracks[track] = _Track(session, backlog, feed, asyncio.create_task(feed.run(pace)))

    async def audio(self, track: str, pcm: bytes) -> None:
        """Queue s16le samples of ``track``; waits while its backlog is full (TCP pushes back)."""
        await self.tracks[track].backlog.put(pcm)

    def error(self, e: ProtocolError) -> None:
        """Record a refusal in every track's events (the shared sinks)."""
        for t in self.tracks.values():
            t.session.error(e.code, e.message)

    async def finish(self, paced: bool) -> None:
        """Score what arrived and emit each track's summary. ``paced``: the normal end, the rest
        of the backlog is fed at the realtime factor; else (refusal, loss, shutdown) at once."""
        try:
            for t in self.tracks.values():
                t.backlog.close()
                if not paced:
                    t.task.cancel()
                await asyncio.wait((t.task,))
                if t.task.cancelled():
                    await t.feed.run(None)  # nothing taken is lost: it goes on from there
                else:
                    t.task.result()
                try:
                    await t.session.finish()
                except EmptyStreamError as e:
                    t.session.error("empty_stream", str(e))
        finally:
            self._counted.close()


class Gone(Exception):
    """The connection was lost (or the library refused a frame: ``refusal``, the client told)."""

    def __init__(self, refusal: ProtocolError | None = None) -> None:
        super().__init__("connection lost")
        self.refusal = refusal


class CallProtocol(Protocol):
    """One connection of a telephony protocol."""

    call: Call | None
    conn: Any  # what the refusal log names (its remote_address)

    async def run(self) -> None:
        """Read until the call ends normally; raise :class:`ProtocolError` for a client's
        mistake, :class:`Gone` when the connection is lost."""

    async def refuse(self, e: ProtocolError) -> None:
        """Tell the client why, in its protocol's words, and close."""

    async def done(self) -> None:
        """The call ended normally (everything scored): the protocol's last words; close."""

    async def going_away(self) -> None:
        """The server shuts down (what arrived is scored): close."""


async def recv_json(ws: Connection, timeout: float, what: str) -> dict[str, Any] | bytes:
    """The next message: a JSON object, or bytes. Text that is not a JSON object is refused."""
    try:
        async with asyncio.timeout(timeout):
            msg = await ws.recv()  # cancelling recv() loses no data
    except TimeoutError:
        raise ProtocolError("timeout", CLOSE_POLICY,
                            f"no message for {timeout:g} s; idle connections are closed") from None
    except ConnectionClosed:
        raise Gone(ws.refusal) from None
    if isinstance(msg, bytes):
        return msg
    if len(msg) > TEXT_LIMIT:
        raise ProtocolError("too_big", CLOSE_TOO_BIG, f"text message of {len(msg)} characters; "
                            f"{what} messages are at most {TEXT_LIMIT} bytes")
    try:
        data = json.loads(msg)
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_request", CLOSE_POLICY, f"text message is not valid JSON ({e.msg} at character "
                            f"{e.pos}); {what} messages are JSON objects") from None
    except RecursionError:
        raise ProtocolError("bad_request", CLOSE_POLICY, f"text message nested too deeply; {what} messages are "
                            "flat JSON objects") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_request", CLOSE_POLICY,
                            f"text message is a JSON {type(data).__name__}; {what} messages are JSON objects")
    return data


async def send_or_gone(ws: Connection, message: str) -> None:
    try:
        await ws.send(message)
    except ConnectionClosed:
        raise Gone(ws.refusal) from None


async def close_ws(ws: Connection, code: int, reason: str, message: str | None = None) -> None:
    """Send ``message`` (if any) and close; a client already gone is no error."""
    with contextlib.suppress(ConnectionClosed):
        if message is not None:
            await ws.send(message)
        await ws.close(code, reason)


async def refuse_with_event(ws: Connection, e: ProtocolError) -> None:
    """The v1 way: an ``error`` event, then the close code."""
    await close_ws(ws, e.close, e.code, ErrorEvent(code=e.code, message=e.message).to_json())


async def serve_call(server: DetectorServer, proto: CallProtocol) -> None:
    """Run ``proto`` until the call ends, is refused, is lost, or the server shuts down; then
    score what arrived, and close (a refusal told in the protocol's words and logged once)."""
    reader = asyncio.create_task(proto.run())
    stopping = asyncio.create_task(server.stopping.wait())
    try:
        await asyncio.wait((reader, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not reader.done():  # shutdown (or this handler cancelled): what arrived is still scored
            reader.cancel()
            await asyncio.wait((reader,))
    refusal: ProtocolError | None = None
    gone = False
    shutdown = reader.cancelled()
    if not shutdown:
        exc = reader.exception()
        if isinstance(exc, ProtocolError):
            refusal = exc
        elif isinstance(exc, Gone):
            gone, refusal = True, exc.refusal
        elif exc is not None:  # a bug of ours: its traceback, and the call still ends cleanly
            log.error("call on %s failed", getattr(proto.conn, "remote_address", "?"), exc_info=exc)
            refusal = ProtocolError("internal", CLOSE_INTERNAL, "internal server error; see the server log")
    reader = None  # type: ignore[assignment]  # its traceback holds this frame: no cycle
    call = proto.call
    if refusal is not None:
        server.log_refusal(proto.conn, refusal, call.call_id if call else None)
    if call is not None:
        if refusal is not None:
            call.error(refusal)
        await call.finish(paced=refusal is None and not shutdown and not gone)
    try:
        if gone:
            return
        if refusal is not None:
            await proto.refuse(refusal)
        elif shutdown:
            await proto.going_away()
        else:
            await proto.done()
    except Gone:
        pass
