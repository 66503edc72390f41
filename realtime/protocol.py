"""Protocol v1 on ``/v1/stream`` (docs/protocol.md) as pure functions of its messages: the start
message, the text messages after it, and the error and close codes of its refusals. No sockets
here; :mod:`realtime.stream_endpoint` runs a connection with them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .pcm import PCM_FORMATS

__all__ = ["CLOSE_BUSY", "CLOSE_GOING_AWAY", "CLOSE_INVALID_DATA", "CLOSE_NORMAL", "CLOSE_POLICY", "CLOSE_PROTOCOL",
           "CLOSE_TOO_BIG", "CLOSE_UNSUPPORTED", "LIBRARY_REFUSALS", "MAX_TEXT_BYTES", "REFUSALS", "STREAM_PATH",
           "WS_MAX_CHANNELS", "WS_MAX_RATE", "WS_MIN_RATE", "ProtocolError", "StartRequest", "after_end_refusal",
           "expect_end", "parse_start", "show_value"]

STREAM_PATH = "/v1/stream"
# What a client may declare in ``start``: narrower than what the resampler takes from files and
# microphones (realtime.resample.MIN_RATE..MAX_RATE), as a network peer is not trusted as far.
WS_MIN_RATE, WS_MAX_RATE, WS_MAX_CHANNELS = 8000, 192000, 8
MAX_TEXT_BYTES = 4096  # start and end messages are ~100 bytes; bigger text is abuse or a bug
_STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL, CLOSE_UNSUPPORTED = 1000, 1001, 1002, 1003
CLOSE_INVALID_DATA, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_BUSY = 1007, 1008, 1009, 1013

#: Every way a stream is refused: error code -> the close codes it comes with (none: the
#: connection is dropped). The table of docs/protocol.md, "Refusals" (tests/test_protocol_docs.py
#: holds the two, and the refusals the code makes, to each other).
REFUSALS: dict[str, tuple[int, ...]] = {
    "bad_request": (CLOSE_POLICY, CLOSE_INVALID_DATA, CLOSE_PROTOCOL),
    "bad_format": (CLOSE_UNSUPPORTED,),
    "bad_audio": (CLOSE_UNSUPPORTED,),
    "unauthorized": (CLOSE_POLICY,),
    "timeout": (CLOSE_POLICY,),
    "too_big": (CLOSE_TOO_BIG,),
    "rate_limited": (CLOSE_POLICY,),
    "not_reading": (),
    "busy": (CLOSE_BUSY,),
    "empty_stream": (CLOSE_NORMAL,),
}

#: Close codes the websockets library fails a connection with -> our error code.
LIBRARY_REFUSALS = {CLOSE_TOO_BIG: "too_big", CLOSE_INVALID_DATA: "bad_request", CLOSE_PROTOCOL: "bad_request"}


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


def show_value(v: object, n: int = 40) -> str:
    """A client-supplied value for a message: its repr, cut to ``n`` characters."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def _int_in(start: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = start.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        what = "missing" if key not in start else f"{show_value(v)} not accepted"
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
                            f"first message must be {{\"type\":\"start\",...}}, got type {show_value(got)}")
    rate = _int_in(start, "sample_rate", WS_MIN_RATE, WS_MAX_RATE)
    channels = _int_in(start, "channels", 1, WS_MAX_CHANNELS, default=1)
    fmt = start.get("format")
    if not isinstance(fmt, str) or fmt not in PCM_FORMATS:
        what = "missing" if "format" not in start else f"{show_value(fmt)} not accepted"
        raise ProtocolError("bad_format", CLOSE_UNSUPPORTED, f"format {what}; accepted: {', '.join(PCM_FORMATS)}")
    stream = start.get("stream")
    if stream is not None and (not isinstance(stream, str) or not _STREAM_ID.fullmatch(stream)):
        raise ProtocolError("bad_request", CLOSE_POLICY, f"stream {show_value(stream, 80)} not accepted; "
                            "accepted: 1..64 characters of A-Z a-z 0-9 _ . : -")
    token = start.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("bad_request", CLOSE_POLICY, "token must be a string")
    return StartRequest(rate, channels, fmt, stream, token)


def _message_type(msg: str) -> object:
    """The ``type`` of a JSON text message, or None (not JSON, not an object, nested too deep)."""
    try:
        data = json.loads(msg)
    except (json.JSONDecodeError, RecursionError):
        return None
    return data.get("type") if isinstance(data, dict) else None


def expect_end(message: str) -> None:
    """A text message after ``start``: returns for ``end``, raises :class:`ProtocolError` for any other."""
    if len(message) > MAX_TEXT_BYTES:
        raise _too_big_text(message)
    kind = _message_type(message)
    if kind != "end":
        raise ProtocolError("bad_request", CLOSE_POLICY, f"text message of type {show_value(kind)} not understood; "
                            'after start, send binary PCM frames and {"type":"end"}')


def after_end_refusal(message: str | bytes) -> ProtocolError:
    """The refusal of a message that came after ``end`` (nothing may)."""
    if isinstance(message, bytes):
        what = f"binary message of {len(message)} bytes"
    else:
        kind = _message_type(message) if len(message) <= MAX_TEXT_BYTES else None
        what = f"text message of type {show_value(kind)}"
    return ProtocolError("bad_request", CLOSE_POLICY, f"{what} after end; nothing may follow {{\"type\":\"end\"}}")
