"""Property-based tests of the telephony protocols, as tests/test_protocol_fuzz.py does for v1.

The parsers first (any JSON: a value or a ProtocolError naming what is accepted, never another
exception), then a real server (fake engine) in a thread of its own with the Twilio and
AudioHook endpoints and an AudioSocket listener, while a good Twilio call streams real speech
over and over. Each example breaks a protocol; the properties: the bad client gets the
protocol's refusal (or, for a message that happens to be valid, a normal end), at most one
``refused`` log line and never a traceback, and the good calls all complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.batcher import BatcherOptions
from realtime.events import parse_event
from realtime.options import DetectorOptions, ServerOptions
from realtime.protocol import ProtocolError
from realtime.server import DetectorServer
from realtime.session import LiveDetector
from realtime.telephony import audiohook, twilio
from realtime.telephony.audiosocket import AudioSocketServer
from tests.good_client import GoodClient
from tests.telephony_clients import AudioHookClient, audiosocket_frame, twilio_messages
from tests.test_protocol_fuzz import capturing_logs, json_values
from tests.test_session import FakeEngine
from tests.test_telephony import call_audio

OPTS = ServerOptions(port=0, idle_timeout_s=3.0, start_timeout_s=3.0, max_message_bytes=64 * 1024,
                     max_messages_per_s=2000.0)
DET = DetectorOptions(batching=BatcherOptions(max_wait_ms=1.0, max_delay_ms=600_000))
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PARSERS = settings(max_examples=150, deadline=None, derandomize=True)
T = 20.0
CLOSE_OF = {"bad_request": 1008, "bad_format": 1003, "bad_audio": 1003, "too_big": 1009, "unauthorized": 1008,
            "timeout": 1008, "rate_limited": 1008}

START = json.loads(twilio_messages("CA" + "0" * 32, {"inbound": b"\xff" * 160})[1])
objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


# -- parsers ------------------------------------------------------------------------------------

def _only_protocol_errors(f, *args) -> Any:
    try:
        return f(*args)
    except ProtocolError as e:
        assert e.code in CLOSE_OF and e.close == CLOSE_OF[e.code] and e.message and "\n" not in e.message
        return None


@PARSERS
@given(start=objects, replace_key=st.sampled_from(["callSid", "streamSid", "tracks", "mediaFormat",
                                                    "customParameters"]), value=json_values)
def test_twilio_start_parser(start: dict, replace_key: str, value: Any) -> None:
    _only_protocol_errors(twilio.parse_start, {"event": "start", "start": start})
    got = _only_protocol_errors(twilio.parse_start, {**START, "start": {**START["start"], replace_key: value}})
    if got is not None:
        assert got.call_sid and set(got.tracks) <= {"inbound", "outbound"}


@PARSERS
@given(media=json_values, track=json_values, payload=json_values)
def test_twilio_media_parser(media: Any, track: Any, payload: Any) -> None:
    _only_protocol_errors(twilio.parse_media, {"event": "media", "media": media}, ("inbound",))
    got = _only_protocol_errors(twilio.parse_media, {"media": {"track": track, "payload": payload}},
                                ("inbound", "outbound"))
    if got is not None:
        assert got[0] in ("caller", "agent") and isinstance(got[1], bytes)


@PARSERS
@given(message=objects, field_=st.sampled_from(["version", "type", "seq", "serverseq", "id", "position",
                                                "parameters"]), value=json_values, media=json_values)
def test_audiohook_parsers(message: dict, field_: str, value: Any, media: Any) -> None:
    sid = "5f950fab-f4a4-4956-a3c9-620479af5a5c"
    _only_protocol_errors(audiohook.check_message, message, sid, 0, 0)
    good = {"version": "2", "id": sid, "type": "ping", "seq": 1, "serverseq": 0, "position": "PT0S", "parameters": {}}
    _only_protocol_errors(audiohook.check_message, {**good, field_: value}, sid, 0, 0)
    chosen = _only_protocol_errors(audiohook.choose_media, media)
    if chosen is not None:
        assert chosen["format"] == "PCMU" and set(chosen["channels"]) <= set(audiohook.CHANNELS)


# -- a real server ------------------------------------------------------------------------------

class Servers:
    """The WebSocket server and an AudioSocket listener on one event loop, in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.servers: list[DetectorServer] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(T), "servers did not start"
        self.ws, self.tcp = self.servers

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            for cls in (DetectorServer, AudioSocketServer):
                det = LiveDetector(FakeEngine(), DET).start()
                server = cls(det, OPTS, flush_s=1.0, drain_s=2.0)
                await server.start()
                self.servers.append(server)
            self.ready.set()
            await asyncio.gather(*(s.wait_closed() for s in self.servers))

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        for s in self.servers:
            self.loop.call_soon_threadsafe(s.shutdown)
        self.thread.join(T)


async def good_call(port: int, mu: bytes) -> str | None:
    """One Twilio call of ``mu`` (mu-law speech, 4.5 s) at ~10x real time; what went wrong, or
    None (the good client's session)."""
    async with connect(f"ws://127.0.0.1:{port}/v1/twilio", close_timeout=2) as ws:
        for k, m in enumerate(twilio_messages("CA" + uuid.uuid4().hex, {"inbound": mu})):
            await ws.send(m)
            if k % 10 == 0:
                await asyncio.sleep(0.002)
        extra = []
        async with asyncio.timeout(T):
            async for m in ws:
                extra.append(m)
    if ws.close_code != 1000 or extra:
        return f"close {ws.close_code}, {extra[:2]}"
    return None


@pytest.fixture(scope="module")
def env():
    with capturing_logs() as capture:
        servers = Servers()
        try:
            with GoodClient(partial(good_call, servers.ws.port, call_audio(4.5, 0)[0])) as good:
                yield servers, good, capture
        finally:
            servers.stop()
    assert good.failures == []


@pytest.fixture
def check(env):
    """Yields (servers, mark): ``mark()`` (once per example) returns a function listing the
    refusal lines logged since. Afterwards the good call still completes, no traceback anywhere."""
    servers, good, capture = env
    done_before = good.completed

    def mark():
        n = len(capture.snapshot())
        return lambda: [r.getMessage() for r in capture.snapshot()[n:] if r.getMessage().startswith("refused ")]

    yield servers, mark
    good.wait_for_progress(done_before, T)
    assert not [r for r in capture.snapshot() if r.exc_info], "a traceback was logged"


def wait_for(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)


async def _twilio_exchange(port: int, messages: list) -> tuple[list[str], int | None]:
    got = []
    async with connect(f"ws://127.0.0.1:{port}/v1/twilio", close_timeout=2, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            for m in messages:
                await ws.send(m)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(T):
                async for m in ws:  # a loop, not a comprehension: what came before the close is kept
                    got.append(m)
    return got, ws.close_code


def _refused_or_fine(got: list[str], close: int | None, refusals, expect_refusal: bool | None = None) -> None:
    if close == 1000:
        assert got == [] and expect_refusal is not True
        wait_for(lambda: False, 0.05)
        assert refusals() == []
        return
    (err,) = [parse_event(m) for m in got]
    assert err.type == "error" and close == CLOSE_OF[err.code], (err, close)
    wait_for(lambda: bool(refusals()))
    lines = refusals()
    assert len(lines) == 1 and f": {err.code} (" in lines[0], lines


@FUZZ
@given(text=st.one_of(st.text(max_size=200), json_values.map(json.dumps), objects.map(json.dumps)))
def test_twilio_any_text_instead_of_start(check, text: str) -> None:
    servers, mark = check
    refusals = mark()
    got, close = asyncio.run(_twilio_exchange(servers.ws.port, [twilio_messages("CA1", {"inbound": b""})[0], text]))
    # Nothing valid follows: a refusal (or, for text that is a valid start, the idle timeout).
    assert close != 1000
    _refused_or_fine(got, close, refusals)


@FUZZ
@given(message=st.one_of(objects.map(lambda d: {"event": "media", **d}), objects,
                         st.binary(max_size=300), st.text(max_size=100)))
def test_twilio_any_message_mid_call(check, message: Any) -> None:
    servers, mark = check
    refusals = mark()
    msgs = twilio_messages("CA" + uuid.uuid4().hex, {"inbound": b"\xff" * 800})
    bad = message if isinstance(message, (bytes, str)) else json.dumps(message)
    got, close = asyncio.run(_twilio_exchange(servers.ws.port, msgs[:4] + [bad] + msgs[4:]))
    _refused_or_fine(got, close, refusals)


async def _audiohook_exchange(port: int, first: str | bytes, key: str | None = None) -> tuple[list[dict], int | None]:
    got = []
    headers = {"Audiohook-Session-Id": str(uuid.uuid4())} | ({"X-API-KEY": key} if key else {})
    async with connect(f"ws://127.0.0.1:{port}/v1/audiohook", additional_headers=headers, close_timeout=2) as ws:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(first)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(T):
                async for m in ws:
                    got.append(json.loads(m))
    return got, ws.close_code


@FUZZ
@given(first=st.one_of(objects.map(json.dumps), json_values.map(json.dumps), st.binary(min_size=1, max_size=200),
                       st.builds(lambda f, v: (f, v), st.sampled_from(["version", "seq", "serverseq", "position",
                                                                        "parameters", "type"]), json_values)))
def test_audiohook_any_first_message_gets_a_disconnect(check, first: Any) -> None:
    servers, mark = check
    refusals = mark()
    if isinstance(first, tuple):  # a valid open with one field broken
        c = AudioHookClient(str(uuid.uuid4()))
        message = {**json.loads(c.open()), first[0]: first[1]}
        first = json.dumps(message)
    got, close = asyncio.run(_audiohook_exchange(servers.ws.port, first))
    (reply,) = got
    assert reply["type"] == "disconnect" and reply["parameters"]["reason"] == "error", reply
    code = reply["parameters"]["info"].split(":")[0]
    assert close == CLOSE_OF[code]
    wait_for(lambda: bool(refusals()))
    assert len(refusals()) == 1


@FUZZ
@given(data=st.one_of(st.binary(max_size=400),
                      st.builds(lambda kind, payload: audiosocket_frame(0x01, uuid.uuid4().bytes) +
                                audiosocket_frame(kind, payload),
                                st.integers(0, 255), st.binary(max_size=64))))
def test_audiosocket_any_bytes(check, data: bytes) -> None:
    servers, mark = check
    refusals = mark()
    with socket.create_connection(("127.0.0.1", servers.tcp.port), timeout=T) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # then nothing more: the server reads EOF, or refuses first
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(4096):
                got += chunk
    assert got == b""  # AudioSocket is never answered
    wait_for(lambda: bool(refusals()), 0.2)
    assert len(refusals()) <= 1
