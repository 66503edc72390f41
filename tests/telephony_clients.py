"""Clients that speak the telephony protocols as their platforms document them (tests only):
the G.711 mu-law encoder a telephone network applies, and message builders for Twilio Media
Streams, Asterisk AudioSocket and Genesys AudioHook."""

from __future__ import annotations

import base64
import json
import struct
import uuid

import numpy as np

_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def s16_to_ulaw(pcm: np.ndarray) -> bytes:
    """int16 -> mu-law, G.711's segment encoder on 14-bit magnitudes (what audioop.lin2ulaw does)."""
    x = np.asarray(pcm, dtype=np.int32).ravel() >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 8159) + 33  # clip, then the bias (132 >> 2)
    seg = np.searchsorted(_SEG_END, mag)  # first segment whose end is >= mag
    uval = np.where(seg < 8, (seg << 4) | ((mag >> np.minimum(seg + 1, 8)) & 0x0F), 0x7F)  # 8: past the top
    return (uval ^ mask).astype(np.uint8).tobytes()


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


# -- Twilio Media Streams ---------------------------------------------------------------------

def twilio_messages(call_sid: str, tracks: dict[str, bytes], *, token: str | None = None,
                    chunk: int = 160) -> list[str]:
    """connected, start, media per 20 ms (tracks interleaved, as Twilio sends them), a mark, stop.

    ``tracks``: Twilio track name ("inbound" / "outbound") -> mu-law bytes.
    """
    stream_sid = "MZ" + uuid.uuid4().hex
    params = {"token": token} if token is not None else {}
    msgs = [{"event": "connected", "protocol": "Call", "version": "1.0.0"},
            {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
             "start": {"accountSid": "AC" + "0" * 32, "streamSid": stream_sid, "callSid": call_sid,
                       "tracks": list(tracks), "customParameters": params,
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}]
    seq = 2
    longest = max(len(v) for v in tracks.values())
    for k, i in enumerate(range(0, longest, chunk)):
        for name, audio in tracks.items():
            if i >= len(audio):
                continue
            msgs.append({"event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid,
                         "media": {"track": name, "chunk": str(k + 1), "timestamp": str(k * 20),
                                   "payload": base64.b64encode(audio[i:i + chunk]).decode()}})
            seq += 1
    msgs.append({"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": "end"}})
    msgs.append({"event": "stop", "sequenceNumber": str(seq + 1), "streamSid": stream_sid,
                 "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}})
    return [json.dumps(m) for m in msgs]


# -- Asterisk AudioSocket ---------------------------------------------------------------------

def audiosocket_frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


def audiosocket_call(call: uuid.UUID, pcm: bytes, chunk: int = 320) -> bytes:
    """What Asterisk's AudioSocket() writes: the UUID, 20-ms slin frames, the hangup."""
    frames = [audiosocket_frame(0x01, call.bytes)]
    frames += [audiosocket_frame(0x10, pcm[i:i + chunk]) for i in range(0, len(pcm), chunk)]
    return b"".join(frames) + audiosocket_frame(0x00)


# -- Genesys AudioHook ------------------------------------------------------------------------

class AudioHookClient:
    """Message builder for one AudioHook session (client side: Genesys Cloud)."""

    def __init__(self, session_id: str, channels: tuple[str, ...] = ("external", "internal")) -> None:
        self.id = session_id
        self.channels = list(channels)
        self.seq = 0
        self.serverseq = 0
        self.position = 0.0  # seconds of audio sent

    def message(self, type_: str, parameters: dict) -> str:
        self.seq += 1
        return json.dumps({"version": "2", "id": self.id, "type": type_, "seq": self.seq,
                           "serverseq": self.serverseq, "position": f"PT{self.position:g}S",
                           "parameters": parameters})

    def open(self, conversation_id: str | None = None) -> str:
        return self.message("open", {
            "organizationId": str(uuid.uuid4()),
            "conversationId": conversation_id or str(uuid.uuid4()),
            "participant": {"id": str(uuid.uuid4()), "ani": "+15551230000", "aniName": "Caller",
                            "dnis": "+15559870000"},
            "media": [{"type": "audio", "format": "PCMU", "channels": self.channels, "rate": 8000},
                      {"type": "audio", "format": "PCMU", "channels": self.channels[:1], "rate": 8000}],
            "language": "en-US"})

    def received(self, reply: dict) -> None:
        self.serverseq = reply["seq"]

    def audio(self, per_channel: list[bytes]) -> bytes:
        """One binary frame: the channels' mu-law bytes interleaved sample by sample."""
        frame = np.stack([np.frombuffer(c, np.uint8) for c in per_channel], axis=1).tobytes()
        self.position += len(per_channel[0]) / 8000
        return frame
