"""Alert rule (k-of-n with hysteresis), smoothing, the energy speech gate, alert clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from realtime.alerts import AlertClipWriter, AlertOptions, AlertPolicy, EnergyGate, safe_name
from realtime.events import ScoreEvent
from tests.conftest import speech


def run(policy: AlertPolicy, probs: list[float]) -> list[bool]:
    return [policy.update(p).alert for p in probs]


def test_k_of_n_turns_on_at_k_and_off_below_k_off() -> None:
    pol = AlertPolicy(AlertOptions(smoothing="none", n=5, k_on=3, k_off=2), threshold=0.5)
    hi, lo = 0.9, 0.1
    alerts = run(pol, [hi, lo, hi, lo, hi, lo, lo, lo, lo])
    # over-count:   1   1   2   2   3   2   2   1   1   (last 5)
    assert alerts == [False, False, False, False, True, True, True, False, False]


def test_hysteresis_holds_the_alert_through_a_dip() -> None:
    opts = AlertOptions(smoothing="none", n=4, k_on=3, k_off=1)
    pol = AlertPolicy(opts, threshold=0.5)
    states = [pol.update(p) for p in [0.9, 0.9, 0.9, 0.2, 0.2, 0.9, 0.2, 0.2, 0.2, 0.2]]
    assert [s.alert for s in states] == [False, False, True, True, True, True, True, True, True, False]
    assert [i for i, s in enumerate(states) if s.changed] == [2, 9]


def test_ema_and_mean_smoothing() -> None:
    ema = AlertPolicy(AlertOptions(smoothing="ema", ema_alpha=0.5), 0.5)
    assert [ema.update(p).smoothed for p in (1.0, 0.0, 0.0)] == [1.0, 0.5, 0.25]
    mean = AlertPolicy(AlertOptions(smoothing="mean", smooth_n=2), 0.5)
    assert [mean.update(p).smoothed for p in (1.0, 0.0, 0.0)] == [1.0, 0.5, 0.0]


def test_a_single_spike_does_not_alert_with_defaults() -> None:
    pol = AlertPolicy(AlertOptions(), threshold=0.5)
    assert not any(run(pol, [0.1] * 5 + [0.99] + [0.1] * 5))
    assert any(run(pol, [0.95] * 6))


def test_threshold_override_and_label() -> None:
    pol = AlertPolicy(AlertOptions(threshold=0.8), threshold=0.5)
    assert pol.threshold == 0.8
    assert pol.label(0.79) == "bonafide" and pol.label(0.8) == "spoof"


@pytest.mark.parametrize("kwargs, match", [
    ({"k_on": 6}, "k_off <= k_on <= n"),
    ({"k_off": 4, "k_on": 3}, "k_off <= k_on <= n"),
    ({"smoothing": "median"}, "accepted: ema, mean, none"),
    ({"ema_alpha": 0.0}, "ema_alpha"),
    ({"threshold": 1.5}, "threshold"),
    ({"gate": "silero"}, "accepted: energy, off"),
    ({"gate_db": 3.0}, "gate_db"),
])
def test_options_name_the_bad_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AlertOptions(**kwargs)


@given(st.lists(st.floats(0.0, 1.0), max_size=60), st.integers(1, 6), st.data())
def test_alert_matches_a_recount_of_the_last_n(probs: list[float], n: int, data) -> None:
    k_on = data.draw(st.integers(1, n))
    k_off = data.draw(st.integers(1, k_on))
    pol = AlertPolicy(AlertOptions(smoothing="none", n=n, k_on=k_on, k_off=k_off), 0.5)
    alert = False
    for i, p in enumerate(probs):
        s = pol.update(p)
        over = sum(q >= 0.5 for q in probs[max(0, i - n + 1): i + 1])
        assert s.over == over
        alert = over >= k_on if not alert else over >= k_off
        assert s.alert == alert


def test_energy_gate_passes_speech_and_stops_silence_and_hiss() -> None:
    gate = AlertOptions().make_gate()
    assert isinstance(gate, EnergyGate) and gate.frame == 400
    for i in range(3):
        assert gate(speech(4.0, i)), f"speech file {i} gated out"
    rng = np.random.default_rng(0)
    assert not gate(np.zeros(64000, np.float32))
    hiss = (rng.standard_normal(64000) * 10 ** (-60 / 20)).astype(np.float32)  # -60 dBFS
    assert not gate(hiss)
    # Half a second of speech in 4 s of silence is enough (12.5% of the frames).
    x = np.zeros(64000, np.float32)
    x[:8000] = speech(0.5, 0) / np.abs(speech(0.5, 0)).max() * 0.5
    assert gate.active_ratio(x) > 0.1 and gate(x)
    assert AlertOptions(gate="off").make_gate() is None


def test_safe_name_keeps_clip_files_inside_the_folder() -> None:
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in safe_name("a/b\\c") and safe_name("...") == "stream"
    assert len(safe_name("x" * 500)) == 64


def test_clip_writer_saves_wav_and_json(tmp_path) -> None:
    w = AlertClipWriter(tmp_path / "alerts")
    ev = ScoreEvent(stream="call/7", seq=3, start_s=1.5, end_s=5.5, spoof_probability=0.9,
                    label="spoof", alert=True, latency_ms=4.0, model="specrnet-00000000")
    x = speech(4.0, 0)
    w.save(ev, x)
    w.close()
    assert w.saved == 1
    wav = tmp_path / "alerts" / "call_7-000003.wav"
    y, sr = sf.read(wav, dtype="float32")
    assert sr == 16000
    np.testing.assert_array_equal(y, x)
    assert json.loads(wav.with_suffix(".json").read_text())["seq"] == 3


def test_clip_names_never_collide(tmp_path) -> None:
    """A dot in the stream id stays in the name (not taken for a suffix); the same id and seq
    twice (a restart, two clients) keep both clips."""
    w = AlertClipWriter(tmp_path)
    x = speech(4.0, 0)
    for seq in (1, 2, 2):
        w.save(ScoreEvent(stream="call.7", seq=seq, start_s=0.5 * seq, end_s=4 + 0.5 * seq, spoof_probability=0.9,
                          label="spoof", alert=True, latency_ms=1.0, model="m"), x)
    w.close()
    assert w.saved == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "call.7-000001.json", "call.7-000001.wav", "call.7-000002-2.json", "call.7-000002-2.wav",
        "call.7-000002.json", "call.7-000002.wav"]


def test_two_clients_with_one_stream_id_keep_every_alert_clip(tmp_path) -> None:
    """Server, --save-alerts: two clients both call their stream "call.7"; every alerting
    window of each keeps its own clip, and the events (and clips) tell the clients apart."""
    import asyncio
    from dataclasses import replace

    from tests.test_server import DET, client, running, s16
    from tests.test_session import FakeEngine

    detector = replace(DET, output=replace(DET.output, save_alerts=tmp_path))
    start = {"type": "start", "sample_rate": 16000, "format": "s16le", "stream": "call.7"}

    async def main() -> list:
        async with running(FakeEngine(prob=0.95), detector=detector) as server:
            return await asyncio.gather(client(server, start, s16(speech(10.0, 0))),
                                        client(server, start, s16(speech(10.0, 1))))

    results = asyncio.run(main())
    alerts = [e for events, _ in results for e in events if e.type == "score" and e.alert]
    assert len({e.connection for e in alerts}) == 2 and len(alerts) >= 2 * 10
    for events, close in results:
        assert close == 1000 and len({e.connection for e in events}) == 1
    clips = sorted(tmp_path.glob("*.json"))
    assert len(clips) == len(alerts) and len(list(tmp_path.glob("*.wav"))) == len(alerts)
    saved = sorted((json.loads(p.read_text())["connection"], json.loads(p.read_text())["seq"]) for p in clips)
    assert saved == sorted((e.connection, e.seq) for e in alerts)
