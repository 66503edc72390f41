"""StreamWindower: real speech in, 4-s windows out, whatever the rate, channels or chunking."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.errors import AudioFormatError, EmptyStreamError, NonFiniteAudioError
from realtime.windowing import StreamWindower, Window, WindowOptions

from tests.conftest import DATA
LONG = DATA / "bonafide" / "librispeech" / "103-1240-0000.flac"  # 14.085 s
SHORT = DATA / "bonafide" / "librispeech" / "1447-130550-0000.flac"  # 1.645 s
W, HOP = 64000, 8000


def load(path: Path) -> np.ndarray:
    if not path.exists():
        pytest.skip(f"shared speech data not found at {path} (set REALTIME_DETECT_DATA)")
    x, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return x


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load(LONG)


def kept(win: StreamWindower, windows: Iterator[Window]) -> list[Window]:
    """Take every window, checking that it is a view of the ring (nothing copied; a short clip's
    tiled window excepted), and keep a copy of it (the ring writes over it later)."""
    out = []
    for w in windows:
        assert w.tiled or np.shares_memory(w.samples, win._ring._buf)
        assert w.samples.dtype == np.float32 and w.samples.shape == (win.options.window,)
        out.append(replace(w, samples=w.samples.copy()))
    return out


def stream_all(win: StreamWindower, x: np.ndarray, chunk: int) -> list[Window]:
    out: list[Window] = []
    for i in range(0, len(x), chunk):
        out += kept(win, win.push(x[i:i + chunk]))
    return out + kept(win, win.finish())


def test_speech_at_16k_windows_are_slices(speech):
    x = speech[:, None]
    wins = stream_all(StreamWindower("call-1", 16000), x, 1600)
    total = len(speech)  # 225360 samples: not a multiple of the hop -> one tail window
    regular = list(range(0, total - W + 1, HOP))
    assert [w.seq for w in wins] == list(range(len(regular) + 1))
    for w, start in zip(wins, regular):
        assert (w.start_s, w.end_s) == (start / 16000, (start + W) / 16000)
        np.testing.assert_array_equal(w.samples, speech[start:start + W])
        assert not w.tiled and w.stream == "call-1"
    tail = wins[-1]
    assert tail.end_s == pytest.approx(14.085) and tail.start_s == pytest.approx(14.085 - 4.0)
    np.testing.assert_array_equal(tail.samples, speech[-W:])
    assert regular[-1] + W < total  # the tail really was uncovered


def test_48k_stereo_equals_one_shot_downmix_and_resample(speech):
    up = soxr.resample(speech, 16000, 48000).astype(np.float32)
    stereo = np.stack([up, 0.5 * np.roll(up, 100)], axis=1)
    ref = soxr.resample(stereo.mean(axis=1).astype(np.float32), 48000, 16000, quality="HQ")
    wins = stream_all(StreamWindower("s", 48000, channels=2), stereo, 4800)
    starts = list(range(0, len(ref) - W + 1, HOP))
    assert len(wins) == len(starts) + (starts[-1] + W < len(ref))
    for w, start in zip(wins, starts):
        np.testing.assert_allclose(w.samples, ref[start:start + W], atol=1e-6)
    np.testing.assert_allclose(wins[-1].samples, ref[-W:], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 20000), min_size=1, max_size=8),
       rate=st.sampled_from([8000, 16000, 44100]))
def test_windows_do_not_depend_on_chunking(speech, sizes, rate):
    x = soxr.resample(speech[:16000 * 6], 16000, rate).astype(np.float32)[:, None]
    one = StreamWindower("a", rate)
    ref = kept(one, one.push(x)) + kept(one, one.finish())
    win = StreamWindower("a", rate)
    got, i, k = [], 0, 0
    while i < len(x):
        got += kept(win, win.push(x[i:i + sizes[k % len(sizes)]]))
        i, k = i + sizes[k % len(sizes)], k + 1
    got += kept(win, win.finish())
    assert [(w.seq, w.start_s, w.end_s, w.tiled) for w in got] == [(w.seq, w.start_s, w.end_s, w.tiled) for w in ref]
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)


def test_short_clip_is_tiled_once():
    clip = load(SHORT)  # 1.645 s
    win = StreamWindower("short", 16000)
    assert list(win.push(clip[:, None])) == []
    (w,) = win.finish()
    assert w.tiled and w.seq == 0 and w.start_s == 0.0 and w.end_s == pytest.approx(1.645)
    np.testing.assert_array_equal(w.samples, np.resize(clip, W))
    np.testing.assert_array_equal(w.samples[len(clip):2 * len(clip)], clip)  # the clip repeats


def test_exactly_one_window_has_no_tail_and_one_more_sample_has_one(speech):
    win = StreamWindower("a", 16000)
    assert len(list(win.push(speech[:W, None]))) == 1
    assert list(win.finish()) == []
    win = StreamWindower("a", 16000)
    assert len(list(win.push(speech[:W + 1, None]))) == 1
    (tail,) = win.finish()
    assert tail.seq == 1 and tail.start_s == 1 / 16000 and not tail.tiled
    np.testing.assert_array_equal(tail.samples, speech[1:W + 1])


def test_hop_longer_than_window(speech):
    opts = WindowOptions(window_s=1.0, hop_s=1.5)
    wins = stream_all(StreamWindower("gap", 16000, options=opts), speech[:, None], 3000)
    starts = [round(w.start_s * 16000) for w in wins]
    assert starts[:-1] == list(range(0, len(speech) - 16000 + 1, 24000))
    assert starts[-1] == len(speech) - 16000  # tail window at the end of the stream
    for w, s in zip(wins, starts):
        np.testing.assert_array_equal(w.samples, speech[s:s + 16000])


def test_empty_stream_raises():
    with pytest.raises(EmptyStreamError, match="stream 'mic' ended without any audio"):
        StreamWindower("mic", 16000).finish()
    win = StreamWindower("mic", 48000)
    assert list(win.push(np.zeros((0, 1), np.float32))) == []
    with pytest.raises(EmptyStreamError):
        win.finish()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_sample_names_stream_and_offset(speech, bad):
    x = np.stack([speech, speech], axis=1)[:48000].copy()
    x[30017, 1] = bad
    win = StreamWindower("call-42", 16000, channels=2)
    list(win.push(x[:16000]))
    with pytest.raises(NonFiniteAudioError, match=r"stream 'call-42'.*sample 30017 \(1\.876 s\)") as e:
        win.push(x[16000:40000])
    assert e.value.offset == 30017 and e.value.stream == "call-42"


def test_huge_finite_samples_are_not_mistaken_for_nan():
    win = StreamWindower("loud", 16000)
    list(win.push(np.full((1000, 1), 3e38, np.float32)))  # the float32 sum overflows to inf
    assert win.frames_in == 1000


def test_arrival_is_the_push_that_completed_the_window(speech):
    ticks = iter(range(1000))
    win = StreamWindower("a", 16000, clock=lambda: float(next(ticks)))
    arrivals = []
    for i in range(0, 16000 * 5, 4000):
        for w in win.push(speech[i:i + 4000, None]):
            arrivals.append(w.arrival)
    assert arrivals == [15.0, 17.0, 19.0]  # pushes 16, 18, 20 complete windows at 4, 4.5, 5 s
    assert [w.arrival for w in win.push(speech[:8000, None], arrival=123.5)] == [123.5]


def test_push_after_finish_and_double_finish():
    win = StreamWindower("a", 16000)
    list(win.push(np.zeros((100, 1), np.float32)))
    list(win.finish())
    with pytest.raises(RuntimeError, match="push\\(\\) after finish"):
        win.push(np.zeros((1, 1), np.float32))
    with pytest.raises(RuntimeError, match="twice"):
        win.finish()


def test_bad_chunks_are_rejected_with_what_is_accepted():
    win = StreamWindower("a", 44100, channels=2)
    with pytest.raises(AudioFormatError, match=r"shape \(10, 1\) not accepted; expected \(n, 2\)"):
        win.push(np.zeros((10, 1), np.float32))
    with pytest.raises(AudioFormatError, match="dtype int16"):
        win.push(np.zeros((10, 2), np.int16))
    with pytest.raises(AudioFormatError, match=r"in_rate 1000 Hz not accepted; accepted: 4000\.\.384000"):
        StreamWindower("a", 1000)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(hop_s=0), "hop_s must be a positive number of seconds, got 0"),
        (dict(window_s=-1.0), "window_s must be a positive"),
        (dict(window_s=4.00001), "not a whole number of samples at 16000 Hz"),
        (dict(sample_rate=16000.0), "sample_rate must be an int"),
        (dict(sample_rate=1000), r"1000 Hz not accepted"),
    ],
)
def test_window_options_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        WindowOptions(**kwargs)


def test_window_options_derived_sizes():
    o = WindowOptions()
    assert (o.window, o.hop) == (64000, 8000)
    assert (WindowOptions(window_s=2.0, hop_s=0.25, sample_rate=8000).window,) == (16000,)


def test_memory_does_not_grow_with_stream_length(speech):
    win = StreamWindower("long", 16000)
    chunk = speech[:1600, None]

    def run(seconds: int) -> None:
        for _ in range(seconds * 10):
            for _w in win.push(chunk):  # each window dropped at once, as a consumer would
                pass

    run(60)
    tracemalloc.start()
    run(60)
    after_1 = tracemalloc.get_traced_memory()[0]
    run(300)
    after_6 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after_6 - after_1 < 64 * 1024, (after_1, after_6)
    assert win._ring.capacity == W + HOP and win._ring._buf.shape == (2 * W + HOP - 1,)


def test_realtime_package_does_not_import_torch_or_training():
    code = (
        "import sys, realtime.windowing, realtime.ringbuffer, realtime.resample, realtime.sources.file, "
        "realtime.sources.base, realtime.events, realtime.console, realtime.aggregate\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))\n"
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_windows_of_a_push_must_all_be_taken_before_the_next_push(speech):
    """The ring writes a chunk as its windows are taken: a push (or finish) before the last push's
    windows were all taken would lose audio, so it is refused."""
    win = StreamWindower("a", 16000)
    windows = win.push(speech[:3 * W, None])  # chunk > free: written piece by piece
    first = next(windows)
    np.testing.assert_array_equal(first.samples, speech[:W])
    with pytest.raises(RuntimeError, match="before every window of the last push"):
        win.push(speech[:1, None])
    with pytest.raises(RuntimeError, match="before every window of the last push"):
        win.finish()
    rest = kept(win, windows)
    assert [w.seq for w in rest] == list(range(1, len(range(0, 2 * W + 1, HOP))))
    for w in rest:
        s = round(w.start_s * 16000)
        np.testing.assert_array_equal(w.samples, speech[s:s + W])
    assert list(win.push(speech[3 * W:3 * W + 1, None])) == []  # all taken: the next push goes on
