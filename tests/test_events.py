"""Event schema: the examples here and in the docs round-trip byte for byte; bad events are refused."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.errors import EventSchemaError
from realtime.events import ErrorEvent, ReadyEvent, ScoreEvent, SummaryEvent, parse_event
from realtime.windowing import StreamWindower

EXAMPLE_LINES = [
    '{"type":"score","stream":"mic","seq":17,"start_s":8.5,"end_s":12.5,'
    '"spoof_probability":0.93,"label":"spoof","alert":true,"latency_ms":6.1,"model":"specrnet-1a2b3c4d"}',
    '{"type":"summary","stream":"call-42","windows":118,"spoof_probability":0.88,"label":"spoof","shed":0}',
    '{"type":"error","stream":"call-42","code":"bad_format","message":"format must be f32le or s16le"}',
    '{"type":"ready","stream":"call-42","window_s":4.0,"hop_s":0.5,"model":"specrnet-1a2b3c4d"}',
]


def doc_lines() -> list[str]:
    """The lines of every ```json block of docs/protocol.md, docs/telephony.md and README.md."""
    from tests.conftest import REPO

    lines = []
    for doc in (REPO / "docs" / "protocol.md", REPO / "docs" / "telephony.md", REPO / "README.md"):
        for block in re.findall(r"```json\n(.*?)```", doc.read_text(encoding="utf-8"), re.DOTALL):
            lines += block.splitlines()
    return lines


@pytest.mark.parametrize("line", EXAMPLE_LINES + doc_lines())
def test_examples_round_trip_exactly(line):
    ev = parse_event(line, strict=True)
    assert ev.to_json() == line
    assert type(ev).from_dict(json.loads(line)) == ev


def score(**kw) -> ScoreEvent:
    base = dict(stream="mic", seq=0, start_s=0.0, end_s=4.0, spoof_probability=0.5, label="spoof",
                alert=False, latency_ms=1.0, model="specrnet-1a2b3c4d")
    base.update(kw)
    return ScoreEvent(**base)


def test_rounding():
    d = score(start_s=1.23456, end_s=5.23456, spoof_probability=0.123456, latency_ms=6.12345).to_dict()
    assert (d["start_s"], d["end_s"], d["spoof_probability"], d["latency_ms"]) == (1.235, 5.235, 0.1235, 6.12)
    s = SummaryEvent("f", 3, 0.987654, "spoof", duration_s=12.34567).to_dict()
    assert (s["spoof_probability"], s["duration_s"]) == (0.9877, 12.346)


def test_numpy_scalars_are_normalised_for_json():
    p = np.float32(0.93)
    ev = score(seq=np.int64(3), spoof_probability=p, alert=p > np.float32(0.5), latency_ms=np.float64(2.5))
    d = json.loads(ev.to_json())
    assert d["seq"] == 3 and d["alert"] is True and d["spoof_probability"] == 0.93
    assert type(ev.spoof_probability) is float and type(ev.alert) is bool and type(ev.seq) is int


def test_optional_score_fields_only_when_set():
    assert "tiled" not in score().to_dict() and "shed" not in score().to_dict()
    d = score(tiled=True, shed=3).to_dict()
    assert d["tiled"] is True and d["shed"] == 3
    assert ScoreEvent.from_dict(d) == score(tiled=True, shed=3)


def test_track_is_optional_named_and_validated():
    """Telephony streams say which party they carry; other events are unchanged (no key)."""
    assert "track" not in score().to_dict() and "track" not in SummaryEvent("f", 1, 0.2, "bonafide").to_dict()
    for ev in (score(track="caller"), SummaryEvent("c:agent", 1, 0.2, "bonafide", track="agent"),
               ErrorEvent(code="bad_audio", message="m", stream="c:mixed", track="mixed"),
               ReadyEvent(stream="c:caller", window_s=4.0, hop_s=0.5, model="m", track="caller")):
        assert parse_event(ev.to_json(), strict=True) == ev and ev.to_dict()["track"] == ev.track
    with pytest.raises(EventSchemaError, match="track='customer' not accepted; expected caller | agent | mixed"):
        score(track="customer")


def test_no_speech_has_null_probability():
    ev = score(spoof_probability=None, label="no_speech")
    assert '"spoof_probability":null' in ev.to_json()
    assert parse_event(ev.to_json()) == ev
    with pytest.raises(EventSchemaError, match="spoof_probability=None not accepted; expected a probability when label is 'spoof'"):
        score(spoof_probability=None)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(spoof_probability=1.3), r"spoof_probability=1\.3 not accepted; expected a finite number 0\.\.1"),
        (dict(spoof_probability=float("nan")), "spoof_probability=nan"),
        (dict(label="fake"), r"label='fake' not accepted; expected bonafide \| spoof \| no_speech"),
        (dict(seq=-1), "seq=-1 not accepted; expected an integer >= 0"),
        (dict(seq=True), "seq=True"),
        (dict(seq=1.0), "seq=1.0"),
        (dict(end_s=-1.0), r"end_s=-1\.0 not accepted; expected a finite number >= 0"),
        (dict(start_s=5.0, end_s=4.0), r"end_s=4\.0 not accepted; expected a finite number >= 5"),
        (dict(alert="yes"), "alert='yes' not accepted; expected true or false"),
        (dict(stream=""), "stream='' not accepted; expected a non-empty string"),
        (dict(latency_ms=float("inf")), "latency_ms=inf"),
        (dict(shed=-2), "shed=-2"),
    ],
)
def test_score_validation_names_field_value_and_accepted(kw, msg):
    with pytest.raises(EventSchemaError, match=msg):
        score(**kw)
    with pytest.raises(ValueError):  # also catchable as ValueError
        score(**kw)


def test_from_dict_missing_unknown_and_wrong_type():
    d = score().to_dict()
    with pytest.raises(EventSchemaError, match="score event: missing model, latency_ms|missing latency_ms, model"):
        ScoreEvent.from_dict({k: v for k, v in d.items() if k not in ("model", "latency_ms")})
    assert ScoreEvent.from_dict({**d, "gpu": "h100"}) == score()  # newer server fields ignored
    with pytest.raises(EventSchemaError, match="unknown keys gpu; accepted: type, stream"):
        ScoreEvent.from_dict({**d, "gpu": "h100"}, strict=True)
    with pytest.raises(EventSchemaError, match="expected an event of type 'summary', got type='score'"):
        SummaryEvent.from_dict(d)


@pytest.mark.parametrize(
    "data, msg",
    [
        ("{not json", "event is not valid JSON"),
        ("[1, 2]", "event must be a JSON object, got list"),
        ('{"type":"hello"}', "event type 'hello' not accepted; expected one of score, summary, error, ready"),
        (b'{"type":"error","code":"busy","message":"full"}', None),
    ],
)
def test_parse_event_inputs(data, msg):
    if msg is None:
        ev = parse_event(data)
        assert ev == ErrorEvent("busy", "full") and ev.to_json() == '{"type":"error","code":"busy","message":"full"}'
    else:
        with pytest.raises(EventSchemaError, match=msg):
            parse_event(data)


def test_error_and_ready_validation():
    with pytest.raises(EventSchemaError, match="code='Bad Code' not accepted"):
        ErrorEvent("Bad Code", "x")
    with pytest.raises(EventSchemaError, match="window_s/hop_s"):
        ReadyEvent("s", 0.0, 0.5, "m")
    with pytest.raises(EventSchemaError, match="windows=-1"):
        SummaryEvent("s", -1, 0.5, "spoof")


def test_for_window_measures_latency_and_carries_tiled():
    win = StreamWindower("clip", 16000, clock=lambda: 10.0)
    assert list(win.push(np.full((8000, 1), 0.1, np.float32))) == []
    (w,) = win.finish()
    ev = ScoreEvent.for_window(w, np.float32(0.25), "bonafide", False, "m", scored_at=10.0061)
    assert ev.tiled and ev.latency_ms == pytest.approx(6.1) and ev.end_s == 0.5
    assert json.loads(ev.to_json())["tiled"] is True


finite = st.floats(0, 1e5, allow_nan=False)


@settings(deadline=None)
@given(stream=st.text(min_size=1, max_size=20), seq=st.integers(0, 10**9), start=finite, dur=finite,
       p=st.none() | st.floats(0, 1), alert=st.booleans(), lat=finite, tiled=st.booleans(),
       shed=st.integers(0, 1000))
def test_any_valid_score_event_round_trips(stream, seq, start, dur, p, alert, lat, tiled, shed):
    label = "no_speech" if p is None else ("spoof" if p > 0.5 else "bonafide")
    ev = ScoreEvent(stream, seq, start, start + dur, p, label, alert, lat, "m", tiled, shed)
    line = ev.to_json()
    assert "\n" not in line and line == json.dumps(json.loads(line), separators=(",", ":"))  # compact
    back = parse_event(line, strict=True)
    assert back.to_dict() == ev.to_dict()
    assert back.to_json() == line
