"""Genesys Cloud AudioHook (protocol version 2) on ``/v1/audiohook``.

Genesys Cloud (the client) opens the WebSocket with ``Audiohook-Session-Id`` and ``X-API-KEY``
headers, then sends JSON text messages ``{"version":"2","type":...,"seq":N,"serverseq":M,
"id":<session>,"position":"PT1.5S","parameters":{...}}``; ours carry ``clientseq`` instead.
Each side numbers its messages from 1; ``serverseq``/``clientseq`` acknowledge the other's.

* ``open`` (offered ``media``: ``PCMU`` at 8000 Hz, ``channels`` external and/or internal)
  -> ``opened`` with the chosen media (the first offered one we can decode). A
  ``conversationId`` of all zeros is a connection probe: answered, no streams.
* binary frames: the chosen channels' mu-law samples interleaved (external first).
  ``external`` is the customer (track ``caller``), ``internal`` the agent (``agent``):
  one detector stream each, ``<conversationId>:caller`` / ``:agent``.
* ``ping`` -> ``pong``; ``update`` -> ``updated``; ``paused``, ``resumed``, ``discarded``,
  ``dtmf``, ``error`` are noted (a gap in the audio shifts no window: windows follow audio).
* ``close`` -> every stream's last windows are scored, then ``closed``.

A mistake is answered with ``disconnect`` (``reason`` ``error``, or ``unauthorized`` for a
missing or wrong key; ``info`` names what is accepted), then the close code of protocol v1.
The key is the server's token, in ``X-API-KEY`` (or ``Authorization: Bearer``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..access import authorized
from ..endpoint import Endpoint
from ..protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_UNSUPPORTED, ProtocolError
from .calls import Call, check_call_id, close_ws, recv_json, send_or_gone, serve_call
from .g711 import ULAW_TO_LINEAR

if TYPE_CHECKING:
    from ..connection import Connection
    from ..server import DetectorServer

__all__ = ["PATH", "ENDPOINT", "CHANNELS", "choose_media", "check_message"]

log = logging.getLogger(__name__)

PATH = "/v1/audiohook"
CHANNELS = {"external": "caller", "internal": "agent"}
NULL_UUID = "00000000-0000-0000-0000-000000000000"
_WHAT = "AudioHook"
_DURATION = re.compile(r"PT(\d+(\.\d+)?)S")
_NOTED = ("paused", "resumed", "discarded", "dtmf", "error")


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_request", CLOSE_POLICY, message)


def _seq(data: dict[str, Any], key: str) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(f"{key} {str(v)[:30]!r} not accepted; accepted: an integer >= 0")
    return v


def check_message(data: dict[str, Any], session_id: str, clientseq: int, serverseq: int) -> str:
    """Validate the envelope of a client message; returns its type."""
    if data.get("version") != "2":
        raise _bad(f"version {str(data.get('version'))[:20]!r} not accepted; accepted: \"2\"")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise _bad("message without a \"type\" string")
    if data.get("id") != session_id:
        raise _bad(f"id {str(data.get('id'))[:40]!r} is not this session's ({session_id})")
    if _seq(data, "seq") != clientseq + 1:
        raise _bad(f"seq {data['seq']} out of order; expected {clientseq + 1}")
    if _seq(data, "serverseq") > serverseq:
        raise _bad(f"serverseq {data['serverseq']} acknowledges more than the {serverseq} message(s) sent")
    position = data.get("position")
    if not isinstance(position, str) or not _DURATION.fullmatch(position):
        raise _bad(f"position {str(position)[:30]!r} not accepted; accepted: an ISO 8601 duration such as \"PT1.5S\"")
    if not isinstance(data.get("parameters"), dict):
        raise _bad(f"{kind[:20]} message without a \"parameters\" object")
    return kind


def choose_media(offered: object) -> dict[str, Any]:
    """The first offered media we decode: PCMU at 8000 Hz, channels external and/or internal."""
    if isinstance(offered, list):
        for m in offered:
            if (isinstance(m, dict) and m.get("type") == "audio" and m.get("format") == "PCMU"
                    and m.get("rate") == 8000 and isinstance(m.get("channels"), list) and m["channels"]
                    and all(isinstance(c, str) and c in CHANNELS for c in m["channels"])
                    and len(set(m["channels"])) == len(m["channels"])):
                return {"type": "audio", "format": "PCMU", "channels": list(m["channels"]), "rate": 8000}
    raise ProtocolError("bad_format", CLOSE_UNSUPPORTED, f"no offered media accepted ({str(offered)[:120]}); accepted: "
                        "type audio, format PCMU, rate 8000, channels external and/or internal")


def _header(ws: Connection, name: str) -> str | None:
    """A header given once (a repeated one counts as absent: two answers to one question)."""
    values = ws.request.headers.get_all(name) if ws.request is not None else []
    return values[0] if len(values) == 1 else None


class _AudioHookSession:
    def __init__(self, server: DetectorServer, ws: Connection) -> None:
        self.server = server
        self.conn = ws
        self.call: Call | None = None
        header = _header(ws, "Audiohook-Session-Id")
        self.id = header if header is not None and len(header) <= 64 else None
        self.clientseq = 0  # the client's last message
        self.seq = 0  # ours

    def _message(self, kind: str, parameters: dict[str, Any]) -> str:
        self.seq += 1
        return json.dumps({"version": "2", "type": kind, "seq": self.seq, "clientseq": self.clientseq,
                           "id": self.id or NULL_UUID, "parameters": parameters}, separators=(",", ":"))

    async def _send(self, kind: str, parameters: dict[str, Any]) -> None:
        await send_or_gone(self.conn, self._message(kind, parameters))

    async def _next(self, timeout: float) -> tuple[str, dict[str, Any]] | bytes:
        data = await recv_json(self.conn, timeout, _WHAT)
        if isinstance(data, bytes):
            return data
        if self.id is None:  # no header: the first message names the session
            self.id = data.get("id") if isinstance(data.get("id"), str) and len(data["id"]) <= 64 else ""
        kind = check_message(data, self.id, self.clientseq, self.seq)
        self.clientseq = data["seq"]
        return kind, data["parameters"]

    async def run(self) -> None:
        o, ws = self.server.options, self.conn
        msg = await self._next(o.start_timeout_s)
        if isinstance(msg, bytes):
            raise _bad(f"binary frame ({len(msg)} bytes) before open; audio comes after \"opened\"")
        kind, params = msg
        if kind != "open":
            raise _bad(f"first message of type {kind[:20]!r}; expected open")
        if not authorized(self.server.options, ws.request, _header(ws, "X-API-KEY")):
            raise ProtocolError("unauthorized", CLOSE_POLICY, "an API key is required: X-API-KEY header (the "
                                "server's token), or 'Authorization: Bearer ...'")
        media = choose_media(params.get("media"))
        conversation = check_call_id(params.get("conversationId"), "parameters.conversationId")
        channels = [CHANNELS[c] for c in media["channels"]]
        if conversation != NULL_UUID:  # all zeros: Genesys probing the connection, no call
            self.call = Call(self.server, conversation, ws.number)
            ws.stream_id = conversation
            for track in channels:
                self.call.open(track)
        await self._send("opened", {"startPaused": False, "media": [media]})
        width = len(channels)
        while True:
            msg = await self._next(o.idle_timeout_s)
            if isinstance(msg, bytes):
                if len(msg) % width:
                    raise ProtocolError("bad_audio", CLOSE_UNSUPPORTED, f"binary frame of {len(msg)} bytes is not "
                                        f"whole samples of {width} interleaved PCMU channel(s)")
                if self.call is not None:
                    pcm = ULAW_TO_LINEAR.take(np.frombuffer(msg, np.uint8).reshape(-1, width))
                    for i, track in enumerate(channels):
                        await self.call.audio(track, pcm[:, i].astype("<i2").tobytes())
                continue
            kind, params = msg
            if kind == "close":
                return  # "closed" once everything is scored (done)
            if kind == "ping":
                await self._send("pong", {})
            elif kind == "update":
                await self._send("updated", {})
            elif kind in _NOTED:
                log.info("audiohook session %s: %s %s", self.id, kind, json.dumps(params)[:200])
            else:
                raise _bad(f"message of type {kind[:20]!r} not understood; accepted: ping, update, paused, "
                           "resumed, discarded, dtmf, error, close")

    async def refuse(self, e: ProtocolError) -> None:
        reason = "unauthorized" if e.code == "unauthorized" else "error"
        await close_ws(self.conn, e.close, e.code,
                       self._message("disconnect", {"reason": reason, "info": f"{e.code}: {e.message}"}))

    async def done(self) -> None:
        await close_ws(self.conn, CLOSE_NORMAL, "end of call", self._message("closed", {}))

    async def going_away(self) -> None:
        # The protocol's way to end a session from the server: "disconnect", then the client closes.
        await close_ws(self.conn, CLOSE_GOING_AWAY, "server shutting down",
                       self._message("disconnect", {"reason": "completed", "info": "server shutting down"}))


async def _serve(server: DetectorServer, ws: Connection) -> None:
    await serve_call(server, _AudioHookSession(server, ws))


ENDPOINT = Endpoint(_serve)
