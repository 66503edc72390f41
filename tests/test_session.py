"""StreamSession / LiveDetector: windows -> batcher -> alerts -> sinks, in order."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import numpy as np
import pytest
import soundfile as sf

from realtime.alerts import AlertOptions
from realtime.batcher import BatcherOptions
from realtime.errors import EmptyStreamError, NonFiniteAudioError
from realtime.events import ErrorEvent, ScoreEvent, SummaryEvent, parse_event
from realtime.options import DetectorOptions, OutputOptions, WindowingOptions
from realtime.session import ConsoleSink, JsonLinesSink, LiveDetector
from realtime.sources import FileSource
from tests.conftest import speech


def no_wait(**batching) -> DetectorOptions:
    """Options whose batcher never waits for company: each window is scored as it comes."""
    return DetectorOptions(batching=BatcherOptions(max_wait_ms=0, **batching))


class FakeEngine:
    """Every window gets the logit of a fixed probability; counts windows; can be held or fail."""

    window_samples = 64000
    preferred_batch = 64  # no cap of its own: the batcher's max_batch decides
    model_id = "fake-00000000"
    threshold = 0.5

    def __init__(self, prob: float = 0.2) -> None:
        self.prob = prob
        self.windows = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(5)
        if self.fail:
            self.fail = False
            raise RuntimeError("boom")
        self.windows += len(x)
        return np.full(len(x), np.log(self.prob / (1 - self.prob)), np.float32)


def chunks(x: np.ndarray, n: int = 1600):
    for i in range(0, len(x), n):
        yield x[i:i + n, None] if x.ndim == 1 else x[i:i + n]


def stream(x: np.ndarray, engine: FakeEngine, options: DetectorOptions | None = None, rate: int = 16000,
           channels: int = 1) -> list:
    events: list = []

    async def main() -> None:
        det = LiveDetector(engine, options or no_wait(), sinks=[events.append]).start()
        s = det.open_stream("t", rate, channels, policy="block")  # faster than real time: wait, never shed
        for c in chunks(x):
            await s.push(c)
        await s.finish()
        await det.aclose()

    asyncio.run(main())
    return events


def test_six_seconds_give_one_event_per_hop_after_four_then_a_summary() -> None:
    eng = FakeEngine(0.2)
    events = stream(speech(6.0, 0), eng)
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert [e.seq for e in scores] == [0, 1, 2, 3, 4]
    assert [(e.start_s, e.end_s) for e in scores] == [(0.0, 4.0), (0.5, 4.5), (1.0, 5.0), (1.5, 5.5), (2.0, 6.0)]
    assert all(e.label == "bonafide" and e.spoof_probability == pytest.approx(0.2) and not e.alert for e in scores)
    assert all(e.model == "fake-00000000" and e.latency_ms >= 0 for e in scores)
    assert isinstance(events[-1], SummaryEvent)
    s = events[-1]
    assert (s.windows, s.label, s.shed, s.duration_s) == (5, "bonafide", 0, 6.0)
    assert s.spoof_probability == pytest.approx(0.2, abs=1e-6)


def test_summary_aggregates_the_engines_logits_not_clipped_probabilities() -> None:
    """Logits 20, 20, -5, ...: the mean of the logits, then one sigmoid (0.9999997). Through
    probabilities (sigmoid(20) clipped to 1 - 1e-7, logit 16.1) it would come out 0.999993."""

    class Confident(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.next = 0

        def batch_logits(self, x: np.ndarray) -> np.ndarray:
            z = [(20.0, 20.0, -5.0)[(self.next + i) % 3] for i in range(len(x))]
            self.next += len(x)
            return np.array(z, np.float32)

    events = stream(speech(6.0, 0), Confident())
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    z = np.array([20.0, 20.0, -5.0, 20.0, 20.0])
    assert [e.spoof_probability for e in scores] == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-12)
    assert events[-1].spoof_probability == pytest.approx(1 / (1 + np.exp(-z.mean())), abs=1e-12)


def test_silence_is_no_speech_and_costs_no_inference() -> None:
    eng = FakeEngine(0.9)
    x = np.concatenate([np.zeros(6 * 16000, np.float32), speech(4.0, 1)])
    events = stream(x, eng)
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    labels = [e.label for e in scores]
    assert labels[0] == "no_speech" and scores[0].spoof_probability is None
    assert labels[-1] == "spoof"
    assert eng.windows == labels.count("spoof")
    assert [e.seq for e in scores] == list(range(len(scores)))
    assert events[-1].windows == len(scores)


def test_alert_turns_on_after_k_of_n_and_clips_are_saved(tmp_path) -> None:
    eng = FakeEngine(0.95)
    opts = DetectorOptions(batching=BatcherOptions(max_wait_ms=0), output=OutputOptions(save_alerts=tmp_path),
                           alerts=AlertOptions(n=5, k_on=3))
    events = stream(speech(6.0, 0), eng, opts)
    alerts = [e.alert for e in events if isinstance(e, ScoreEvent)]
    assert alerts == [False, False, True, True, True]
    assert events[-1].label == "spoof"
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["t-000002.json", "t-000002.wav", "t-000003.json", "t-000003.wav",
                     "t-000004.json", "t-000004.wav"]
    y, sr = sf.read(tmp_path / "t-000004.wav", dtype="float32")
    np.testing.assert_allclose(y, speech(6.0, 0)[32000:96000], atol=1e-6)


def test_48k_stereo_is_resampled_and_windowed_the_same() -> None:
    import soxr

    x = soxr.resample(speech(6.0, 0), 16000, 48000).astype(np.float32)
    stereo = np.stack([x, x * 0.5], axis=1)
    events = stream(stereo, FakeEngine(), rate=48000, channels=2)
    assert [e.end_s for e in events if isinstance(e, ScoreEvent)] == [4.0, 4.5, 5.0, 5.5, 6.0]


def test_shed_windows_are_reported_in_the_next_event_and_the_summary() -> None:
    eng = FakeEngine()
    eng.gate.clear()
    events: list = []

    async def main() -> None:
        det = LiveDetector(eng, no_wait(max_pending=2), sinks=[events.append]).start()
        s = det.open_stream("t", 16000)
        x = speech(8.0, 0)
        await s.push(x[:64000, None])  # window 0 goes to the engine, which is held
        await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 5)
        for c in chunks(x[64000:]):  # 8 more windows, 2 may queue
            await s.push(c)
        eng.gate.set()
        await s.finish()
        await det.aclose()

    asyncio.run(main())
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    summary = events[-1]
    assert summary.shed == 6 and sum(e.shed for e in scores) == 6
    assert [e.seq for e in scores] == [0, 7, 8] and scores[1].shed == 6
    assert summary.windows == 3


def test_engine_error_becomes_an_error_event_and_the_stream_goes_on() -> None:
    eng = FakeEngine()
    eng.fail = True
    events: list = []

    async def main() -> None:
        det = LiveDetector(eng, no_wait(), sinks=[events.append]).start()
        s = det.open_stream("t", 16000)
        x = speech(5.0, 0)
        await s.push(x[:64000, None])
        await s._handle.drain()  # window 0 alone in the failing batch
        await s.push(x[64000:, None])
        await s.finish()
        await det.aclose()

    asyncio.run(main())
    assert isinstance(events[0], ErrorEvent) and events[0].code == "engine_error"
    assert "window 0" in events[0].message and "boom" in events[0].message
    assert [e.seq for e in events if isinstance(e, ScoreEvent)] == [1, 2]
    assert events[-1].windows == 2


def test_sinks_write_json_lines_and_console_lines() -> None:
    out, con = io.StringIO(), io.StringIO()
    from realtime.console import ConsoleView

    async def main() -> None:
        det = LiveDetector(FakeEngine(), no_wait(),
                           sinks=[JsonLinesSink(out), ConsoleSink(ConsoleView(con, color=False))]).start()
        s = det.open_stream("t", 16000, policy="block")
        await s.push(speech(4.5, 0)[:, None])
        await s.finish()
        await det.aclose()

    asyncio.run(main())
    lines = out.getvalue().splitlines()
    assert [parse_event(line).type for line in lines] == ["score", "score", "summary"]
    assert json.loads(lines[0])["stream"] == "t"
    assert "BONAFIDE" in con.getvalue() and con.getvalue().count("\n") == 3


def test_offline_file_with_block_policy_sheds_nothing(tmp_path) -> None:
    path = tmp_path / "speech.wav"
    sf.write(path, speech(10.0, 2), 16000)
    eng = FakeEngine()
    events: list = []

    async def main() -> None:
        det = LiveDetector(eng, no_wait(max_pending=1), sinks=[events.append]).start()
        src = FileSource(path, realtime=False)
        s = det.open_stream(src.stream_id, src.sample_rate, src.channels, policy="block")
        await s.run(src)
        await det.aclose()

    asyncio.run(main())
    assert events[-1].shed == 0 and events[-1].windows == 13  # 4.0..10.0 s every 0.5 s


def test_errors_from_the_input() -> None:
    async def main() -> None:
        det = LiveDetector(FakeEngine(), DetectorOptions()).start()
        s = det.open_stream("t", 16000)
        bad = np.zeros((10, 1), np.float32)
        bad[3] = np.nan
        with pytest.raises(NonFiniteAudioError, match="'t'.*sample 3"):
            await s.push(bad)
        empty = det.open_stream("e", 16000)
        with pytest.raises(EmptyStreamError):
            await empty.finish()
        await det.aclose()

    asyncio.run(main())


def test_median_aggregate_is_refused_for_live_streams() -> None:
    with pytest.raises(ValueError, match="aggregate 'median' not accepted; accepted: mean_logit, mean_prob, max"):
        DetectorOptions(windowing=WindowingOptions(aggregate="median"))
