"""Twilio Media Streams on ``/v1/twilio`` (TwiML ``<Start><Stream>`` or ``<Connect><Stream>``).

Twilio sends JSON text messages: ``connected``; ``start`` (``streamSid``, ``callSid``,
``tracks``, ``mediaFormat`` = 8 kHz mono ``audio/x-mulaw``, ``customParameters`` from the
``<Parameter>`` elements); ``media`` (``track`` inbound/outbound, base64 ``payload`` of
mu-law, 20 ms each); ``mark``, ``dtmf``; ``stop``. Each track of the call is one detector
stream, ``<callSid>:caller`` (inbound: what the caller says) and ``<callSid>:agent``
(outbound: what the caller hears). The server sends nothing back (no audio, no events: they
go to the shared sinks); a refusal is an ``error`` event and a close code, as in protocol v1.

Authentication: Twilio cannot set headers, so the token (when the server has one) comes as
``<Parameter name="token" value="..."/>``, in ``start.customParameters.token``. With
``twilio_auth_token`` set, the handshake must also carry Twilio's ``X-Twilio-Signature``:
base64 HMAC-SHA1, keyed with the account's auth token, of the stream's URL (a WebSocket
request has no POST parameters to append).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..access import authorized
from ..endpoint import Endpoint
from ..protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_UNSUPPORTED, ProtocolError
from .calls import Call, check_call_id, close_ws, recv_json, refuse_with_event, serve_call
from .g711 import ulaw_to_s16

if TYPE_CHECKING:
    from websockets.http11 import Request

    from ..connection import Connection
    from ..server import DetectorServer

__all__ = ["PATH", "ENDPOINT", "TwilioStart", "parse_start", "parse_media", "signature"]

PATH = "/v1/twilio"
#: Twilio's track names -> ours. Twilio names them from its side, whatever the call's direction:
#: inbound is the party on the leg running the TwiML, outbound what Twilio sends to that party.
TRACKS = {"inbound": "caller", "outbound": "agent"}
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
_WHAT = "Twilio Media Streams"


@dataclass(frozen=True, slots=True)
class TwilioStart:
    call_sid: str
    stream_sid: str
    tracks: tuple[str, ...]  # Twilio's names (inbound, outbound)
    token: str | None


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_request", CLOSE_POLICY, message)


def _event(data: dict[str, Any]) -> str:
    event = data.get("event")
    if not isinstance(event, str):
        raise _bad(f"message without an \"event\" string ({str(event)[:40]!r}); {_WHAT} messages name their event")
    return event


def parse_start(data: dict[str, Any]) -> TwilioStart:
    """Validate a ``start`` message; :class:`ProtocolError` names the field and what is accepted."""
    start = data.get("start")
    if not isinstance(start, dict):
        raise _bad("start message without a \"start\" object")
    call_sid = check_call_id(start.get("callSid"), "start.callSid")
    stream_sid = start.get("streamSid", data.get("streamSid"))
    if not isinstance(stream_sid, str):
        raise _bad("start.streamSid missing; accepted: a string")
    tracks = start.get("tracks", ["inbound"])
    if (not isinstance(tracks, list) or not tracks or any(not isinstance(t, str) or t not in TRACKS for t in tracks)
            or len(set(tracks)) < len(tracks)):
        raise _bad(f"start.tracks {str(tracks)[:60]!r} not accepted; accepted: a list of inbound and/or outbound")
    fmt = start.get("mediaFormat")
    if fmt is not None and (not isinstance(fmt, dict) or any(fmt.get(k) != v for k, v in MEDIA_FORMAT.items())):
        raise ProtocolError("bad_format", CLOSE_UNSUPPORTED, f"start.mediaFormat {str(fmt)[:100]!r} not accepted; "
                            "accepted: audio/x-mulaw, 8000 Hz, 1 channel")
    params = start.get("customParameters", {})
    if not isinstance(params, dict):
        raise _bad("start.customParameters must be an object")
    token = params.get("token")
    if token is not None and not isinstance(token, str):
        raise _bad("start.customParameters.token must be a string")
    return TwilioStart(call_sid, stream_sid, tuple(tracks), token)


def parse_media(data: dict[str, Any], tracks: tuple[str, ...]) -> tuple[str, bytes]:
    """A ``media`` message -> (our track, mu-law bytes)."""
    media = data.get("media")
    if not isinstance(media, dict):
        raise _bad("media message without a \"media\" object")
    track = media.get("track", tracks[0] if len(tracks) == 1 else None)
    if track not in tracks:
        raise _bad(f"media.track {str(track)[:40]!r} not accepted; accepted: {', '.join(tracks)} (start.tracks)")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise _bad("media.payload missing; accepted: base64 of 8 kHz mu-law")
    try:
        return TRACKS[track], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_audio", CLOSE_UNSUPPORTED, "media.payload is not valid base64; accepted: base64 of "
                            "8 kHz mu-law") from None


def signature(auth_token: str, url: str) -> str:
    """Twilio's request signature of a URL without POST parameters."""
    mac = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _handshake(server: DetectorServer, request: Request) -> str | None:
    auth_token = server.options.twilio_auth_token
    if auth_token is None:
        return None
    given = request.headers.get_all("X-Twilio-Signature")
    if len(given) != 1:
        return "X-Twilio-Signature header missing or repeated (the server checks Twilio's signature)"
    # The scheme Twilio signed (wss behind a TLS proxy) is not visible here: either one matches.
    host = request.headers.get("Host", "")
    for scheme in ("wss", "ws"):
        if hmac.compare_digest(signature(auth_token, f"{scheme}://{host}{request.path}"), given[0]):
            return None
    return "X-Twilio-Signature does not match this URL and the account's auth token"


class _TwilioCall:
    def __init__(self, server: DetectorServer, ws: Connection) -> None:
        self.server = server
        self.conn = ws
        self.call: Call | None = None

    async def run(self) -> None:
        o, ws = self.server.options, self.conn
        while True:  # "connected" (optional), then "start"
            data = await recv_json(ws, o.start_timeout_s, _WHAT)
            if isinstance(data, bytes):
                raise _bad(f"binary message ({len(data)} bytes); {_WHAT} sends JSON text messages")
            event = _event(data)
            if event == "start":
                break
            if event != "connected":
                raise _bad(f"{event[:40]!r} message before start; expected connected, then start")
        start = parse_start(data)
        if not authorized(self.server.options, ws.request, start.token):
            raise ProtocolError("unauthorized", CLOSE_POLICY, "a token is required: <Parameter name=\"token\" "
                                "value=\"...\"/> in the <Stream> (start.customParameters.token)")
        self.call = Call(self.server, start.call_sid, ws.number)
        ws.stream_id = start.call_sid
        for t in start.tracks:
            self.call.open(TRACKS[t])
        while True:
            data = await recv_json(ws, o.idle_timeout_s, _WHAT)
            if isinstance(data, bytes):
                raise _bad(f"binary message ({len(data)} bytes); {_WHAT} sends JSON text messages")
            event = _event(data)
            if event == "media":
                track, payload = parse_media(data, start.tracks)
                await self.call.audio(track, ulaw_to_s16(payload))
            elif event == "stop":
                return
            elif event not in ("mark", "dtmf"):
                raise _bad(f"{event[:40]!r} message not understood; accepted after start: media, mark, dtmf, stop")

    async def refuse(self, e: ProtocolError) -> None:
        await refuse_with_event(self.conn, e)

    async def done(self) -> None:
        await close_ws(self.conn, CLOSE_NORMAL, "end of call")  # Twilio expects no reply to "stop"

    async def going_away(self) -> None:
        await close_ws(self.conn, CLOSE_GOING_AWAY, "server shutting down")


async def _serve(server: DetectorServer, ws: Connection) -> None:
    await serve_call(server, _TwilioCall(server, ws))


ENDPOINT = Endpoint(_serve, _handshake)
