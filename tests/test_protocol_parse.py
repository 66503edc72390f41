"""realtime.protocol alone: messages in, a StartRequest or a ProtocolError (code, close code,
words) out. No server: the same refusals on a real connection are in test_protocol_fuzz.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from realtime.access import authorized
from realtime.options import ServerOptions
from realtime.protocol import (
    MAX_TEXT_BYTES,
    ProtocolError,
    after_end_refusal,
    expect_end,
    parse_start,
    show_value,
)

GOOD = '{"type":"start","sample_rate":16000,"format":"s16le"'


def start(extra: str = "") -> str:
    return GOOD + extra + "}"


def assert_refused(parse: Callable[[Any], object], message: str | bytes, code: str, close: int, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(message)
    e = info.value
    assert (e.code, e.close) == (code, close), e.message
    assert words in e.message


def test_start_defaults_and_unknown_keys_ignored() -> None:
    s = parse_start('{"type":"start","sample_rate":8000,"format":"s16le","extra":1}')
    assert (s.sample_rate, s.channels, s.format, s.stream, s.token) == (8000, 1, "s16le", None, None)
    with pytest.raises(ProtocolError, match="sample_rate missing"):
        parse_start('{"type":"start","format":"s16le"}')


def test_start_at_the_edges_of_what_is_accepted() -> None:
    s = parse_start('{"type":"start","sample_rate":192000,"channels":8,"format":"f32le",'
                    f'"stream":"{"aZ09_.:-" * 8}","token":"t"}}')
    assert (s.sample_rate, s.channels, s.format, s.stream, s.token) == (192000, 8, "f32le", "aZ09_.:-" * 8, "t")
    assert parse_start(start(',"channels":1,"stream":"x"')).stream == "x"
    assert parse_start('{"type":"start","sample_rate":8000,"format":"s16le"}').sample_rate == 8000


@pytest.mark.parametrize(("message", "code", "close", "words"), [
    (b"\x00\x01\x02", "bad_request", 1008, "binary frame (3 bytes) before the start message"),
    (b"", "bad_request", 1008, "before the start message"),
    ("", "bad_request", 1008, "not valid JSON"),
    ("not json", "bad_request", 1008, "not valid JSON (Expecting value at character 0)"),
    ('{"type":"start","sample_rate":16000', "bad_request", 1008, "not valid JSON"),
    ('{"type":"start","sample_rate":16000,"format":"s16le"}}', "bad_request", 1008, "not valid JSON"),
    ("[" * 2000 + "]" * 2000, "bad_request", 1008, "nested too deeply"),
    ('"start"', "bad_request", 1008, "got type 'str'"),
    ("[]", "bad_request", 1008, "got type 'list'"),
    ("null", "bad_request", 1008, "got type 'NoneType'"),
    ('{"type":"end"}', "bad_request", 1008, "got type 'end'"),
    ('{"sample_rate":16000,"format":"s16le"}', "bad_request", 1008, "got type None"),
    ('{"type":"start","format":"s16le"}', "bad_format", 1003, "sample_rate missing; accepted: an integer in 8000..192000"),
    ('{"type":"start","sample_rate":7999,"format":"s16le"}', "bad_format", 1003, "sample_rate 7999 not accepted"),
    ('{"type":"start","sample_rate":192001,"format":"s16le"}', "bad_format", 1003, "sample_rate 192001 not"),
    ('{"type":"start","sample_rate":16000.0,"format":"s16le"}', "bad_format", 1003, "sample_rate 16000.0 not"),
    ('{"type":"start","sample_rate":true,"format":"s16le"}', "bad_format", 1003, "sample_rate True not"),
    ('{"type":"start","sample_rate":"16000","format":"s16le"}', "bad_format", 1003, "sample_rate '16000' not"),
    (start(',"channels":0'), "bad_format", 1003, "channels 0 not accepted; accepted: an integer in 1..8"),
    (start(',"channels":9'), "bad_format", 1003, "channels 9 not accepted"),
    (start(',"channels":null'), "bad_format", 1003, "channels None not accepted"),
    ('{"type":"start","sample_rate":16000}', "bad_format", 1003, "format missing; accepted: s16le, f32le"),
    ('{"type":"start","sample_rate":16000,"format":"f64le"}', "bad_format", 1003, "format 'f64le' not accepted"),
    ('{"type":"start","sample_rate":16000,"format":["s16le"]}', "bad_format", 1003, "format ['s16le'] not"),
    (start(',"stream":""'), "bad_request", 1008, "stream '' not accepted; accepted: 1..64 characters"),
    (start(f',"stream":"{"a" * 65}"'), "bad_request", 1008, "not accepted"),
    (start(',"stream":"a b"'), "bad_request", 1008, "stream 'a b' not accepted"),
    (start(',"stream":"caf\\u00e9"'), "bad_request", 1008, "not accepted"),
    (start(',"stream":"\\ud800"'), "bad_request", 1008, "stream '\\ud800' not accepted"),
    (start(',"stream":42'), "bad_request", 1008, "stream 42 not accepted"),
    (start(',"token":42'), "bad_request", 1008, "token must be a string"),
    (start(',"token":null,"x":"' + "y" * MAX_TEXT_BYTES + '"'), "too_big", 1009,
     f"control messages are at most {MAX_TEXT_BYTES} bytes"),
    ("x" * (MAX_TEXT_BYTES + 1), "too_big", 1009, f"text message of {MAX_TEXT_BYTES + 1} characters"),
    ("[" * 100_000, "too_big", 1009, "at most"),
])
def test_start_refusals(message: str | bytes, code: str, close: int, words: str) -> None:
    assert_refused(parse_start, message, code, close, words)


def test_a_text_of_max_size_is_parsed_not_refused_for_size() -> None:
    padded = start(',"pad":"' + "p" * (MAX_TEXT_BYTES - len(start(',"pad":""'))) + '"')
    assert len(padded) == MAX_TEXT_BYTES
    assert parse_start(padded).sample_rate == 16000


def test_a_lone_surrogate_token_is_a_wrong_token_not_a_crash() -> None:
    s = parse_start(start(',"token":"\\ud800"'))
    assert s.token == "\ud800"
    opts = ServerOptions(token="secret")
    assert not authorized(opts, None, s.token)
    assert not authorized(replace(opts, token="\udc00"), None, s.token)
    assert authorized(replace(opts, token="\ud800"), None, s.token)


@pytest.mark.parametrize(("message", "code", "close", "words"), [
    ('{"type":"start"}', "bad_request", 1008, "text message of type 'start' not understood"),
    ('{"type":"pause"}', "bad_request", 1008, "type 'pause' not understood; after start, send binary PCM frames"),
    ('{"kind":"end"}', "bad_request", 1008, "type None not understood"),
    ('{"type":"end"', "bad_request", 1008, "type None"),
    ('"end"', "bad_request", 1008, "type None"),
    ("[" * 2000 + "]" * 2000, "bad_request", 1008, "type None"),
    ('{"type":"\\ud800"}', "bad_request", 1008, "type '\\ud800'"),
    ('{"type":"' + "e" * 100 + '"}', "bad_request", 1008, "type '" + "e" * 39 + "..."),
    ("x" * (MAX_TEXT_BYTES + 1), "too_big", 1009, f"control messages are at most {MAX_TEXT_BYTES} bytes"),
])
def test_text_after_start_other_than_end(message: str, code: str, close: int, words: str) -> None:
    assert_refused(expect_end, message, code, close, words)


def test_end_is_accepted_with_any_other_keys() -> None:
    assert expect_end('{"type":"end"}') is None
    assert expect_end(' {"type": "end", "reason": "done"} ') is None


@pytest.mark.parametrize(("message", "words"), [
    (b"abc", "binary message of 3 bytes after end"),
    ('{"type":"end"}', "text message of type 'end' after end"),
    ("not json", "text message of type None after end"),
    ('{"type":"' + "e" * MAX_TEXT_BYTES + '"}', "text message of type None after end"),  # too big to parse
])
def test_anything_after_end(message: str | bytes, words: str) -> None:
    e = after_end_refusal(message)
    assert (e.code, e.close) == ("bad_request", 1008)
    assert e.message == words + '; nothing may follow {"type":"end"}'


def test_show_value_cuts_long_values() -> None:
    assert show_value("abc") == "'abc'"
    assert show_value("x" * 100) == "'" + "x" * 39 + "..."
    assert show_value("x" * 100, 80) == "'" + "x" * 79 + "..."
