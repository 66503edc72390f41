"""The server's WebSocket connection: limits enforced inside the websockets parser, and refusals
the library makes told to the client with an ``error`` event, like every other refusal.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidState
from websockets.exceptions import ProtocolError as WebSocketProtocolError
from websockets.protocol import Protocol, State

from .events import ErrorEvent
from .pacing import TokenBucket
from .protocol import CLOSE_POLICY, CLOSE_TOO_BIG, LIBRARY_REFUSALS, ProtocolError

__all__ = ["LINGER_S", "MAX_UNREAD_BYTES", "Connection", "connection_numbers"]

#: Replies (pongs, events) queued for a client that does not read them; past this it is closed.
#: Events wait for the socket (write_limit, 32 KiB), so only pongs to a ping flood get here.
MAX_UNREAD_BYTES = 256 * 1024
# How long a refused connection's socket stays open, half-closed, for its error to be read.
LINGER_S = 2.0

connection_numbers = itertools.count(1)  # process-wide: two servers in one process never share one


class Connection(ServerConnection):
    """A connection that tells the client *why* when the library fails it, and bounds what a
    client may make the server do without reading or sending audio.

    websockets refuses an oversized frame from its header (1009), invalid UTF-8 (1007) and
    broken framing (1002) inside its parser, with only a close reason. Wrapping the
    protocol's ``fail`` lets us send the ``error`` event first, like every other refusal;
    the handler then finds :attr:`refusal` set and logs it.

    Every frame counts against ``frame_rate`` (a message, each of its fragments, a ping), in
    the parser, before any work is done for it: a flood of empty fragments or pings is refused
    within its burst (many tiny frames cost the same fixed overhead each, whatever their size).
    A client whose unread replies pass :data:`MAX_UNREAD_BYTES` (it sends pings and never reads
    the pongs) is dropped.
    """

    def __init__(self, protocol: Protocol, *args: Any, frame_rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)  # type: ignore[arg-type]
        self.stream_id: str | None = None
        self.number = next(connection_numbers)  # in every event of its stream, and in clip names
        self.refusal: ProtocolError | None = None
        self.lingering = False  # refused and half-closed: input is discarded until the socket closes
        library_fail = protocol.fail
        library_recv_frame = protocol.recv_frame
        frames = TokenBucket(frame_rate, 2 * frame_rate) if frame_rate > 0 else None

        def fail(code: int, reason: str = "") -> None:
            if protocol.state is State.OPEN and code in LIBRARY_REFUSALS and self.refusal is None:
                message = reason or "invalid WebSocket frame"
                if code == CLOSE_TOO_BIG:
                    message += f"; at most {protocol.max_message_size} bytes per message: send smaller frames"
                self._tell(ProtocolError(LIBRARY_REFUSALS[code], code, message))
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
