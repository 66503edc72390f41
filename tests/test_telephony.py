"""Telephony inputs end to end: Twilio Media Streams, Genesys AudioHook and Asterisk AudioSocket
clients speaking each protocol as documented, real speech through the real codec (8 kHz
mu-law), on a real server on 127.0.0.1; the scores must equal those of the same decoded audio
sent over protocol v1. Every wait is bounded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.batcher import BatcherOptions
from realtime.events import ScoreEvent, parse_event
from realtime.options import DetectorOptions, ServerOptions
from realtime.server import DetectorServer
from realtime.session import LiveDetector
from realtime.telephony.audiosocket import AudioSocketServer
from realtime.telephony.g711 import (
    ALAW_TO_LINEAR,
    ULAW_TO_LINEAR,
    alaw_to_s16,
    ulaw_to_s16,
)
from tests.conftest import speech
from tests.telephony_clients import (
    AudioHookClient,
    audiosocket_call,
    audiosocket_frame,
    s16_to_ulaw,
    to_int16,
    twilio_messages,
)

DET = DetectorOptions(batching=BatcherOptions(max_wait_ms=1.0, max_delay_ms=600_000))
OPTS = ServerOptions(port=0, idle_timeout_s=5.0, start_timeout_s=5.0)
T = 30.0  # bound of every wait on a client or a server (generous: the machine is shared)

ULAW_REFERENCE = [
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956, -23932, -22908, -21884, -20860, -19836,
    -18812, -17788, -16764, -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412, -11900, -11388,
    -10876, -10364, -9852, -9340, -8828, -8316, -7932, -7676, -7420, -7164, -6908, -6652, -6396, -6140,
    -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092, -3900, -3772, -3644, -3516, -3388, -3260, -3132,
    -3004, -2876, -2748, -2620, -2492, -2364, -2236, -2108, -1980, -1884, -1820, -1756, -1692, -1628, -1564,
    -1500, -1436, -1372, -1308, -1244, -1180, -1116, -1052, -988, -924, -876, -844, -812, -780, -748, -716,
    -684, -652, -620, -588, -556, -524, -492, -460, -428, -396, -372, -356, -340, -324, -308, -292, -276,
    -260, -244, -228, -212, -196, -180, -164, -148, -132, -120, -112, -104, -96, -88, -80, -72, -64, -56,
    -48, -40, -32, -24, -16, -8, 0, 32124, 31100, 30076, 29052, 28028, 27004, 25980, 24956, 23932, 22908,
    21884, 20860, 19836, 18812, 17788, 16764, 15996, 15484, 14972, 14460, 13948, 13436, 12924, 12412, 11900,
    11388, 10876, 10364, 9852, 9340, 8828, 8316, 7932, 7676, 7420, 7164, 6908, 6652, 6396, 6140, 5884, 5628,
    5372, 5116, 4860, 4604, 4348, 4092, 3900, 3772, 3644, 3516, 3388, 3260, 3132, 3004, 2876, 2748, 2620,
    2492, 2364, 2236, 2108, 1980, 1884, 1820, 1756, 1692, 1628, 1564, 1500, 1436, 1372, 1308, 1244, 1180,
    1116, 1052, 988, 924, 876, 844, 812, 780, 748, 716, 684, 652, 620, 588, 556, 524, 492, 460, 428, 396,
    372, 356, 340, 324, 308, 292, 276, 260, 244, 228, 212, 196, 180, 164, 148, 132, 120, 112, 104, 96, 88,
    80, 72, 64, 56, 48, 40, 32, 24, 16, 8, 0,
]
ALAW_REFERENCE = [
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736, -7552, -7296, -8064, -7808, -6528, -6272, -7040,
    -6784, -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368, -3776, -3648, -4032, -3904, -3264, -3136,
    -3520, -3392, -22016, -20992, -24064, -23040, -17920, -16896, -19968, -18944, -30208, -29184, -32256,
    -31232, -26112, -25088, -28160, -27136, -11008, -10496, -12032, -11520, -8960, -8448, -9984, -9472,
    -15104, -14592, -16128, -15616, -13056, -12544, -14080, -13568, -344, -328, -376, -360, -280, -264,
    -312, -296, -472, -456, -504, -488, -408, -392, -440, -424, -88, -72, -120, -104, -24, -8, -56, -40,
    -216, -200, -248, -232, -152, -136, -184, -168, -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184,
    -1888, -1824, -2016, -1952, -1632, -1568, -1760, -1696, -688, -656, -752, -720, -560, -528, -624, -592,
    -944, -912, -1008, -976, -816, -784, -880, -848, 5504, 5248, 6016, 5760, 4480, 4224, 4992, 4736, 7552,
    7296, 8064, 7808, 6528, 6272, 7040, 6784, 2752, 2624, 3008, 2880, 2240, 2112, 2496, 2368, 3776, 3648,
    4032, 3904, 3264, 3136, 3520, 3392, 22016, 20992, 24064, 23040, 17920, 16896, 19968, 18944, 30208,
    29184, 32256, 31232, 26112, 25088, 28160, 27136, 11008, 10496, 12032, 11520, 8960, 8448, 9984, 9472,
    15104, 14592, 16128, 15616, 13056, 12544, 14080, 13568, 344, 328, 376, 360, 280, 264, 312, 296, 472,
    456, 504, 488, 408, 392, 440, 424, 88, 72, 120, 104, 24, 8, 56, 40, 216, 200, 248, 232, 152, 136, 184,
    168, 1376, 1312, 1504, 1440, 1120, 1056, 1248, 1184, 1888, 1824, 2016, 1952, 1632, 1568, 1760, 1696,
    688, 656, 752, 720, 560, 528, 624, 592, 944, 912, 1008, 976, 816, 784, 880, 848,
]


class CrcEngine:
    """A window's logit is a checksum of its samples: equal scores mean bit-identical windows."""

    window_samples = 64000
    preferred_batch = 64  # no cap of its own: the batcher's max_batch decides
    model_id = "crc-00000000"
    threshold = 0.5

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        return np.array([(zlib.crc32(np.ascontiguousarray(w).tobytes()) % 99991) / 99991 for w in x], np.float32)


@contextlib.asynccontextmanager
async def serving(engine=None, options: ServerOptions = OPTS,
                  server_class: type[DetectorServer] = DetectorServer) -> AsyncIterator[tuple[DetectorServer, list]]:
    """A server whose every event (all streams) lands in the yielded list, unrounded."""
    events: list = []
    det = LiveDetector(engine or CrcEngine(), DET, sinks=[events.append]).start()
    server = server_class(det, options, flush_s=2.0, drain_s=10.0)
    await server.start()
    try:
        yield server, events
    finally:
        server.shutdown()
        async with asyncio.timeout(T):
            await server.wait_closed()


def ws_url(server: DetectorServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def scores(events: list, stream: str) -> list[tuple]:
    return [(e.seq, e.start_s, e.end_s, e.spoof_probability, e.label, e.alert)
            for e in events if isinstance(e, ScoreEvent) and e.stream == stream]


def of(events: list, stream: str, kind: str) -> list:
    return [e for e in events if e.type == kind and e.stream == stream]


async def v1_stream(server: DetectorServer, pcm: bytes, stream: str, rate: int = 8000) -> None:
    """The same audio over protocol v1 (s16le), for the reference scores."""
    async with connect(ws_url(server, "/v1/stream")) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "format": "s16le", "stream": stream}))
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i:i + 3200])
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(T):
            async for _ in ws:
                pass
    assert ws.close_code == 1000


def call_audio(seconds: float, index: int) -> tuple[bytes, bytes]:
    """Real speech as a telephone network carries it: (mu-law bytes, what they decode to)."""
    x = to_int16(soxr.resample(speech(seconds, index), 16000, 8000))
    mu = s16_to_ulaw(x)
    return mu, ulaw_to_s16(mu)


async def twilio_call(server: DetectorServer, messages: list[str], **kwargs) -> tuple[list[str], int | None]:
    """Send Twilio's messages; returns what the server sent back and its close code."""
    got = []
    async with connect(ws_url(server, "/v1/twilio"), **kwargs) as ws:
        with contextlib.suppress(ConnectionClosed):
            for m in messages:
                await ws.send(m)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(T):
                async for m in ws:
                    got.append(m)
    return got, ws.close_code


# -- G.711 ------------------------------------------------------------------------------------

def test_g711_tables_are_the_reference_bit_for_bit() -> None:
    assert ULAW_TO_LINEAR.tolist() == ULAW_REFERENCE
    assert ALAW_TO_LINEAR.tolist() == ALAW_REFERENCE
    every = bytes(range(256))
    assert np.frombuffer(ulaw_to_s16(every), "<i2").tolist() == ULAW_REFERENCE
    assert np.frombuffer(alaw_to_s16(every), "<i2").tolist() == ALAW_REFERENCE
    # Spot checks from the G.711 tables: mu-law 0xFF and 0x7F are the two zeros; 0x00 the negative peak.
    assert (ULAW_REFERENCE[0xFF], ULAW_REFERENCE[0x7F], ULAW_REFERENCE[0x00], ULAW_REFERENCE[0x80]) == (0, 0, -32124, 32124)
    assert (ALAW_REFERENCE[0xD5], ALAW_REFERENCE[0x55], ALAW_REFERENCE[0xAA], ALAW_REFERENCE[0x2A]) == (8, -8, 32256, -32256)


def test_mu_law_encoder_of_the_test_clients_round_trips() -> None:
    """The clients' encoder inverts the decoder on every code word's own level."""
    assert s16_to_ulaw(ULAW_TO_LINEAR) == bytes(b if b != 0x7F else 0xFF for b in range(256))


# -- Twilio Media Streams ----------------------------------------------------------------------

def test_twilio_call_both_tracks_scores_equal_v1() -> None:
    caller_mu, caller_pcm = call_audio(6.0, 0)
    agent_mu, agent_pcm = call_audio(5.0, 1)
    sid = "CA" + uuid.uuid4().hex

    async def main() -> None:
        async with serving() as (server, events):
            got, close = await twilio_call(server, twilio_messages(sid, {"inbound": caller_mu, "outbound": agent_mu}))
            assert (got, close) == ([], 1000)  # no reply audio, no events back to Twilio
            await v1_stream(server, caller_pcm, "ref-caller")
            await v1_stream(server, agent_pcm, "ref-agent")
        for track, ref, n in (("caller", "ref-caller", 5), ("agent", "ref-agent", 3)):
            stream = f"{sid}:{track}"
            assert len(scores(events, stream)) == n
            assert scores(events, stream) == scores(events, ref)
            (ready,), (summary,) = of(events, stream, "ready"), of(events, stream, "summary")
            assert ready.track == summary.track == track and summary.windows == n and summary.shed == 0
            assert all(e.track == track and e.connection == ready.connection for e in events if e.stream == stream)
            assert summary.spoof_probability == of(events, ref, "summary")[0].spoof_probability
        assert all(e.track is None for e in events if e.stream.startswith("ref-"))

    asyncio.run(main())


@pytest.fixture(scope="module")
def onnx_engine(checkpoints):
    import engines

    return engines.load(checkpoints["specrnet"], engine="onnx", threads=1, max_batch=16)


def test_twilio_call_with_the_real_model_scores_equal_v1(onnx_engine) -> None:
    mu, pcm = call_audio(6.0, 2)
    sid = "CA" + uuid.uuid4().hex

    async def main() -> None:
        async with serving(onnx_engine) as (server, events):
            got, close = await twilio_call(server, twilio_messages(sid, {"inbound": mu}))
            assert (got, close) == ([], 1000)
            await v1_stream(server, pcm, "ref")
        mine = scores(events, f"{sid}:caller")
        assert len(mine) == 5 and mine == scores(events, "ref")
        assert all(0.0 <= s[3] <= 1.0 for s in mine)

    asyncio.run(main())


def test_twilio_token_comes_as_a_custom_parameter() -> None:
    mu, _ = call_audio(4.5, 0)
    opts = replace(OPTS, token="s3cret")

    async def main() -> None:
        async with serving(options=opts) as (server, events):
            ok, ok_close = await twilio_call(server, twilio_messages("CA" + "1" * 32, {"inbound": mu}, token="s3cret"))
            assert (ok, ok_close) == ([], 1000)
            for token in (None, "wrong"):
                got, close = await twilio_call(server, twilio_messages("CA" + "2" * 32, {"inbound": mu}, token=token))
                assert close == 1008
                (err,) = [parse_event(m) for m in got]
                assert err.code == "unauthorized" and 'name="token"' in err.message
        assert len(of(events, "CA" + "1" * 32 + ":caller", "summary")) == 1
        assert not [e for e in events if e.stream.startswith("CA2")]  # refused before any stream

    asyncio.run(main())


def twilio_signature(auth_token: str, url: str) -> str:
    """Twilio's documented scheme: base64(HMAC-SHA1(auth token, URL + sorted POST params)); none here."""
    return base64.b64encode(hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def test_twilio_signature_is_checked_at_the_handshake() -> None:
    mu, _ = call_audio(4.5, 0)
    opts = replace(OPTS, twilio_auth_token="12345678901234567890123456789012")

    async def main() -> None:
        async with serving(options=opts) as (server, events):
            host = f"127.0.0.1:{server.port}"
            for headers in ({}, {"X-Twilio-Signature": twilio_signature("another-token", f"wss://{host}/v1/twilio")}):
                with pytest.raises(InvalidStatus) as e:
                    await twilio_call(server, [], additional_headers=headers)
                assert e.value.response.status_code == 403
            good = {"X-Twilio-Signature": twilio_signature(opts.twilio_auth_token, f"wss://{host}/v1/twilio")}
            got, close = await twilio_call(server, twilio_messages("CA" + "3" * 32, {"inbound": mu}),
                                           additional_headers=good)
            assert (got, close) == ([], 1000)
            assert server.refused == 2

    asyncio.run(main())


@pytest.mark.parametrize("mutate, code, close, words", [
    (lambda m: m[:1] + ['{"event": "media"}'] + m[1:], "bad_request", 1008, "before start; expected connected"),
    (lambda m: [m[0], json.dumps({**json.loads(m[1]), "start": {**json.loads(m[1])["start"], "mediaFormat": {
        "encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}}})] + m[2:], "bad_format", 1003, "audio/x-mulaw"),
    (lambda m: m[:3] + [json.dumps({"event": "media", "media": {"track": "inbound", "payload": "!!"}})], "bad_audio",
     1003, "base64"),
    (lambda m: m[:3] + [json.dumps({"event": "media", "media": {"track": "outbound", "payload": ""}})], "bad_request",
     1008, "accepted: inbound"),
    (lambda m: m[:3] + ['{"event": "clear"}'], "bad_request", 1008, "accepted after start: media, mark, dtmf, stop"),
    (lambda m: m[:3] + ["[1, 2]"], "bad_request", 1008, "JSON objects"),
])
def test_twilio_mistakes_are_refused_while_another_call_goes_on(mutate, code, close, words, caplog) -> None:
    good_mu, good_pcm = call_audio(6.0, 0)
    bad_mu, _ = call_audio(4.5, 1)
    good_sid, bad_sid = "CA" + "a" * 32, "CA" + "b" * 32

    async def main() -> None:
        async with serving() as (server, events):
            good = asyncio.create_task(twilio_call(server, twilio_messages(good_sid, {"inbound": good_mu})))
            got, got_close = await twilio_call(server, mutate(twilio_messages(bad_sid, {"inbound": bad_mu})))
            assert got_close == close
            (err,) = [parse_event(m) for m in got]
            assert err.code == code and words in err.message
            assert await good == ([], 1000)
            await v1_stream(server, good_pcm, "ref")
        assert scores(events, f"{good_sid}:caller") == scores(events, "ref") and len(scores(events, "ref")) == 5
        bad = [e for e in events if e.stream.startswith(bad_sid)]
        if bad:  # refused mid-call: the error and the summary are recorded, with the track
            assert [e.type for e in bad if e.type != "score"] == ["ready", "error", "summary"]
            assert all(e.track == "caller" for e in bad)

    with caplog.at_level(logging.WARNING, logger="realtime"):
        asyncio.run(main())
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(refusals) == 1 and f": {code} (" in refusals[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


# -- Genesys AudioHook -------------------------------------------------------------------------

async def audiohook_session(server: DetectorServer, client: AudioHookClient, conversation: str,
                            channels_audio: list[bytes], *, frame: int = 1600, headers: dict | None = None,
                            ping: bool = True) -> list[dict]:
    """open, audio frames (and a ping half-way), close; returns every server message."""
    replies: list[dict] = []

    async def reply(ws) -> dict:
        async with asyncio.timeout(T):
            r = json.loads(await ws.recv())
        replies.append(r)
        client.received(r)
        return r

    hdrs = {"Audiohook-Organization-Id": str(uuid.uuid4()), "Audiohook-Correlation-Id": str(uuid.uuid4()),
            "Audiohook-Session-Id": client.id, "X-API-KEY": "key", **(headers or {})}
    async with connect(ws_url(server, "/v1/audiohook"), additional_headers=hdrs) as ws:
        await ws.send(client.open(conversation))
        if (await reply(ws))["type"] != "opened":
            return replies
        n = len(channels_audio[0]) if channels_audio else 0
        for i in range(0, n, frame):
            await ws.send(client.audio([c[i:i + frame] for c in channels_audio]))
            if ping and i <= n // 2 < i + frame:
                await ws.send(client.message("ping", {"rtt": "PT0.05S"}))
                await reply(ws)
        await ws.send(client.message("close", {"reason": "end"}))
        await reply(ws)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(T):
                async for m in ws:
                    replies.append(json.loads(m))
    return replies


def test_audiohook_session_per_channel_scores_equal_v1() -> None:
    ext_mu, ext_pcm = call_audio(6.0, 0)
    int_mu, int_pcm = call_audio(6.0, 1)
    conversation = str(uuid.uuid4())
    client = AudioHookClient(str(uuid.uuid4()))

    async def main() -> None:
        async with serving() as (server, events):
            replies = await audiohook_session(server, client, conversation, [ext_mu, int_mu])
            assert [r["type"] for r in replies] == ["opened", "pong", "closed"]
            assert [r["seq"] for r in replies] == [1, 2, 3] and [r["clientseq"] for r in replies] == [1, 2, 3]
            assert all(r["version"] == "2" and r["id"] == client.id for r in replies)
            assert replies[0]["parameters"]["media"] == [
                {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}]
            await v1_stream(server, ext_pcm, "ref-ext")
            await v1_stream(server, int_pcm, "ref-int")
        for track, ref in (("caller", "ref-ext"), ("agent", "ref-int")):
            stream = f"{conversation}:{track}"
            assert len(scores(events, stream)) == 5 and scores(events, stream) == scores(events, ref)
            assert of(events, stream, "summary")[0].track == track

    asyncio.run(main())


def test_audiohook_probe_and_mono_offer() -> None:
    """A connection probe (conversation id all zeros) is answered without streams; an offer of
    the external channel alone gives one stream."""
    mu, pcm = call_audio(4.5, 0)

    async def main() -> None:
        async with serving() as (server, events):
            probe = AudioHookClient(str(uuid.uuid4()))
            replies = await audiohook_session(server, probe, "00000000-0000-0000-0000-000000000000", [], ping=False)
            assert [r["type"] for r in replies] == ["opened", "closed"]
            mono = AudioHookClient(str(uuid.uuid4()), channels=("external",))
            conversation = str(uuid.uuid4())
            replies = await audiohook_session(server, mono, conversation, [mu])
            assert replies[0]["parameters"]["media"][0]["channels"] == ["external"]
            await v1_stream(server, pcm, "ref")
        assert not [e for e in events if e.stream.startswith("00000000")]
        assert scores(events, f"{conversation}:caller") == scores(events, "ref") and len(scores(events, "ref")) == 2
        assert not [e for e in events if e.stream == f"{conversation}:agent"]

    asyncio.run(main())


def test_audiohook_key_and_sequence_mistakes_get_a_disconnect(caplog) -> None:
    mu, _ = call_audio(4.5, 0)

    async def main() -> None:
        async with serving(options=replace(OPTS, token="key")) as (server, events):
            wrong = await audiohook_session(server, AudioHookClient(str(uuid.uuid4())), str(uuid.uuid4()), [mu],
                                     headers={"X-API-KEY": "nope"})
            assert [r["type"] for r in wrong] == ["disconnect"]
            assert wrong[0]["parameters"]["reason"] == "unauthorized" and "X-API-KEY" in wrong[0]["parameters"]["info"]
            # A message out of sequence, mid-call: disconnect with the reason, the call's audio still scored.
            client = AudioHookClient(str(uuid.uuid4()))
            conversation = str(uuid.uuid4())
            async with connect(ws_url(server, "/v1/audiohook"),
                               additional_headers={"Audiohook-Session-Id": client.id, "X-API-KEY": "key"}) as ws:
                await ws.send(client.open(conversation))
                client.received(json.loads(await ws.recv()))
                for i in range(0, len(mu), 1600):
                    await ws.send(client.audio([mu[i:i + 1600], mu[i:i + 1600]]))
                client.seq += 1  # skips one
                await ws.send(client.message("ping", {}))
                async with asyncio.timeout(T):
                    last = json.loads(await ws.recv())
                with contextlib.suppress(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), T)
            assert ws.close_code == 1008
            assert last["type"] == "disconnect" and last["parameters"]["reason"] == "error"
            assert "seq 3 out of order; expected 2" in last["parameters"]["info"]
        for track in ("caller", "agent"):
            mine = [e.type for e in events if e.stream == f"{conversation}:{track}" and e.type != "score"]
            assert mine == ["ready", "error", "summary"]
            assert of(events, f"{conversation}:{track}", "summary")[0].windows == 2

    with caplog.at_level(logging.WARNING, logger="realtime"):
        asyncio.run(main())
    assert len([r for r in caplog.records if r.getMessage().startswith("refused ")]) == 2
    assert not [r for r in caplog.records if r.exc_info]


# -- Asterisk AudioSocket ----------------------------------------------------------------------

async def audiosocket_send(server: DetectorServer, data: bytes) -> bytes:
    """Write ``data`` as Asterisk would, then read until the server closes; returns what it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(T):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_audiosocket_calls_scores_equal_v1() -> None:
    a = to_int16(soxr.resample(speech(6.0, 0), 16000, 8000)).astype("<i2").tobytes()
    b = to_int16(soxr.resample(speech(4.5, 1), 16000, 8000)).astype("<i2").tobytes()
    ida, idb = uuid.uuid4(), uuid.uuid4()

    async def main() -> None:
        async with serving(server_class=AudioSocketServer) as (server, events):
            got = await asyncio.gather(audiosocket_send(server, audiosocket_call(ida, a)),
                                       audiosocket_send(server, audiosocket_call(idb, b)))
            assert got == [b"", b""]  # nothing back: the channel hears silence
        async with serving() as (ref_server, ref_events):
            await v1_stream(ref_server, a, "ref-a")
            await v1_stream(ref_server, b, "ref-b")
        assert len(scores(events, f"{ida}:caller")) == 5 and len(scores(events, f"{idb}:caller")) == 2
        assert scores(events, f"{ida}:caller") == scores(ref_events, "ref-a")
        assert scores(events, f"{idb}:caller") == scores(ref_events, "ref-b")
        assert of(events, f"{ida}:caller", "summary")[0].track == "caller"

    asyncio.run(main())


@pytest.mark.parametrize("frames, code", [
    (audiosocket_frame(0x10, b"\0\0"), "bad_request"),  # audio before the UUID
    (audiosocket_frame(0x01, b"short"), "bad_request"),
    (audiosocket_frame(0x01, uuid.uuid4().bytes) + audiosocket_frame(0x10, b"\0\0\0"), "bad_audio"),
    (audiosocket_frame(0x01, uuid.uuid4().bytes) + audiosocket_frame(0x42, b""), "bad_request"),
    (audiosocket_frame(0x01, uuid.uuid4().bytes) + audiosocket_frame(0x10, b"\0\0") + audiosocket_frame(0x12, b"\0\0"),
     "bad_format"),
])
def test_audiosocket_mistakes_close_with_one_log_line(frames, code, caplog) -> None:
    good = to_int16(soxr.resample(speech(4.5, 0), 16000, 8000)).astype("<i2").tobytes()
    call = uuid.uuid4()

    async def main() -> None:
        async with serving(server_class=AudioSocketServer) as (server, events):
            ok = asyncio.create_task(audiosocket_send(server, audiosocket_call(call, good)))
            assert await audiosocket_send(server, frames) == b""
            assert await ok == b""
        assert len(scores(events, f"{call}:caller")) == 2

    with caplog.at_level(logging.WARNING, logger="realtime"):
        asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(refusals) == 1 and f": {code} (" in refusals[0]
    assert "accepted" in refusals[0] or "expected" in refusals[0]  # names what is
    assert not [r for r in caplog.records if r.exc_info]


def test_audiosocket_listener_beyond_loopback_needs_insecure() -> None:
    from realtime.access import InsecureBindError

    async def main() -> None:
        det = LiveDetector(CrcEngine(), DET)
        with pytest.raises(InsecureBindError, match="carries no credentials"):
            await AudioSocketServer(det, replace(OPTS, host="0.0.0.0")).start()

    asyncio.run(main())


def test_audiosocket_track_names_the_party() -> None:
    pcm = to_int16(soxr.resample(speech(4.5, 0), 16000, 8000)).astype("<i2").tobytes()
    call = uuid.uuid4()

    async def main() -> None:
        async with serving(options=replace(OPTS, audiosocket_track="mixed"),
                           server_class=AudioSocketServer) as (server, events):
            assert await audiosocket_send(server, audiosocket_call(call, pcm)) == b""
        (summary,) = of(events, f"{call}:mixed", "summary")
        assert summary.track == "mixed" and summary.windows == 2

    asyncio.run(main())


def test_cli_audiosocket_listener_prints_the_calls_events(checkpoints) -> None:
    """`realtime-detect --input audiosocket --port 0 --json`: a call in, its events on stdout, SIGTERM ends it."""
    import re
    import subprocess
    import sys
    import threading

    from tests.conftest import REPO

    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "--input", "audiosocket", "--port", "0", "--json",
                             "--model", str(checkpoints["specrnet"]), "--engine", "onnx"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port: list[int] = []
        found = threading.Event()

        def drain() -> None:
            for line in proc.stderr:
                m = re.search(r"listening on tcp://[^ ]*:(\d+) \(AudioSocket\)", line)
                if m:
                    port.append(int(m.group(1)))
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        assert found.wait(120) and port, "the listener did not start"
        pcm = to_int16(soxr.resample(speech(4.5, 0), 16000, 8000)).astype("<i2").tobytes()
        call = uuid.uuid4()

        async def send() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port[0])
            writer.write(audiosocket_call(call, pcm))
            async with asyncio.timeout(T):
                got = await reader.read()
            writer.close()
            return got

        assert asyncio.run(send()) == b""
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["ready", "score", "score", "summary"]
    assert all(e["stream"] == f"{call}:caller" and e["track"] == "caller" for e in events)
    assert proc.returncode == 0


def test_shutdown_mid_call_scores_what_arrived_and_closes_1001() -> None:
    mu, _ = call_audio(6.0, 0)
    sid = "CA" + "d" * 32
    msgs = twilio_messages(sid, {"inbound": mu})

    async def main() -> None:
        async with serving() as (server, events):
            async with connect(ws_url(server, "/v1/twilio")) as ws:
                for m in msgs[:2 + 250]:  # connected, start, 5 s of the 6: no stop
                    await ws.send(m)
                # Wait (bounded) until what was sent is scored but the last window (its end is held in
                # the resampler until the stream ends), then SIGTERM's path while the call is open.
                async with asyncio.timeout(T):
                    while len(scores(events, f"{sid}:caller")) < 2:
                        await asyncio.sleep(0.01)
                server.shutdown()
                with contextlib.suppress(ConnectionClosed):
                    async with asyncio.timeout(T):
                        async for _ in ws:
                            pass
            assert ws.close_code == 1001
        (summary,) = of(events, f"{sid}:caller", "summary")
        assert summary.duration_s == 5.0 and summary.windows == 3 and summary.track == "caller"

    asyncio.run(main())


def test_a_call_over_capacity_is_busy() -> None:
    mu, _ = call_audio(4.5, 0)
    first = twilio_messages("CA" + "e" * 32, {"inbound": mu})

    async def main() -> None:
        async with serving(options=replace(OPTS, max_connections=1)) as (server, events):
            async with connect(ws_url(server, "/v1/twilio")) as ws:
                for m in first[:-1]:  # the call goes on: no stop yet
                    await ws.send(m)
                async with asyncio.timeout(T):
                    while not of(events, "CA" + "e" * 32 + ":caller", "ready"):
                        await asyncio.sleep(0.01)
                # The handshake itself is refused (HTTP 503): one connection is the limit.
                with pytest.raises(InvalidStatus) as e:
                    await twilio_call(server, twilio_messages("CA" + "f" * 32, {"inbound": mu}))
                assert e.value.response.status_code == 503
                await ws.send(first[-1])
                with contextlib.suppress(ConnectionClosed):
                    async with asyncio.timeout(T):
                        async for _ in ws:
                            pass
            assert ws.close_code == 1000

    asyncio.run(main())


def test_a_bug_in_a_call_ends_that_call_cleanly(monkeypatch, caplog) -> None:
    """An unexpected exception (a bug of ours) is logged with its traceback, the call gets
    ``internal`` and 1011, what arrived is scored, and the server goes on serving."""
    from realtime.telephony import twilio

    mu, _ = call_audio(4.5, 0)
    real = twilio.parse_media
    calls = {"n": 0}

    def flaky(data, tracks):
        calls["n"] += 1
        if calls["n"] == 100:
            raise RuntimeError("boom")
        return real(data, tracks)

    monkeypatch.setattr(twilio, "parse_media", flaky)

    async def main() -> None:
        async with serving() as (server, events):
            got, close = await twilio_call(server, twilio_messages("CA" + "9" * 32, {"inbound": mu}))
            assert close == 1011 and parse_event(got[0]).code == "internal"
            assert await twilio_call(server, twilio_messages("CA" + "8" * 32, {"inbound": mu})) == ([], 1000)
            assert server._active == 0
        (summary,) = of(events, "CA" + "9" * 32 + ":caller", "summary")
        assert summary.duration_s == pytest.approx(99 * 0.02)

    with caplog.at_level(logging.WARNING, logger="realtime"):
        asyncio.run(main())
    assert len([r for r in caplog.records if r.exc_info]) == 1


@pytest.mark.parametrize("opts, data, code", [
    (replace(OPTS, start_timeout_s=0.5), b"", "timeout"),  # no UUID in time
    (replace(OPTS, idle_timeout_s=0.5), audiosocket_frame(0x01, uuid.uuid4().bytes), "timeout"),  # then silence
    (replace(OPTS, max_messages_per_s=50.0),  # a flood of tiny frames: past the 2-s burst of 100
     audiosocket_frame(0x01, uuid.uuid4().bytes) + audiosocket_frame(0x10, b"\0\0") * 500, "rate_limited"),
])
def test_audiosocket_limits(opts, data, code, caplog) -> None:
    async def main() -> None:
        async with serving(options=opts, server_class=AudioSocketServer) as (server, events):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(data)  # and the connection stays open: the server must end it
            async with asyncio.timeout(T):
                assert await reader.read() == b""
            writer.close()

    with caplog.at_level(logging.WARNING, logger="realtime"):
        asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(refusals) == 1 and f": {code} (" in refusals[0], refusals
