"""StreamResampler: chunked streaming equals one-shot soxr; frequencies survive; inputs validated."""

from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.errors import AudioFormatError
from realtime.resample import StreamResampler, check_channels, check_rate, downmix

from tests.conftest import DATA
SPEECH = DATA / "bonafide" / "librispeech" / "1034-121119-0000.flac"  # 7.9 s, 16 kHz


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not SPEECH.exists():
        pytest.skip(f"shared speech data not found at {SPEECH} (set REALTIME_DETECT_DATA)")
    x, sr = sf.read(SPEECH, dtype="float32")
    assert sr == 16000
    return x


def run_stream(rs: StreamResampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(rs.process(x[i:i + n]))
        i, k = i + n, k + 1
    out.append(rs.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("in_rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_streaming_equals_one_shot_on_speech(speech, in_rate):
    # Real speech brought to in_rate, then streamed back in uneven chunks.
    x = soxr.resample(speech, 16000, in_rate).astype(np.float32)
    ref = soxr.resample(x, in_rate, 16000, quality="HQ")
    rng = np.random.default_rng(in_rate)
    got = run_stream(StreamResampler(in_rate, 16000, 1), x[:, None],
                     list(rng.integers(0, 3000, size=50)) + [1])
    assert got.dtype == np.float32
    assert len(got) == len(ref) == round(len(x) * 16000 / in_rate)
    np.testing.assert_allclose(got, ref, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    in_rate=st.sampled_from([8000, 22050, 44100, 48000]),
    n=st.integers(0, 20000),
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=10).filter(any),
)
def test_streaming_any_chunking_length_and_values(in_rate, n, sizes):
    x = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    ref = soxr.resample(x, in_rate, 16000, quality="HQ") if n else np.zeros(0, np.float32)
    got = run_stream(StreamResampler(in_rate), x[:, None], sizes)
    assert len(got) == len(ref)
    assert abs(len(got) - n * 16000 / in_rate) <= 1
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("in_rate", [8000, 44100, 48000])
def test_sine_keeps_its_frequency(in_rate):
    t = np.arange(in_rate * 2) / in_rate
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    rs = StreamResampler(in_rate, 16000, 1)
    y = run_stream(rs, x[:, None], [441, 1000, 4096])
    assert len(y) == 32000
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spec) * 16000 / len(y)
    assert abs(peak_hz - 1000.0) <= 16000 / len(y)
    # Amplitude survives too (no gain error from downmix/resampling).
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downmix_before_resample_is_mean_of_channels(speech):
    other = np.roll(speech, 1234)
    stereo = np.stack([speech, other], axis=1)
    np.testing.assert_allclose(downmix(stereo), (speech + other) / 2, atol=1e-7)
    rs = StreamResampler(48000, 16000, channels=2)
    got = run_stream(rs, stereo, [4800])
    ref = soxr.resample(((speech + other) / 2).astype(np.float32), 48000, 16000)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_downmix_mono_is_a_view():
    x = np.ones((10, 1), np.float32)
    assert np.shares_memory(downmix(x), x)
    assert downmix(np.ones(5, np.float32)).shape == (5,)


def test_passthrough_at_16k(speech):
    rs = StreamResampler(16000, 16000, 1)
    assert rs.passthrough
    got = run_stream(rs, speech[:, None], [1600])
    np.testing.assert_array_equal(got, speech)
    assert rs.flush().shape == (0,)


def test_flush_then_process_needs_reset():
    rs = StreamResampler(44100)
    rs.process(np.zeros((4410, 1), np.float32))
    rs.flush()
    assert rs.flush().shape == (0,)
    with pytest.raises(RuntimeError, match="after flush"):
        rs.process(np.zeros((10, 1), np.float32))
    rs.reset()
    assert run_stream(rs, np.zeros((4410, 1), np.float32), [100]).shape == (1600,)


@pytest.mark.parametrize("rate", [0, 3999, 384001, -16000, float("nan"), float("inf"), True, "16000", None])
def test_rate_validation_names_value_and_range(rate):
    with pytest.raises(AudioFormatError, match=r"in_rate .* Hz not accepted; accepted: 4000\.\.384000 Hz"):
        StreamResampler(rate)
    with pytest.raises(AudioFormatError, match="out_rate"):
        StreamResampler(16000, out_rate=rate)


def test_rate_bounds_and_fractional_rates_accepted():
    assert check_rate(4000) == 4000 and check_rate(384000) == 384000
    assert check_rate(np.int64(44100)) == 44100
    assert StreamResampler(44099.5).process(np.zeros((1000, 1), np.float32)).dtype == np.float32


@pytest.mark.parametrize("channels", [0, 33, -1, 1.5, True, None])
def test_channel_validation(channels):
    with pytest.raises(AudioFormatError, match=r"channels .* not accepted; accepted: 1\.\.32"):
        StreamResampler(16000, channels=channels)
    assert check_channels(32) == 32


@pytest.mark.parametrize(
    "chunk, msg",
    [
        (np.zeros((10, 2), np.float32), r"shape \(10, 2\) not accepted; expected \(n, 1\)"),
        (np.zeros((10, 1), np.float64), "dtype float64 not accepted; expected float32"),
        (np.zeros((10, 1), np.int16), "dtype int16"),
        (np.zeros((2, 5, 1), np.float32), r"shape \(2, 5, 1\)"),
    ],
)
def test_chunk_validation(chunk, msg):
    with pytest.raises(AudioFormatError, match=msg):
        StreamResampler(48000, channels=1).process(chunk)


def test_quality_validation():
    with pytest.raises(ValueError, match="quality 'best' not accepted; accepted: QQ, LQ, MQ, HQ, VHQ"):
        StreamResampler(48000, quality="best")


@pytest.mark.parametrize("channels", [2, 3, 6, 32])
def test_downmix_equals_mean_for_any_channel_count(speech, channels):
    x = np.stack([np.roll(speech, 37 * c) * (c + 1) / channels for c in range(channels)], axis=1)
    got = downmix(x)
    assert got.dtype == np.float32 and got.shape == (len(speech),)
    np.testing.assert_allclose(got, x.astype(np.float64).mean(axis=1), atol=2e-7)
