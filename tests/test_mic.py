"""MicSource: device selection, the callback's ring, missing libraries, and (marker ``audio``)
real capture through PortAudio -> ALSA pulse plugin -> a private PulseAudio daemon.

The audio tests play real speech into a null sink with ``paplay`` and capture its monitor
with MicSource; see tests/pulse_helpers.py for how the daemon is set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from realtime.errors import AudioInputError
from realtime.sources import Source, portaudio_calls
from realtime.sources import mic as mic_mod
from realtime.sources.audio_devices import (
    AudioDeviceError,
    MicUnavailableError,
    import_sounddevice,
    resolve_device,
)
from realtime.sources.capture_ring import CaptureRing
from realtime.sources.mic import MicSource
from realtime.windowing import StreamWindower
from tests import pulse_helpers
from tests.conftest import accounted_seqs, kept_windows, speech

DEVICES = [
    {"name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "max_input_channels": 2, "default_samplerate": 44100.0},
    {"name": "HDA Intel PCH: HDMI 0 (hw:0,3)", "max_input_channels": 0, "default_samplerate": 48000.0},
    {"name": "USB Audio Mic: Audio (hw:1,0)", "max_input_channels": 1, "default_samplerate": 48000.0},
    {"name": "USB Audio Mic 2: Audio (hw:2,0)", "max_input_channels": 1, "default_samplerate": 16000.0},
    {"name": "pulse", "max_input_channels": 32, "default_samplerate": 44100.0},
    {"name": "default", "max_input_channels": 32, "default_samplerate": 44100.0},
]


# -- device selection -------------------------------------------------------------------

@pytest.mark.parametrize("spec, index", [
    (None, 5), (0, 0), ("2", 2), (" 4 ", 4), ("pulse", 4), ("PULSE", 4), ("alc3246", 0),
    ("usb audio mic:", 2), ("mic 2", 3), ("Default", 5),
])
def test_resolve_device(spec, index):
    assert resolve_device(spec, DEVICES, default=5) == index


@pytest.mark.parametrize("spec, words", [
    (9, ["input device 9", "no such index", "accepted: 0, 2, 3, 4, 5"]),
    (1, ["'HDA Intel PCH: HDMI 0 (hw:0,3)'", "no input channels"]),
    ("usb", ["ambiguous", "2 'USB Audio Mic: Audio (hw:1,0)'", "3 'USB Audio Mic 2", "index"]),
    ("hdmi", ["no input device name contains it", "'pulse'"]),
    ("", ["empty name"]),
])
def test_resolve_device_errors(spec, words):
    with pytest.raises(AudioDeviceError) as e:
        resolve_device(spec, DEVICES, default=5)
    assert isinstance(e.value, AudioInputError)
    for w in words:
        assert w in str(e.value)


def test_resolve_default_and_empty():
    with pytest.raises(AudioDeviceError, match="default input device: there is none; choose one with --device"):
        resolve_device(None, DEVICES, default=-1)
    with pytest.raises(AudioDeviceError, match="no audio input devices found"):
        resolve_device(None, DEVICES[1:2], default=0)
    with pytest.raises(TypeError, match="device must be None, an index or a name"):
        resolve_device(True, DEVICES, default=5)


# -- the callback's ring ------------------------------------------------------------------

def test_capture_ring_wraps_and_refuses_whole_blocks():
    ring = CaptureRing(10, 2)
    rng = np.random.default_rng(0)
    sent, got = [], []
    for n in (3, 4, 2):
        b = rng.standard_normal((n, 2)).astype(np.float32)
        assert ring.put(b)
        sent.append(b)
    assert ring.pending == 9
    assert not ring.put(np.ones((2, 2), np.float32))  # 1 free: refused whole, nothing stored
    got.append(ring.take())
    assert ring.take() is None
    for n in (7, 3):  # wraps around the end of the buffer
        b = rng.standard_normal((n, 2)).astype(np.float32)
        assert ring.put(b)
        sent.append(b)
    got.append(ring.take())
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(sent))
    assert got[1].base is None or got[1].base is not ring._buf  # a new array, not a view


def test_callback_counts_overflows_and_wakes_the_loop():
    src = MicSource.__new__(MicSource)  # no device needed: drive the callback by hand
    src.channels = 1
    src._clock = time.monotonic
    src._ring = CaptureRing(8, 1)
    src._reset_counters()

    class Flags:
        input_overflow = False

    class Overflowed:
        input_overflow = True

    async def run():
        src._loop = asyncio.get_running_loop()
        src._event = asyncio.Event()
        src._waiting = True
        # From another thread, as PortAudio would.
        await asyncio.to_thread(src._callback, np.ones((5, 1), np.float32), 5, None, Flags())
        await asyncio.wait_for(src._event.wait(), 5)
        src._callback(np.ones((5, 1), np.float32), 5, None, Overflowed())  # no room: dropped
        return src._ring.take()

    out = asyncio.run(run())
    assert out.shape == (5, 1)
    assert (src.overflows, src.device_overflows, src.dropped_frames) == (2, 1, 5)


def test_a_stream_that_never_closes_is_abandoned_not_waited_for():
    """libpulse can deadlock when its server dies; PortAudio's abort then never returns."""
    import threading
    import types

    release = threading.Event()

    class StuckStream:
        def abort(self, ignore_errors=False):
            release.wait(30)

        def close(self, ignore_errors=False):
            pass

    src = MicSource.__new__(MicSource)
    src._sd = types.SimpleNamespace(_exit_handler=lambda: None)
    src._gen, src.stuck, src.close_timeout_s = 0, False, 0.2
    src._stream = StuckStream()
    before = set(portaudio_calls.portaudio_threads)
    t0 = time.monotonic()
    try:
        asyncio.run(src._close_stream())
        assert time.monotonic() - t0 < 5
        assert src.stuck and src._stream is None
        # Its helper thread still counts as inside PortAudio: no rescan may terminate PortAudio under it.
        [helper] = portaudio_calls.portaudio_threads - before
    finally:
        release.set()
    helper.join(5)
    assert helper not in portaudio_calls.portaudio_threads


def test_a_close_cancelled_by_asyncio_run_still_finishes_and_releases_the_source():
    """``return`` inside ``async for`` leaves the generator to the loop, and asyncio.run cancels its
    aclose() while the stream closes: the close still finishes before asyncio.run returns (left
    running, it raced the next PortAudio call), and the source no longer counts as open (a stale
    entry stopped every later reconnect from rescanning)."""
    import types

    class SlowStream:
        closed = False

        def abort(self, ignore_errors=False):
            time.sleep(0.5)  # still closing when asyncio.run cancels the aclose() task

        def close(self, ignore_errors=False):
            self.closed = True

    stream = SlowStream()
    src = MicSource.__new__(MicSource)  # no device needed: the open hands over the stream and a block
    src._sd = types.SimpleNamespace(_exit_handler=lambda: None)
    src._clock, src._ring, src.sample_rate = time.monotonic, CaptureRing(64, 1), 16000
    src._gen, src._running, src.stuck, src.close_timeout_s = 0, False, False, 5.0

    async def start(rescan):
        src._stream = stream
        src._ring.put(np.ones((8, 1), np.float32))

    src._start = start

    async def run():
        async for _chunk, _rate in src:
            return

    asyncio.run(asyncio.wait_for(run(), 10))  # in its own task, as the audio tests run
    assert stream.closed and not src.stuck
    assert not src._running and id(src) not in MicSource._open_sources


def test_in_daemon_thread_returns_raises_and_times_out():
    async def run():
        assert await portaudio_calls.in_daemon_thread(lambda: 42, 5) == 42
        with pytest.raises(ZeroDivisionError):
            await portaudio_calls.in_daemon_thread(lambda: 1 / 0, 5)
        with pytest.raises(TimeoutError):
            await portaudio_calls.in_daemon_thread(lambda: time.sleep(1), 0.05)

    asyncio.run(run())


# -- missing libraries ------------------------------------------------------------------

def test_missing_sounddevice(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(MicUnavailableError, match=r"pip install 'realtime-detect\[mic\]'"):
        MicSource()
    with pytest.raises(MicUnavailableError, match="sounddevice"):
        mic_mod.list_devices()


def test_missing_portaudio(monkeypatch):
    class NoPortAudio(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(MicUnavailableError) as e:
        MicSource("pulse")
    assert str(e.value).startswith("microphone input: the PortAudio library was not found")
    assert "apt-get install libportaudio2" in str(e.value)


def test_bad_arguments():
    for kw, msg in (({"block_s": 0}, "block_s"), ({"buffer_s": float("nan")}, "buffer_s"),
                    ({"channels": 0}, "channels"), ({"max_retries": 0}, "max_retries")):
        with pytest.raises(ValueError, match=msg):
            MicSource(**kw)


# -- real capture through PulseAudio --------------------------------------------------------

def _stack_or_skip() -> None:
    reason = pulse_helpers.missing()
    if reason:
        pytest.skip(reason)
    try:
        import_sounddevice()
    except MicUnavailableError as e:
        pytest.skip(str(e))


@pytest.fixture
def pulse(tmp_path, monkeypatch):
    _stack_or_skip()
    pa = pulse_helpers.PulseAudio(tmp_path / "pulse", rate=48000, channels=1)
    pa.start()
    try:
        pulse_helpers.use_in_process(pa, monkeypatch)
        yield pa
    finally:
        # No PortAudio re-initialisation after the test (see use_in_process): its terminate would
        # block for good on a stream the test left stuck by killing the daemon under it.
        pa.stop()


def best_alignment(x: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """The lag at which ``ref`` best matches inside ``x`` and the normalized correlation there."""
    n = 1 << int(np.ceil(np.log2(len(x) + len(ref))))
    xc = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(x) - len(ref) + 1]
    lag = int(np.argmax(xc))
    seg = x[lag: lag + len(ref)]
    return lag, float(seg @ ref / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12))


@pytest.mark.audio
def test_capture_through_pulseaudio_matches_played_clip(pulse, tmp_path):
    clip = speech(6.0, 0)
    wav = tmp_path / "clip.wav"
    sf.write(wav, clip, 16000, subtype="FLOAT")
    src = MicSource("pulse", block_s=0.05)
    assert isinstance(src, Source) and src.stream_id == "mic"
    table = mic_mod.list_devices().splitlines()
    assert table[0].split() == ["index", "channels", "default", "rate", "name", "(host", "API)"]
    row = [line.lstrip("* ").split() for line in table[1:-1]]
    assert [str(src.device_index), str(32), f"{src.sample_rate}", "Hz", "pulse", "(ALSA)"] in row
    assert table[-1] == "* default input device"
    windower = StreamWindower("mic", src.sample_rate, src.channels)
    captured: list[np.ndarray] = []
    windows = []

    async def run():
        running = asyncio.Event()

        async def capture():
            async for chunk, rate in src:
                assert rate == src.sample_rate and chunk.dtype == np.float32 and chunk.shape[1] == 1
                captured.append(chunk)
                windows.extend(kept_windows(windower.push(chunk)))
                running.set()

        task = asyncio.create_task(capture())
        await asyncio.wait_for(running.wait(), 10)
        # The stream runs: play the clip into the virtual microphone, in real time.
        player = await asyncio.create_subprocess_exec(*pulse.play_cmd(wav), env={**pulse.env})
        assert await player.wait() == 0
        await asyncio.sleep(0.5)
        task.cancel()  # cancellation ends the iteration and closes the stream
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run(), 30))
    windows.extend(kept_windows(windower.finish()))
    assert src._stream is None
    assert src.dropped_frames == 0 and src.overflows == src.device_overflows  # the ring never filled
    audio = np.concatenate(captured)[:, 0]
    assert len(audio) / src.sample_rate > 6.0

    # The windows tile a 16 kHz stream; put it back together and find the clip in it.
    y = np.zeros(windower.samples, np.float32)
    for w in windows:
        a = round(w.start_s * 16000)
        y[a: a + len(w.samples)] = w.samples
    lag, corr = best_alignment(y, clip)
    assert corr > 0.9, f"played clip not found in the captured windows (correlation {corr:.3f})"
    # Every window lying inside the played clip is that stretch of the clip.
    inside = [w for w in windows if round(w.start_s * 16000) >= lag and round(w.end_s * 16000) <= lag + len(clip)]
    assert len(inside) >= 4
    for w in inside:
        a = round(w.start_s * 16000) - lag
        ref = clip[a: a + len(w.samples)]
        c = float(w.samples @ ref / (np.linalg.norm(w.samples) * np.linalg.norm(ref)))
        assert c > 0.9, f"window {w.seq} ({w.start_s}-{w.end_s} s): correlation {c:.3f}"
    # And the raw capture at the device rate holds the clip too (a 48k -> device-rate hop by pulse).
    _, raw_corr = best_alignment(soxr.resample(audio, src.sample_rate, 16000), clip)
    assert raw_corr > 0.9


@pytest.mark.audio
def test_sound_server_gone_raises_naming_the_device(pulse):
    src = MicSource("pulse", block_s=0.05, stall_s=1.0)

    async def run():
        n = 0
        async for _chunk, _rate in src:
            n += 1
            if n == 5:
                pulse.stop()

    with pytest.raises(AudioDeviceError) as e:
        asyncio.run(asyncio.wait_for(run(), 20))
    msg = str(e.value)
    assert msg.startswith(f"input device {src.device_index} 'pulse': ")
    assert "stopped delivering audio" in msg or "delivered no audio" in msg


@pytest.mark.audio
def test_retry_reconnects_when_the_sound_server_returns(pulse):
    src = MicSource("pulse", block_s=0.05, retry=True, stall_s=1.0)

    async def run():
        frames_after = 0
        restarted = False
        async for chunk, _rate in src:
            if not restarted and src.frames_captured > src.sample_rate // 4:
                pulse.stop()
                await asyncio.sleep(1.0)
                await asyncio.to_thread(pulse.start)
                restarted = True
            elif restarted and src.reconnects:
                frames_after += len(chunk)
                if frames_after > src.sample_rate // 2:
                    return

    asyncio.run(asyncio.wait_for(run(), 30))
    assert src.reconnects == 1


@pytest.mark.audio
def test_retry_gives_up_after_max_retries(pulse):
    src = MicSource("pulse", block_s=0.05, retry=True, stall_s=1.0, max_retries=2)

    async def run():
        async for _chunk, _rate in src:
            if pulse.running:
                pulse.stop()

    with pytest.raises(AudioDeviceError, match="gave up after 2 reopen attempts"):
        asyncio.run(asyncio.wait_for(run(), 30))


@pytest.mark.audio
def test_break_closes_the_stream_and_a_second_iteration_starts_fresh(pulse):
    src = MicSource("pulse", block_s=0.02)

    async def run():
        for _ in range(2):
            n = 0
            async for chunk, _rate in src:
                n += len(chunk)
                if n >= src.sample_rate // 5:
                    break
            for _ in range(200):  # the abandoned generator is closed by the loop's finalizer hook
                await asyncio.sleep(0.01)
                if not src._running:
                    break
            assert src._stream is None and not src._running
            assert src.frames_captured >= src.sample_rate // 5

    asyncio.run(asyncio.wait_for(run(), 20))


@pytest.mark.audio
@pytest.mark.slow
def test_cli_scores_the_clip_played_into_the_microphone(tmp_path, checkpoints):
    """realtime-detect --input mic on a real PortAudio/PulseAudio stack: windows while the clip
    plays are speech (scored), and Ctrl+C ends with a summary."""
    import json
    import signal
    import subprocess
    import sys
    import time

    _stack_or_skip()
    wav = tmp_path / "clip.wav"
    sf.write(wav, speech(6.0, 1), 16000)
    with pulse_helpers.PulseAudio(tmp_path / "pulse", rate=48000, channels=1) as pa:
        cli = subprocess.Popen(
            [sys.executable, "-m", "realtime.cli", "--input", "mic", "--device", pulse_helpers.PORTAUDIO_DEVICE,
             "--json", "--model", str(checkpoints["specrnet"]), "--engine", "onnx"],
            env={**os.environ, **pa.env}, cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The first window's event: the engine is loaded and the capture runs (however long
            # that took on a busy machine) before the clip starts.
            first = cli.stdout.readline()
            assert first, cli.stderr.read()
            assert pa.play(wav).wait(timeout=30) == 0
            time.sleep(1.0)
            cli.send_signal(signal.SIGINT)
            out, err = cli.communicate(timeout=30)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait(10)
    assert cli.returncode == 0, err
    events = [json.loads(line) for line in (first + out).splitlines()]
    scores = [e for e in events if e["type"] == "score"]
    assert events[-1]["type"] == "summary" and events[-1]["windows"] == len(scores)
    # Consecutive windows; one shed under load is counted by the next event, not missing.
    assert [e["seq"] for e in scores] == accounted_seqs([e.get("shed", 0) for e in scores])
    assert all(e["end_s"] - e["start_s"] == pytest.approx(4.0) for e in scores)
    # ~9 s captured (2 s before, 6 s clip, 1 s after): the windows inside the clip hold speech.
    speech_windows = [e for e in scores if e["label"] != "no_speech"]
    assert len(scores) >= 7 and len(speech_windows) >= 4, [(e["end_s"], e["label"]) for e in scores]
    assert all(0.0 <= e["spoof_probability"] <= 1.0 for e in speech_windows)
