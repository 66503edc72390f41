"""Property-based tests of WebSocket protocol v1 against a real server.

One server (fake engine) runs in a thread of its own for the whole module, and a "good"
client streams real speech to it, over and over, in another thread. Each hypothesis example
opens a connection and breaks the protocol in some way; the properties:

* the bad client gets exactly the error event and close code of the table in
  docs/protocol.md (and, where the stream had started, what it was owed before);
* the server logs exactly one ``refused`` line for it, and nothing with a traceback;
* the good client's streams all complete normally throughout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.batcher import BatcherOptions
from realtime.events import parse_event
from realtime.options import DetectorOptions, ServerOptions
from realtime.protocol import MAX_TEXT_BYTES
from realtime.server import DetectorServer
from realtime.session import LiveDetector
from tests.conftest import speech
from tests.good_client import GoodClient
from tests.test_session import FakeEngine

MAX_MESSAGE = 64 * 1024
OPTS = ServerOptions(port=0, idle_timeout_s=5.0, start_timeout_s=5.0, max_message_bytes=MAX_MESSAGE,
                     max_messages_per_s=100.0)
DET = DetectorOptions(batching=BatcherOptions(max_wait_ms=1.0, max_delay_ms=600_000))  # the good client counts its windows: none shed for lateness
# Bounded and reproducible: derandomize, so that a failure shows up on every run, not by luck.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(FUZZ, max_examples=8)
WAIT = object()  # in a message list: read one event before sending on


@dataclass(frozen=True)
class Together:
    """Messages written to the socket in one call, so the server reads them in one go: what
    it makes of the second cannot depend on how the machine schedules the client."""

    messages: tuple[str | bytes, ...]
START = {"type": "start", "sample_rate": 16000, "format": "s16le"}
CLOSE_OF = {"bad_request": 1008, "bad_format": 1003, "bad_audio": 1003, "too_big": 1009,
            "rate_limited": 1008, "unauthorized": 1008, "timeout": 1008}


class Capture(logging.Handler):
    """Every record of level WARNING or more, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        self.records.append(record)

    def snapshot(self) -> list[logging.LogRecord]:
        with self.lock:  # the handler's own RLock
            return list(self.records)


@contextmanager
def capturing_logs() -> Iterator[Capture]:
    """A :class:`Capture` on the root logger, with realtime's own loggers at INFO meanwhile."""
    capture = Capture()
    logging.getLogger().addHandler(capture)
    ours = logging.getLogger("realtime")
    level = ours.level
    ours.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        logging.getLogger().removeHandler(capture)
        ours.setLevel(level)


class ServerThread:
    """A DetectorServer on its own event loop in a daemon thread."""

    def __init__(self, options: ServerOptions) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.options = options
        self.server: DetectorServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            det = LiveDetector(FakeEngine(), DET).start()
            self.server = DetectorServer(det, self.options, flush_s=1.0, drain_s=2.0)
            await self.server.start()
            self.ready.set()
            await self.server.wait_closed()

        self.loop.run_until_complete(main())

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}/v1/stream"

    def stop(self) -> None:
        assert self.server is not None
        self.loop.call_soon_threadsafe(self.server.shutdown)
        self.thread.join(10)


async def good_stream(url: str, audio: bytes) -> str | None:
    """One stream of s16 ``audio`` (4.5 s) in 0.1-s frames, a little faster than real time; what
    went wrong, or None (the good client's session)."""
    events, code = await exchange(url, [json.dumps({**START, "stream": "good"})] +
                                  [audio[i:i + 3200] for i in range(0, len(audio), 3200)] +
                                  [json.dumps({"type": "end"})], pace_s=0.02)
    kinds = [e.type for e in events]
    if code != 1000 or kinds != ["ready", "score", "score", "summary"]:
        return f"close {code}, events {kinds}"
    return None


async def exchange(url: str, messages: list, pace_s: float = 0.0) -> tuple[list, int | None]:
    """Send ``messages``, then read events until the server closes; (events, close code)."""
    events = []
    async with connect(url, max_size=None, close_timeout=2) as ws:
        try:
            for m in messages:
                if m is WAIT:
                    events.append(parse_event(await ws.recv()))
                    continue
                if isinstance(m, Together):
                    for part in m.messages:
                        if isinstance(part, str):
                            ws.protocol.send_text(part.encode())
                        else:
                            ws.protocol.send_binary(part)
                    ws.transport.write(b"".join(ws.protocol.data_to_send()))
                    continue
                await ws.send(m)
                if pace_s:
                    await asyncio.sleep(pace_s)
        except ConnectionClosed:  # refused while sending: what it said is still readable
            pass
        try:
            async with asyncio.timeout(10):
                async for msg in ws:
                    events.append(parse_event(msg))
        except ConnectionClosed:
            pass
    return events, ws.close_code


@pytest.fixture(scope="module")
def env():
    with capturing_logs() as capture:
        server = ServerThread(OPTS)
        try:
            with GoodClient(partial(good_stream, server.url, s16(4.5, 0))) as good:
                yield server, good, capture
        finally:
            server.stop()
    assert good.failures == []


@pytest.fixture
def check(env) -> Callable[..., None]:
    """check(messages, code, before=(), words="") runs one bad client and asserts (run_bad_client)."""
    server, good, capture = env
    done_before = good.completed
    yield lambda *a, **kw: run_bad_client(server, capture, *a, **kw)
    # The good client kept streaming while every example of this test was refused.
    good.wait_for_progress(done_before, 15)
    assert not [r for r in capture.snapshot() if r.exc_info], "a traceback was logged"


def run_bad_client(server: ServerThread, capture: Capture, messages: list, code: str,
                   before: tuple[str, ...] = (), words: str = "", pace_s: float = 0.0) -> None:
    n_logs = len(capture.snapshot())
    events, close = asyncio.run(exchange(server.url, messages, pace_s))
    kinds = tuple(e.type for e in events[:-1])
    assert events, f"no event before close {close}"
    last = events[-1]
    assert last.type == "error" and last.code == code, (events, close)
    assert close == CLOSE_OF[code], (events, close)
    assert words in last.message
    assert kinds == before, events
    # One log line per refusal (the library's refusals are logged when the handler notices).
    deadline = time.monotonic() + 5
    while len(capture.snapshot()) == n_logs and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.01)  # a second line, if there were one, would come right after the first
    new = capture.snapshot()[n_logs:]
    lines = [r.getMessage() for r in new]
    assert len(new) == 1 and lines[0].startswith("refused ") and f": {code} (" in lines[0], lines
    assert not any(r.exc_info for r in new)


# -- strategies ---------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
not_an_int = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))


def start_with(**fields: Any) -> str:
    return json.dumps({**START, **fields})


# -- before start ---------------------------------------------------------------------------------------

@FUZZ
@given(text=st.text(max_size=300))
def test_text_that_is_not_a_start_message(check, text: str) -> None:
    try:
        obj = json.loads(text)
        is_start = isinstance(obj, dict) and obj.get("type") == "start"
    except ValueError:
        is_start = False
    if is_start:
        return  # a real start message; the other tests fuzz its fields
    check([text], "bad_request")


@FUZZ
@given(value=json_values)
def test_json_that_is_not_a_start_message(check, value: Any) -> None:
    if isinstance(value, dict) and value.get("type") == "start":
        value["type"] = "stop"
    check([json.dumps(value)], "bad_request", words="first message must be")


@FUZZ
@given(data=st.binary(min_size=0, max_size=2000))
def test_binary_before_start(check, data: bytes) -> None:
    check([data], "bad_request", words=f"binary frame ({len(data)} bytes) before the start message")


@FUZZ
@given(key=st.sampled_from(["sample_rate", "channels"]), value=not_an_int)
def test_wrong_types_in_start(check, key: str, value: Any) -> None:
    check([start_with(**{key: value})], "bad_format", words=f"{key} ")


@FUZZ
@given(rate=st.one_of(st.integers(max_value=7999), st.integers(min_value=192001)),
       channels=st.one_of(st.integers(max_value=0), st.integers(min_value=9)),
       which=st.sampled_from(["rate", "channels"]))
def test_absurd_rates_and_channel_counts(check, rate: int, channels: int, which: str) -> None:
    if which == "rate":
        check([start_with(sample_rate=rate)], "bad_format", words="sample_rate")
    else:
        check([start_with(channels=channels)], "bad_format", words="channels")


@FUZZ
@given(fmt=json_values.filter(lambda v: v not in ("s16le", "f32le")))
def test_unknown_formats(check, fmt: Any) -> None:
    check([start_with(format=fmt)], "bad_format", words="accepted: s16le, f32le")


@FEW
@given(size=st.integers(min_value=MAX_TEXT_BYTES + 1, max_value=3 * MAX_MESSAGE), depth=st.integers(0, 1))
def test_oversized_start_messages(check, size: int, depth: int) -> None:
    # Padding inside a valid-looking start: over 4 KiB is refused before parsing; over the
    # message limit the library refuses it from the frame header (and we still say why).
    text = start_with(pad="x" * size) if depth else "[" * size
    check([text], "too_big")


def test_deeply_nested_start_is_refused_not_crashed(check) -> None:
    check(["[" * 4000 + "]" * 0], "bad_request", words="nested too deeply")
    check(['{"type": "start", "sample_rate": ' + "[" * 2000 + "]" * 2000 + "}"], "bad_request",
          words="nested too deeply")


@FUZZ
@given(stream=st.one_of(st.text(max_size=80).filter(lambda s: not (1 <= len(s) <= 64 and all(
    c.isascii() and (c.isalnum() or c in "_.:-") for c in s))), json_values.filter(lambda v: not isinstance(v, str))))
def test_bad_stream_ids(check, stream: Any) -> None:
    if stream is None:
        return  # null means "pick one for me"
    check([start_with(stream=stream)], "bad_request", words="stream ")


def test_no_start_message_in_time(env) -> None:
    server, _, capture = env
    quick = ServerThread(replace(OPTS, start_timeout_s=0.2))
    try:
        run_bad_client(quick, capture, [], "timeout", words="no message for 0.2 s")
    finally:
        quick.stop()


# -- after start ----------------------------------------------------------------------------------------

def s16(seconds: float, index: int = 1) -> bytes:
    return np.clip(np.round(speech(seconds, index) * 32767), -32768, 32767).astype("<i2").tobytes()


AUDIO_1S = s16(1.0)


@FUZZ
@given(after=st.one_of(st.text(max_size=50), st.binary(min_size=1, max_size=100),
                       st.just(json.dumps({"type": "end"})), st.just(json.dumps(START))))
def test_messages_after_end(check, after: str | bytes) -> None:
    # The stream is complete: its summary is sent, then the error about what followed "end".
    # "end" and what follows arrive together: on a busy machine, sent one by one, the second
    # could come after the server had already closed the finished stream.
    check([start_with(), AUDIO_1S, Together((json.dumps({"type": "end"}), after))], "bad_request",
          before=("ready", "score", "summary"), words="after end")


@FUZZ
@given(text=st.text(max_size=60).filter(lambda t: '"end"' not in t))
def test_unknown_text_after_start(check, text: str) -> None:
    check([start_with(), text], "bad_request", before=("ready",), words="not understood")


@FUZZ
@given(cuts=st.lists(st.integers(1, len(AUDIO_1S) - 1), max_size=12, unique=True), odd_total=st.booleans())
def test_frames_split_anywhere_decode_the_same(env, cuts: list[int], odd_total: bool) -> None:
    """Odd-length s16 messages are legal (the rest of a sample comes next); a stream that
    ends inside a sample gets its summary, then bad_audio."""
    server, _, capture = env
    audio = AUDIO_1S + (b"\x01" if odd_total else b"")
    bounds = [0, *sorted(cuts), len(audio)]
    parts: list[str | bytes] = [audio[a:b] for a, b in zip(bounds, bounds[1:])]
    msgs = [start_with(), *parts, json.dumps({"type": "end"})]
    if odd_total:
        run_bad_client(server, capture, msgs, "bad_audio", before=("ready", "score", "summary"),
                       words="not a whole 2-byte frame")
        return
    events, close = asyncio.run(exchange(server.url, msgs))
    assert close == 1000 and [e.type for e in events] == ["ready", "score", "summary"]
    assert events[1].end_s == 1.0 and events[2].duration_s == 1.0


@FUZZ
@given(pos=st.integers(0, 3999), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       channels=st.integers(1, 3), rate=st.sampled_from([8000, 16000, 44100]))
def test_nan_and_inf_samples(check, pos: int, bad: float, channels: int, rate: int) -> None:
    x = np.zeros((4000, channels), "<f4")
    x[pos, channels - 1] = bad
    check([start_with(format="f32le", channels=channels, sample_rate=rate), x.tobytes()], "bad_audio",
          before=("ready",), words=f"at sample {pos} ")


@FEW
@given(size=st.integers(MAX_MESSAGE + 1, 4 * MAX_MESSAGE), text=st.booleans())
def test_messages_over_max_size(check, size: int, text: bool) -> None:
    # Refused by the library from the frame header; the server still sends the error event.
    big: str | bytes = "x" * size if text else b"\x00" * size
    check([start_with(), WAIT, AUDIO_1S[:3200], big], "too_big", before=("ready",),
          words=f"at most {MAX_MESSAGE} bytes per message")


@FEW
@given(size=st.integers(MAX_TEXT_BYTES + 1, MAX_MESSAGE))
def test_big_text_after_start(check, size: int) -> None:
    check([start_with(), "x" * size], "too_big", before=("ready",), words=f"at most {MAX_TEXT_BYTES} bytes")


@settings(FUZZ, max_examples=4)
@given(size=st.integers(0, 3))
def test_floods_of_tiny_frames(check, size: int) -> None:
    # OPTS allow 100 messages/s after a burst of 200: a flood of 1000 is refused mid-way.
    check([start_with(), WAIT] + [b"\x00" * size] * 1000, "rate_limited", before=("ready",), words="frames per second")


# -- the HTTP handshake ---------------------------------------------------------------------------------

header_names = st.sampled_from(["Host", "Origin", "Authorization", "Upgrade", "Connection", "Sec-WebSocket-Key",
                                "Sec-WebSocket-Version", "Content-Length", "X-Junk"])
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
           ("Sec-WebSocket-Version", "13")]


def http_exchange(port: int, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
            if b"\r\n" in data:
                break
        return data


@settings(FUZZ, max_examples=50)
@given(path=st.sampled_from(["/v1/stream", "/healthz", "/", "/nope", "/v1/stream?token=x"]),
       upgrade=st.booleans(), host=st.sampled_from(["127.0.0.1", "localhost:1", "evil.example", None]),
       headers=st.lists(st.tuples(header_names, header_values), max_size=6))
def test_odd_handshakes_get_an_http_answer_never_a_traceback(env, path, upgrade, host, headers) -> None:
    server, good, capture = env
    lines = [f"GET {path} HTTP/1.1"] + ([f"Host: {host}"] if host else []) + \
        [f"{k}: {v}" for k, v in (UPGRADE if upgrade else []) + headers]
    answer = http_exchange(server.server.port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b""
    assert status != b"500", answer
    assert not [r for r in capture.snapshot() if r.exc_info or r.levelno >= logging.ERROR]
    assert good.failures == []
