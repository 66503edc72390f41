"""FileSource / read_audio: real speech in several containers, bad files, pacing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from realtime.errors import AudioInputError, NonFiniteAudioError
from realtime.sources import FileSource, Source, read_audio
from realtime.sources import file as file_mod
from realtime.windowing import StreamWindower

from tests.conftest import DATA, kept_windows
SPEECH = DATA / "bonafide" / "ljspeech" / "LJ001-0009.flac"  # 6.525 s


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not SPEECH.exists():
        pytest.skip(f"shared speech data not found at {SPEECH} (set REALTIME_DETECT_DATA)")
    x, sr = sf.read(SPEECH, dtype="float32")
    assert sr == 16000
    return x


def collect(src: FileSource) -> list[tuple[np.ndarray, int]]:
    async def run():
        return [item async for item in src]
    return asyncio.run(run())


def test_reads_shared_flac_unchanged(speech):
    data, sr = read_audio(SPEECH)
    assert sr == 16000 and data.dtype == np.float32 and data.shape == (len(speech), 1)
    np.testing.assert_array_equal(data[:, 0], speech)
    src = FileSource(SPEECH, realtime=False)
    assert isinstance(src, Source) and src.stream_id == "LJ001-0009.flac"
    assert src.duration_s == pytest.approx(6.525, abs=1e-3)
    chunks = collect(src)
    assert all(sr == 16000 for _, sr in chunks)
    assert [c.shape[0] for c, _ in chunks[:-1]] == [1600] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks])[:, 0], speech)
    assert len({id(c) for c, _ in chunks}) == len(chunks)  # never reused


@pytest.mark.parametrize(
    "name, fmt, subtype, rate, lossless",
    [
        ("s.wav", "WAV", "PCM_16", 44100, True),
        ("s.flac", "FLAC", "PCM_24", 48000, True),
        ("s.aiff", "AIFF", "FLOAT", 22050, True),
        ("s.mp3", "MP3", None, 44100, False),
        ("s.ogg", "OGG", "OPUS", 48000, False),
    ],
)
def test_containers_stereo_through_the_windower(tmp_path, speech, name, fmt, subtype, rate, lossless):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}")
    up = soxr.resample(speech, 16000, rate).astype(np.float32)
    stereo = np.stack([up, 0.8 * up], axis=1) * 0.9
    path = tmp_path / name
    sf.write(path, stereo, rate, format=fmt, subtype=subtype)
    data, sr = read_audio(path)
    assert sr == rate and data.shape[1] == 2
    if lossless:
        np.testing.assert_allclose(data, stereo, atol=1 / 2**15)
    else:
        assert abs(len(data) - len(stereo)) < 0.1 * rate  # encoder padding at most
    src = FileSource(path, realtime=False, chunk_s=0.05)
    win = StreamWindower(src.stream_id, src.sample_rate, src.channels)
    windows = []

    async def run():
        async for chunk, _ in src:
            windows.extend(kept_windows(win.push(chunk)))
        windows.extend(kept_windows(win.finish()))

    asyncio.run(run())
    # 6.525 s at 4 s / 0.5 s -> windows at 0.0 .. 2.5 s, plus the tail ending at 6.525 s
    assert [w.start_s for w in windows[:-1]] == [k * 0.5 for k in range(6)]
    assert windows[-1].end_s == pytest.approx(len(data) / rate, abs=1e-3)
    ref = 0.9 * 0.9 * speech[:64000]  # mean of 0.9x and 0.72x
    corr = np.corrcoef(windows[0].samples, ref)[0, 1]
    assert corr > (0.999 if lossless else 0.9)


def test_stream_id_and_repr(tmp_path, speech):
    path = tmp_path / "a.wav"
    sf.write(path, speech, 16000)
    src = FileSource(path, realtime=False, stream_id="call-7")
    assert src.stream_id == "call-7" and "call-7" in repr(src)


def _bad(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / {"corrupt": "c.flac", "text": "notes.wav", "empty": "e.wav", "zero": "z.wav",
                    "missing": "nope.wav", "dir": "d.wav", "lowrate": "low.wav"}[kind]
    if kind == "corrupt":
        p.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "text":
        p.write_text("this is a text file, renamed\n" * 20)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "zero":
        sf.write(p, np.zeros((0, 1), np.float32), 16000)
    elif kind == "dir":
        p.mkdir()
    elif kind == "lowrate":
        sf.write(p, np.zeros((100, 1), np.float32), 1000)
    return p


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("corrupt", r"not a readable audio file \(accepted: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF.* via libsndfile"),
        ("text", r"not a readable audio file \(accepted: WAV"),
        ("empty", r"empty file \(0 bytes\)"),
        ("zero", r"contains no audio \(0 frames\)"),
        ("missing", "no such file"),
        ("dir", "is a directory, not an audio file"),
        ("lowrate", r"sample rate 1000 Hz not supported \(accepted: 4000\.\.384000 Hz\)"),
    ],
)
def test_bad_files_raise_one_line_audio_input_error(tmp_path, kind, reason):
    path = _bad(tmp_path, kind)
    for opener in (read_audio, FileSource):
        with pytest.raises(AudioInputError, match=reason) as e:
            opener(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg
        assert e.value.path == str(path)


def test_truncated_flac_fails_while_streaming(tmp_path):
    raw = SPEECH.read_bytes() if SPEECH.exists() else pytest.skip("no shared data")
    path = tmp_path / "cut.flac"
    path.write_bytes(raw[: len(raw) // 2])
    src = FileSource(path, realtime=False)  # the header is intact: opening succeeds
    with pytest.raises(AudioInputError, match=r"cut\.flac: decoding failed after \d+ frames"):
        collect(src)
    with pytest.raises(AudioInputError, match="decoding failed"):
        read_audio(path)


def test_nan_in_float_wav(tmp_path, speech):
    x = speech.copy()
    x[20000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match=r"nan\.wav'.*sample 20000 \(1\.250 s\)"):
        read_audio(path)
    # Streaming: the source passes samples through; the windower stops at the bad one.
    src = FileSource(path, realtime=False)
    win = StreamWindower(src.stream_id, src.sample_rate)

    async def run():
        async for chunk, _ in src:
            kept_windows(win.push(chunk))

    with pytest.raises(NonFiniteAudioError, match=r"stream 'nan\.wav'.*sample 20000") as e:
        asyncio.run(run())
    assert e.value.offset == 20000


def test_realtime_pacing_takes_about_the_duration(tmp_path, speech):
    path = tmp_path / "one.wav"
    sf.write(path, speech[:16000], 16000)
    t0 = time.monotonic()
    chunks = collect(FileSource(path, realtime=True, chunk_s=0.1))
    elapsed = time.monotonic() - t0
    assert sum(c.shape[0] for c, _ in chunks) == 16000
    # Never faster than real time (x speed); how much slower is the machine's load, not ours
    # (the schedule itself is checked without a clock in test_pacing_does_not_drift).
    assert 0.8 <= elapsed, elapsed
    t0 = time.monotonic()
    collect(FileSource(path, realtime=True, chunk_s=0.1, speed=4.0))
    assert 0.2 <= time.monotonic() - t0


def test_pacing_does_not_drift(tmp_path, speech, monkeypatch):
    """Each sleep overshoots by 7 ms; deliveries must stay on the ideal schedule anyway."""
    path = tmp_path / "long.wav"
    sf.write(path, speech, 16000)
    now = [100.0]

    async def late_sleep(delay):
        now[0] += delay + 0.007 if delay > 0 else 0.0

    monkeypatch.setattr(file_mod.asyncio, "sleep", late_sleep)
    src = FileSource(path, realtime=True, chunk_s=0.1, clock=lambda: now[0])
    sent, lags = 0, []

    async def run():
        nonlocal sent
        async for chunk, _ in src:
            sent += chunk.shape[0]
            lags.append(now[0] - (100.0 + sent / 16000))

    asyncio.run(run())
    assert len(lags) == 66 and max(lags) <= 0.0071 and min(lags) >= 0.0  # bounded, not growing


def test_fast_mode_yields_to_the_event_loop(tmp_path, speech):
    path = tmp_path / "a.wav"
    sf.write(path, speech, 16000)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def run():
        t = asyncio.create_task(ticker())
        n = len([c async for c in FileSource(path, realtime=False)])
        t.cancel()
        return n

    n = asyncio.run(run())
    assert ticks >= n - 1  # the other task ran between chunks


@pytest.mark.parametrize("kwargs, msg", [(dict(chunk_s=0), "chunk_s must be a positive"),
                                         (dict(speed=-1.0), "speed must be a positive"),
                                         (dict(speed=float("inf")), "speed")])
def test_option_validation(tmp_path, speech, kwargs, msg):
    path = tmp_path / "a.wav"
    sf.write(path, speech[:1600], 16000)
    with pytest.raises(ValueError, match=msg):
        FileSource(path, **kwargs)


def test_mp3_decoder_chatter_stays_off_stderr(tmp_path) -> None:
    """A valid MP3 whose Xing header disagrees with the file size (trailing padding):
    libmpg123 warns about it on fd 2 at every open; the CLI's stderr stays empty."""
    import subprocess
    import sys

    import soundfile as sf
    import soxr

    from tests.conftest import REPO, speech

    mp3 = tmp_path / "padded.mp3"
    sf.write(mp3, soxr.resample(speech(6.0, 0), 16000, 44100), 44100, format="MP3")
    mp3.write_bytes(mp3.read_bytes() + b"\x00" * 20000)
    raw = subprocess.run([sys.executable, "-c", f"import soundfile; soundfile.read({str(mp3)!r})"],
                         capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0 and "Warning" in raw.stderr  # the chatter is real
    for mode in (["--offline"], ["--speed", "20"]):
        cli = subprocess.run([sys.executable, "-m", "realtime.cli", "--input", str(mp3), "--json", "--engine", "onnx",
                              *mode], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and cli.stderr == "", cli.stderr
        assert '"type":"summary"' in cli.stdout.splitlines()[-1]
