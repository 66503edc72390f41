"""Event schema (docs/protocol.md): score, summary, error, and the WebSocket ready reply.

The same dicts go to JSON lines, WebSocket replies and the event log. Events validate
on construction (a probability of 1.3 is a bug to catch where it is made) and normalise
numpy scalars to plain Python numbers, so ``to_json`` never meets a ``np.float32``.

Rounding on output: probabilities 4 decimals, seconds 3, latency 2 (ms).
``from_dict`` ignores unknown keys unless ``strict=True``, so a client built against
this version keeps reading events from a newer server that adds fields.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Union

import numpy as np

from .errors import EventSchemaError

__all__ = ["LABELS", "TRACKS", "ERROR_CODES", "ScoreEvent", "SummaryEvent", "ErrorEvent", "ReadyEvent",
           "Event", "parse_event", "EventSchemaError"]

#: Window and file verdicts. ``no_speech`` windows are not given a verdict.
LABELS = ("bonafide", "spoof", "no_speech")

#: Which party of a call a stream carries (telephony inputs): the caller, the agent, or both
#: parties in one signal. Absent from events of streams that do not say.
TRACKS = ("caller", "agent", "mixed")

#: Error codes the live side uses (others may be added; any ``[a-z0-9_]+`` is accepted).
ERROR_CODES = {
    "bad_request": "malformed or unexpected message",
    "bad_format": "unsupported sample rate, channel count or sample format",
    "bad_audio": "audio that cannot be used (NaN/Inf samples, undecodable file)",
    "unauthorized": "missing or wrong token",
    "too_big": "message or stream over the configured limit",
    "busy": "server at capacity",
    "timeout": "no start message, or no audio, for too long",
    "rate_limited": "too many WebSocket frames per second (messages, fragments, pings)",
    "not_reading": "the client does not read what the server sends (pongs pile up)",
    "empty_stream": "stream ended without audio",
    "input_error": "the audio source failed mid-stream (device gone, read error); what it gave is scored",
    "engine_error": "the engine failed on a batch; its windows are not scored",
    "events_dropped": "the event log could not keep up; score events not recorded",
    "internal": "unexpected server error",
}

_CODE_RE = re.compile(r"[a-z0-9_]+")


def _fail(cls: type, name: str, value: Any, accepted: str) -> None:
    raise EventSchemaError(f"{cls.type} event: {name}={value!r} not accepted; expected {accepted}")


def _str(obj: Any, name: str, *, optional: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    if not isinstance(v, str) or not v:
        _fail(type(obj), name, v, "a non-empty string" + (" or null" if optional else ""))


def _int(obj: Any, name: str, *, optional: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        _fail(type(obj), name, v, "an integer >= 0")
    object.__setattr__(obj, name, int(v))


def _bool(obj: Any, name: str) -> None:
    v = getattr(obj, name)
    if not isinstance(v, (bool, np.bool_)):  # numpy.bool_ comes from `p > threshold`
        _fail(type(obj), name, v, "true or false")
    object.__setattr__(obj, name, bool(v))


def _num(obj: Any, name: str, lo: float = 0.0, hi: float = math.inf, *, optional: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not lo <= v <= hi:
        rng = f"{lo:g}..{hi:g}" if hi != math.inf else f">= {lo:g}"
        _fail(type(obj), name, v, f"a finite number {rng}" + (" or null" if optional else ""))
    object.__setattr__(obj, name, float(v))


def _label(obj: Any) -> None:
    if obj.label not in LABELS:
        _fail(type(obj), "label", obj.label, " | ".join(LABELS))
    if obj.spoof_probability is None and obj.label != "no_speech":
        _fail(type(obj), "spoof_probability", None, f"a probability when label is {obj.label!r}")


def _track(obj: Any) -> None:
    if obj.track is not None and obj.track not in TRACKS:
        _fail(type(obj), "track", obj.track, " | ".join(TRACKS) + " or null")


def _r(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


class _Event:
    """Shared dict/JSON plumbing; subclasses are frozen dataclasses with a ``type``."""

    type: ClassVar[str]
    _optional: ClassVar[frozenset[str]] = frozenset()  # keys that may be absent from a dict

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        """Compact one-line JSON (no NaN: validation already rules it out)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = False):
        """Build and validate an event from a decoded JSON object."""
        if not isinstance(data, dict):
            raise EventSchemaError(f"{cls.type} event must be a JSON object, got {type(data).__name__}")
        if data.get("type") != cls.type:
            raise EventSchemaError(f"expected an event of type {cls.type!r}, got type={data.get('type')!r}")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        missing = [n for n in names if n not in data and n not in cls._optional]
        if missing:
            raise EventSchemaError(f"{cls.type} event: missing {', '.join(missing)}; has {', '.join(data)}")
        if strict:
            extra = sorted(set(data) - set(names) - {"type"})
            if extra:
                raise EventSchemaError(f"{cls.type} event: unknown keys {', '.join(extra)}; "
                                       f"accepted: type, {', '.join(names)}")
        return cls(**{n: data[n] for n in names if n in data})


@dataclass(frozen=True, slots=True)
class ScoreEvent(_Event):
    """One scored window.

    ``tiled`` (a clip shorter than a window, repeated to fill it) appears in the dict only
    when true; ``shed`` (windows of this stream dropped under load since the previous
    event) only when non-zero. ``spoof_probability`` may be None only for ``no_speech``.
    ``connection`` (server streams: the connection's number, which tells apart two clients
    using one stream id) and ``track`` (:data:`TRACKS`) appear only when set, in every
    event of the stream.
    """

    type: ClassVar[str] = "score"
    _optional: ClassVar[frozenset[str]] = frozenset({"tiled", "shed", "connection", "track"})

    stream: str
    seq: int
    start_s: float
    end_s: float
    spoof_probability: float | None
    label: str
    alert: bool
    latency_ms: float
    model: str
    tiled: bool = False
    shed: int = 0
    connection: int | None = None
    track: str | None = None

    def __post_init__(self) -> None:
        _str(self, "stream")
        _int(self, "seq")
        _num(self, "start_s")
        _num(self, "end_s", self.start_s)
        _num(self, "spoof_probability", 0.0, 1.0, optional=True)
        _label(self)
        _bool(self, "alert")
        _num(self, "latency_ms")
        _str(self, "model")
        _bool(self, "tiled")
        _int(self, "shed")
        _int(self, "connection", optional=True)
        _track(self)

    @classmethod
    def for_window(cls, window: Any, spoof_probability: float | None, label: str, alert: bool,
                   model: str, scored_at: float, shed: int = 0, connection: int | None = None,
                   track: str | None = None) -> ScoreEvent:
        """Event for a :class:`~realtime.windowing.Window` scored at ``scored_at``
        (``time.monotonic()``); ``latency_ms`` is measured from the window's arrival."""
        return cls(stream=window.stream, seq=window.seq, start_s=window.start_s, end_s=window.end_s,
                   spoof_probability=spoof_probability, label=label, alert=alert,
                   latency_ms=max(0.0, (scored_at - window.arrival) * 1000.0), model=model,
                   tiled=window.tiled, shed=shed, connection=connection, track=track)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type, "stream": self.stream, "seq": self.seq,
            "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
            "spoof_probability": _r(self.spoof_probability, 4), "label": self.label,
            "alert": self.alert, "latency_ms": round(self.latency_ms, 2), "model": self.model,
        }
        if self.tiled:
            d["tiled"] = True
        if self.shed:
            d["shed"] = self.shed
        return _with_connection(d, self.connection, self.track)


@dataclass(frozen=True, slots=True)
class SummaryEvent(_Event):
    """End of a stream or file: the file-level verdict over all scored windows.

    ``model`` and ``duration_s`` (seconds of audio) are optional and left out when None;
    ``tiled`` (only present when true) flags a clip shorter than one window, scored tiled.
    """

    type: ClassVar[str] = "summary"
    _optional: ClassVar[frozenset[str]] = frozenset({"model", "duration_s", "tiled", "connection", "track"})

    stream: str
    windows: int
    spoof_probability: float | None
    label: str
    shed: int = 0
    model: str | None = None
    duration_s: float | None = None
    tiled: bool = False
    connection: int | None = None
    track: str | None = None

    def __post_init__(self) -> None:
        _str(self, "stream")
        _bool(self, "tiled")
        _int(self, "windows")
        _num(self, "spoof_probability", 0.0, 1.0, optional=True)
        _label(self)
        _int(self, "shed")
        _str(self, "model", optional=True)
        _num(self, "duration_s", optional=True)
        _int(self, "connection", optional=True)
        _track(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type, "stream": self.stream, "windows": self.windows,
            "spoof_probability": _r(self.spoof_probability, 4), "label": self.label, "shed": self.shed,
        }
        if self.model is not None:
            d["model"] = self.model
        if self.duration_s is not None:
            d["duration_s"] = round(self.duration_s, 3)
        if self.tiled:
            d["tiled"] = True
        return _with_connection(d, self.connection, self.track)


@dataclass(frozen=True, slots=True)
class ErrorEvent(_Event):
    """A problem reported to the client; ``stream`` is None before a stream exists."""

    type: ClassVar[str] = "error"
    _optional: ClassVar[frozenset[str]] = frozenset({"stream", "connection", "track"})

    code: str
    message: str
    stream: str | None = None
    connection: int | None = None
    track: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE_RE.fullmatch(self.code):
            _fail(type(self), "code", self.code, "a code of [a-z0-9_] such as " + ", ".join(ERROR_CODES))
        _str(self, "message")
        _str(self, "stream", optional=True)
        _int(self, "connection", optional=True)
        _track(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.stream is not None:
            d["stream"] = self.stream
        d["code"] = self.code
        d["message"] = self.message
        return _with_connection(d, self.connection, self.track)


@dataclass(frozen=True, slots=True)
class ReadyEvent(_Event):
    """Server's answer to a WebSocket ``start`` message (protocol v1). ``threshold`` is the
    model's: each model has its own (a page draws it); optional for older servers."""

    type: ClassVar[str] = "ready"
    _optional: ClassVar[frozenset[str]] = frozenset({"threshold", "connection", "track"})

    stream: str
    window_s: float
    hop_s: float
    model: str
    threshold: float | None = None
    connection: int | None = None
    track: str | None = None

    def __post_init__(self) -> None:
        _str(self, "stream")
        _num(self, "window_s")
        _num(self, "hop_s")
        if self.window_s <= 0 or self.hop_s <= 0:
            _fail(type(self), "window_s/hop_s", (self.window_s, self.hop_s), "positive seconds")
        _str(self, "model")
        _num(self, "threshold", 0.0, 1.0, optional=True)
        _int(self, "connection", optional=True)
        _track(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "stream": self.stream, "window_s": round(self.window_s, 3),
                             "hop_s": round(self.hop_s, 3), "model": self.model}
        if self.threshold is not None:
            d["threshold"] = round(self.threshold, 4)
        return _with_connection(d, self.connection, self.track)


def _with_connection(d: dict[str, Any], connection: int | None, track: str | None) -> dict[str, Any]:
    if connection is not None:
        d["connection"] = connection
    if track is not None:
        d["track"] = track
    return d


Event = Union[ScoreEvent, SummaryEvent, ErrorEvent, ReadyEvent]
_BY_TYPE: dict[str, type[_Event]] = {c.type: c for c in (ScoreEvent, SummaryEvent, ErrorEvent, ReadyEvent)}


def parse_event(data: str | bytes | dict[str, Any], *, strict: bool = False) -> Event:
    """Parse one JSON line (or an already decoded dict) into its event class."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EventSchemaError(f"event is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise EventSchemaError(f"event must be a JSON object, got {type(data).__name__}")
    cls = _BY_TYPE.get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise EventSchemaError(f"event type {data.get('type')!r} not accepted; expected one of "
                               f"{', '.join(_BY_TYPE)}")
    return cls.from_dict(data, strict=strict)  # type: ignore[return-value]
