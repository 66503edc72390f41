"""Asterisk AudioSocket listener (``realtime-detect --input audiosocket --port 9092``).

Asterisk's ``AudioSocket(uuid,host:port)`` application (or the ``AudioSocket/host:port/uuid``
channel) opens a TCP connection and sends frames of a 1-byte kind, a 2-byte big-endian
payload length and the payload:

* ``0x01`` the call's UUID (16 bytes), first;
* ``0x10`` audio, signed 16-bit little-endian mono at 8 kHz (``0x11``..``0x18``: 12, 16, 24,
  32, 44.1, 48, 96, 192 kHz, in newer Asterisk versions);
* ``0x03`` a DTMF digit (ignored); ``0x00`` hangup; ``0xff`` an error (its code is logged).

One detector stream per call: ``<uuid>:<track>``, the track ``audiosocket_track`` (default
``caller``: the audio Asterisk reads from the channel; ``mixed`` for a spy leg that hears both).
The server sends nothing back: the channel hears silence. A mistake closes the connection
with one ``refused ...`` log line (the protocol has no way to say why); the call's events
(error, then summary) go to the shared sinks.

The protocol carries no credentials: a listener beyond loopback needs ``insecure`` (keep it on
a private network). The server's other limits hold: ``max_connections`` calls, the UUID
within ``start_timeout_s``, a frame at least every ``idle_timeout_s``, at most
``max_messages_per_s`` frames per second, audio throttled to ``max_realtime_factor``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from typing import Any

from ..access import InsecureBindError, is_loopback
from ..connection import connection_numbers
from ..pacing import TokenBucket
from ..protocol import CLOSE_POLICY, CLOSE_UNSUPPORTED, ProtocolError
from ..server import DetectorServer
from .calls import Call, Gone, serve_call

__all__ = ["AudioSocketServer", "KIND_UUID", "KIND_AUDIO", "KIND_HANGUP", "KIND_DTMF", "KIND_ERROR", "AUDIO_RATES"]

log = logging.getLogger(__name__)

KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000,
               0x17: 96000, 0x18: 192000}
_ACCEPTED = "0x01 uuid, 0x10-0x18 audio, 0x03 dtmf, 0x00 hangup, 0xff error"


class _Peer:
    """What the refusal log line names, like a WebSocket connection's ``remote_address``."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.remote_address = writer.get_extra_info("peername")
        self.number = next(connection_numbers)


class _AudioSocketCall:
    def __init__(self, server: AudioSocketServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.conn = _Peer(writer)
        self.call: Call | None = None
        rate = server.options.max_messages_per_s
        self._frames = TokenBucket(rate, 2 * rate) if rate > 0 else None

    async def _frame(self, timeout: float) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(timeout):
                kind, n = struct.unpack(">BH", await self.reader.readexactly(3))
                payload = await self.reader.readexactly(n)
        except TimeoutError:
            raise ProtocolError("timeout", CLOSE_POLICY, f"no frame for {timeout:g} s; idle connections are closed") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Gone() from None
        if self._frames is not None and self._frames.take(1.0, time.monotonic()) > 0:
            rate = self.server.options.max_messages_per_s
            raise ProtocolError("rate_limited", CLOSE_POLICY, f"more than {rate:g} frames per second; "
                                "Asterisk sends 50 (20 ms each)")
        return kind, payload

    async def run(self) -> None:
        o = self.server.options
        kind, payload = await self._frame(o.start_timeout_s)
        if kind != KIND_UUID or len(payload) != 16:
            raise ProtocolError("bad_request", CLOSE_POLICY, f"first frame of kind 0x{kind:02x} and {len(payload)} "
                                "bytes; expected the call's UUID: kind 0x01, 16 bytes")
        call_id = str(uuid.UUID(bytes=payload))
        self.call = Call(self.server, call_id, self.conn.number)
        rate: int | None = None  # of the first audio frame: a call keeps one
        while True:
            kind, payload = await self._frame(o.idle_timeout_s)
            if kind in AUDIO_RATES:
                if rate is None:
                    rate = AUDIO_RATES[kind]
                    self.call.open(o.audiosocket_track, rate)
                elif AUDIO_RATES[kind] != rate:
                    raise ProtocolError("bad_format", CLOSE_UNSUPPORTED, f"audio kind 0x{kind:02x} "
                                        f"({AUDIO_RATES[kind]} Hz) after {rate} Hz audio; accepted: one rate per call")
                if len(payload) % 2:
                    raise ProtocolError("bad_audio", CLOSE_UNSUPPORTED, f"audio frame of {len(payload)} bytes; "
                                        "accepted: whole 16-bit samples (an even length)")
                await self.call.audio(o.audiosocket_track, payload)
            elif kind == KIND_HANGUP:
                return
            elif kind == KIND_ERROR:  # Asterisk's side failed (its code: 1 hangup, 2 forwarding, 4 memory)
                log.info("audiosocket call %s: Asterisk reported error %s; call ended", call_id, payload.hex() or "-")
                return
            elif kind != KIND_DTMF:
                raise ProtocolError("bad_request", CLOSE_POLICY, f"frame kind 0x{kind:02x} not understood; "
                                    f"accepted: {_ACCEPTED}")

    async def _close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass

    async def refuse(self, e: ProtocolError) -> None:
        await self._close()  # the protocol has no way to say why: the log line does

    async def done(self) -> None:
        await self._close()

    async def going_away(self) -> None:
        await self._close()


class AudioSocketServer(DetectorServer):
    """The detector server's streams, limits, shutdown and refusal log, on an AudioSocket listener."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        o = self.options
        if not o.insecure and not is_loopback(o.host):
            raise InsecureBindError(f"host {o.host!r} is reachable beyond this machine and AudioSocket carries no "
                                    "credentials; keep it on loopback or a private network and pass --insecure")
        self._server = await asyncio.start_server(self._serve, o.host, o.port)  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"tcp://{self.options.host}:{self.port} (AudioSocket)"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping.is_set() or len(self._writers) >= self.options.max_connections:
            self.log_refusal(_Peer(writer), ProtocolError("busy", CLOSE_POLICY, "server full or shutting down"))
            writer.close()
            return
        self._writers.add(writer)
        try:
            await serve_call(self, _AudioSocketCall(self, reader, writer))
        finally:
            self._writers.discard(writer)
            writer.close()

    def _stop_listening(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _close_connections(self) -> None:
        for w in list(self._writers):
            w.close()
        assert self._server is not None
        await self._server.wait_closed()
