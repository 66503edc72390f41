"""Raw PCM decoding across arbitrary read boundaries, and the stdin source through a real pipe."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import numpy as np
import pytest
import soxr
from hypothesis import given
from hypothesis import strategies as st

from realtime.errors import AudioFormatError
from realtime.pcm import PcmDecoder
from realtime.sources import StdinSource
from tests.conftest import speech


def s16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


def speech_8k(seconds: float) -> np.ndarray:
    return soxr.resample(speech(seconds, 0), 16000, 8000).astype(np.float32)


@given(st.lists(st.integers(0, 37), max_size=40), st.sampled_from(["s16le", "f32le"]), st.integers(1, 3))
def test_decoding_does_not_depend_on_where_reads_end(cuts: list[int], fmt: str, channels: int) -> None:
    rng = np.random.default_rng(len(cuts))
    x = rng.uniform(-1, 1, (50, channels)).astype(np.float32)
    data = s16(x) if fmt == "s16le" else x.astype("<f4").tobytes()
    whole = PcmDecoder(fmt, channels).decode(data)
    dec = PcmDecoder(fmt, channels)
    parts, pos = [], 0
    for c in cuts:
        parts.append(dec.decode(data[pos:pos + c]))
        pos = min(len(data), pos + c)
    parts.append(dec.decode(data[pos:]))
    got = np.concatenate(parts)
    assert got.dtype == np.float32 and got.shape == (50, channels)
    np.testing.assert_array_equal(got, whole)
    assert dec.pending_bytes == 0 and dec.frames == 50
    if fmt == "f32le":
        np.testing.assert_array_equal(whole, x)
    else:
        np.testing.assert_allclose(whole, x, atol=2 / 32768)  # encoded x32767, decoded /32768


def test_s16_scaling_and_partial_frame_kept() -> None:
    dec = PcmDecoder("s16le", 2)
    out = dec.decode(np.array([-32768, 16384, 0], "<i2").tobytes())  # 1.5 frames
    np.testing.assert_array_equal(out, [[-1.0, 0.5]])
    assert dec.pending_bytes == 2
    np.testing.assert_array_equal(dec.decode(np.array([32767], "<i2").tobytes()), [[0.0, 32767 / 32768]])


@pytest.mark.parametrize("args, match", [
    (("s24le", 1), "format 's24le' not accepted; accepted: s16le, f32le"),
    (("s16le", 0), "channels 0 not accepted; accepted: 1..32"),
])
def test_decoder_rejects_bad_formats(args: tuple, match: str) -> None:
    with pytest.raises(AudioFormatError, match=match):
        PcmDecoder(*args)


def test_source_rejects_bad_rate() -> None:
    with pytest.raises(AudioFormatError, match="100 Hz not accepted; accepted: 4000..384000"):
        StdinSource("s16le", 100)
    with pytest.raises(ValueError, match="integer"):
        StdinSource("s16le", 8000.5)  # type: ignore[arg-type]


async def collect(src: StdinSource) -> list[np.ndarray]:
    out = []
    async for chunk, rate in src:
        assert rate == src.sample_rate and chunk.dtype == np.float32
        out.append(chunk)
    return out


def test_pipe_with_odd_writes_delivers_every_frame() -> None:
    x = speech_8k(3.0)
    data = s16(x)
    r, w = os.pipe()

    def produce() -> None:
        with os.fdopen(w, "wb", buffering=0) as f:
            pos = 0
            for n in (1, 7, 3001, 2, 999, 4095):
                f.write(data[pos:pos + n])
                pos += n
                time.sleep(0.005)
            f.write(data[pos:])

    threading.Thread(target=produce, daemon=True).start()
    with os.fdopen(r, "rb") as f:
        src = StdinSource("s16le", 8000, file=f, chunk_s=0.1)
        chunks = asyncio.run(collect(src))
    got = np.concatenate(chunks)[:, 0]
    assert got.shape == x.shape and src.dropped_bytes == 0
    np.testing.assert_allclose(got, x, atol=2 / 32768)
    assert max(len(c) for c in chunks) <= 800  # never more than chunk_s


def test_truncated_last_frame_is_dropped_and_counted() -> None:
    data = np.zeros(10, "<f4").tobytes() + b"\x00\x00\x80"
    src = StdinSource("f32le", 16000, channels=2, file=io.BufferedReader(io.BytesIO(data)))
    chunks = asyncio.run(collect(src))
    assert sum(len(c) for c in chunks) == 5 and src.dropped_bytes == 3


def test_stdin_source_through_a_session_gives_events() -> None:
    from realtime.batcher import BatcherOptions
    from realtime.events import ScoreEvent, SummaryEvent
    from realtime.options import DetectorOptions
    from realtime.session import LiveDetector
    from tests.test_session import FakeEngine

    data = s16(speech_8k(5.0))
    events: list = []

    async def main() -> None:
        det = LiveDetector(FakeEngine(0.3), DetectorOptions(batching=BatcherOptions(max_wait_ms=0)), sinks=[events.append]).start()
        src = StdinSource("s16le", 8000, file=io.BufferedReader(io.BytesIO(data)))
        s = det.open_stream(src.stream_id, src.sample_rate, src.channels, policy="block")
        await s.run(src)
        await det.aclose()

    asyncio.run(main())
    assert [e.end_s for e in events if isinstance(e, ScoreEvent)] == [4.0, 4.5, 5.0]
    assert isinstance(events[-1], SummaryEvent) and events[-1].stream == "stdin"
    assert events[-1].duration_s == 5.0


def test_cli_reads_s16le_8k_from_a_pipe(checkpoints) -> None:
    """`realtime-detect --input - --format s16le --rate 8000` in a subprocess, fed through a pipe."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    data = s16(speech_8k(6.0))
    proc = subprocess.run(
        [sys.executable, "-m", "realtime.cli", "--input", "-", "--format", "s16le", "--rate", "8000", "--json",
         "--model", str(checkpoints["specrnet"]), "--engine", "onnx"],
        cwd=REPO, input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    scores = [e for e in events if e["type"] == "score"]
    assert [(e["seq"], e["start_s"], e["end_s"]) for e in scores] == [
        (k, 0.5 * k, 4.0 + 0.5 * k) for k in range(5)]
    assert all(e["stream"] == "stdin" and e["label"] in ("spoof", "bonafide") for e in scores)
    assert events[-1]["type"] == "summary" and events[-1]["windows"] == 5 and events[-1]["duration_s"] == 6.0


def test_cli_stdin_errors_are_one_line(checkpoints) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    base = [sys.executable, "-m", "realtime.cli", "--input", "-", "--model", str(checkpoints["specrnet"]),
            "--engine", "onnx"]
    empty = subprocess.run(base, cwd=REPO, input=b"", capture_output=True, timeout=120)
    assert empty.returncode == 1
    assert empty.stderr.decode().strip().splitlines() == [
        "realtime-detect: stream 'stdin' ended without any audio (0 samples); nothing to score"]
    bad_rate = subprocess.run(base + ["--rate", "100"], cwd=REPO, input=b"", capture_output=True, timeout=120)
    assert bad_rate.returncode == 1 and b"100 Hz not accepted; accepted: 4000..384000" in bad_rate.stderr
    assert b"Traceback" not in bad_rate.stderr


def test_cli_ctrl_c_while_the_producer_is_connected_scores_what_arrived(checkpoints) -> None:
    """SIGINT with the pipe still open, as for files and the microphone: the windows so far, then the
    summary; exit 130 (and no abort at exit over the reader thread blocked on the pipe)."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.test_cli import interrupt_after_first_event

    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "--input", "-", "--json",
                             "--model", str(checkpoints["specrnet"]), "--engine", "onnx"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.buffer.write(s16(speech(6.0, 0)))  # 16 kHz s16le mono; the pipe stays open
        proc.stdin.flush()
        code, events, err = interrupt_after_first_event(proc)
    finally:
        proc.stdin.close()
    assert code == 130, err
    assert [e["end_s"] for e in events if e["type"] == "score"] == [4.0, 4.5, 5.0, 5.5, 6.0]
    assert events[-1]["type"] == "summary" and events[-1]["windows"] == 5 and events[-1]["duration_s"] == 6.0
    assert "Traceback" not in err
