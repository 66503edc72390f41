"""realtime-detect on files: offline summaries, bad inputs, paced streaming (random weights)."""
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from realtime import cli as cli_module
from realtime.cli import main
from realtime.events import ScoreEvent, SummaryEvent
from tests.conftest import REPO, speech, speech_files


def run_cli(args: list[str]) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, stdout=out, stderr=err)
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return code, events, err.getvalue()


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mixed")
    sf.write(d / "a_16k.wav", speech(6.0, 0), 16000)
    stereo = soxr.resample(np.stack([speech(7.0, 1), speech(7.0, 2)], axis=1), 16000, 44100)
    sf.write(d / "b_44k_stereo.flac", stereo, 44100)
    sf.write(d / "c.mp3", soxr.resample(speech(5.0, 3), 16000, 44100), 44100, format="MP3")
    sf.write(d / "d_short.wav", speech(1.5, 0), 16000)
    nan = speech(5.0, 1)
    nan[20000] = np.nan
    sf.write(d / "e_nan.wav", nan, 16000, subtype="FLOAT")
    (d / "f_empty.wav").write_bytes(b"")
    (d / "g_text.wav").write_text("this is not audio\n")
    sf.write(d / "full.flac", speech(8.0, 2), 16000)
    raw = (d / "full.flac").read_bytes()
    (d / "full.flac").unlink()
    (d / "h_corrupt.flac").write_bytes(raw[: len(raw) // 2])  # header intact, audio cut mid-frame
    (d / "notes.txt").write_text("ignored: not an audio extension\n")
    return d


@pytest.mark.parametrize("mode", [["--offline"], ["--speed", "1000"]])
def test_folder_of_mixed_files(checkpoints: dict[str, Path], mixed_folder: Path, mode: list[str]) -> None:
    """Offline or paced, the same: a summary per good file, one bad_audio error per bad one."""
    code, events, err = run_cli(["--input", str(mixed_folder), *mode, "--json", "--model", str(checkpoints["specrnet"])])
    assert code == 1, "some files failed, so the exit code must say so"
    events = [e for e in events if e["type"] != "score"]
    assert len(events) == 8, "one event per file"
    by_file = {Path(e["stream"]).name: e for e in events}
    assert "notes.txt" not in by_file
    good = {"a_16k.wav": 5, "b_44k_stereo.flac": 7, "c.mp3": 3, "d_short.wav": 1}
    for name, n_windows in good.items():
        ev = by_file[name]
        assert ev["type"] == "summary", ev
        # 4-s windows every 0.5 s plus one window ending at the end of the audio.
        assert ev["windows"] == n_windows, (name, ev)
        assert 0.0 <= ev["spoof_probability"] <= 1.0
        assert ev["label"] in ("spoof", "bonafide")
    assert by_file["d_short.wav"].get("tiled") is True and "tiled" not in by_file["a_16k.wav"]
    assert abs(by_file["b_44k_stereo.flac"]["duration_s"] - 7.0) < 0.01
    for name, reason in {"e_nan.wav": "NaN", "f_empty.wav": "empty", "g_text.wav": "not a readable audio file",
                         "h_corrupt.flac": "decoding failed"}.items():
        ev = by_file[name]
        assert ev["type"] == "error" and ev["code"] == "bad_audio" and reason in ev["message"], ev
    # One stderr line per failed file, naming it.
    err_lines = [line for line in err.splitlines() if line.strip()]
    assert len(err_lines) == 4 and all(any(n in line for n in ("e_nan", "f_empty", "g_text", "h_corrupt")) for line in err_lines)


def test_offline_summary_is_mean_of_window_logits(checkpoints: dict[str, Path], mixed_folder: Path) -> None:
    wav = mixed_folder / "a_16k.wav"
    code, events, _ = run_cli(["--input", str(wav), "--offline", "--windows", "--json", "--model", str(checkpoints["resmax"])])
    assert code == 0
    scores = [e for e in events if e["type"] == "score"]
    summary = events[-1]
    assert summary["type"] == "summary" and len(scores) == summary["windows"] == 5
    assert [e["seq"] for e in scores] == list(range(5))
    assert [e["start_s"] for e in scores] == [0.0, 0.5, 1.0, 1.5, 2.0]
    p = np.array([e["spoof_probability"] for e in scores], dtype=np.float64)
    z = np.log(p / (1 - p))
    assert summary["spoof_probability"] == pytest.approx(1 / (1 + np.exp(-z.mean())), abs=2e-4)
    # The same windows scored directly through the engine give the same probabilities.
    import engines

    audio = sf.read(wav, dtype="float32")[0]
    windows = np.stack([audio[s : s + 64000] for s in range(0, 8001 * 4, 8000)][:5])
    direct = engines.load(checkpoints["resmax"], engine="onnx").score(windows)
    np.testing.assert_allclose(p, direct, atol=1e-4)


def test_console_view_and_usage_errors(checkpoints: dict[str, Path], mixed_folder: Path) -> None:
    code, _, _ = run_cli(["--input", str(mixed_folder / "a_16k.wav"), "--offline", "--model", str(checkpoints["specrnet"])])
    assert code == 0
    out = io.StringIO()
    main(["--input", str(mixed_folder / "a_16k.wav"), "--offline", "--no-color", "--model", str(checkpoints["specrnet"])], stdout=out)
    assert "a_16k.wav" in out.getvalue() and ("SPOOF" in out.getvalue() or "BONAFIDE" in out.getvalue())
    with pytest.raises(SystemExit) as e:
        main(["--input", "x.wav", "--threshold", "2"], stdout=io.StringIO(), stderr=io.StringIO())
    assert e.value.code == 2
    code, _, err = run_cli(["--input", str(mixed_folder / "a_16k.wav"), "--model", "/nonexistent/model"])
    assert code == 1 and "neither a shipped model" in err and len(err.splitlines()) == 1


def test_list_engines(checkpoints: dict[str, Path]) -> None:
    out = io.StringIO()
    assert main(["--list-engines"], stdout=out) == 0
    text = out.getvalue()
    assert "onnx" in text and "tensorrt" in text and "cuda" in text and "onnx-int8" in text
    triton = next(line for line in text.splitlines() if " triton " in line)
    assert ("--triton-url" in triton) if triton.startswith("yes") else ("realtime-detect[triton]" in triton)
    out = io.StringIO()
    assert main(["--list-engines", "--model", str(checkpoints["specrnet"])], stdout=out) == 0
    int8 = next(line for line in out.getvalue().splitlines() if " onnx-int8 " in line)
    assert int8.startswith("no") and "python -m engines.quantize" in int8
    out, err = io.StringIO(), io.StringIO()
    assert main(["--list-engines", "--model", "/nonexistent/model"], stdout=out, stderr=err) == 1
    assert out.getvalue() == "" and len(err.getvalue().splitlines()) == 1 and "neither a shipped model" in err.getvalue()


def test_int8_engine_on_a_file(int8_checkpoints: dict[str, Path], mixed_folder: Path) -> None:
    wav = str(mixed_folder / "a_16k.wav")
    args = ["--input", wav, "--offline", "--json", "--model", str(int8_checkpoints["specrnet"])]
    code, int8, _ = run_cli([*args, "--engine", "onnx-int8"])
    assert code == 0 and int8[0]["type"] == "summary" and int8[0]["windows"] == 5
    _, fp32, _ = run_cli([*args, "--engine", "onnx"])
    assert abs(int8[0]["spoof_probability"] - fp32[0]["spoof_probability"]) < 0.01


@pytest.mark.slow
def test_paced_file_prints_one_event_per_hop_in_real_time(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    wav = tmp_path / "five.wav"
    sf.write(wav, speech(5.0, 2), 16000)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "--input", str(wav), "--json",
                             "--model", str(checkpoints["specrnet"])], cwd=REPO, stdout=subprocess.PIPE, text=True)
    arrivals: list[tuple[float, dict]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        arrivals.append((time.monotonic() - t0, json.loads(line)))
    assert proc.wait(timeout=30) == 0
    scores = [(t, e) for t, e in arrivals if e["type"] == "score"]
    assert [e["end_s"] for _, e in scores] == [4.0, 4.5, 5.0]
    # Paced: the window ending at 4.5 s cannot be scored before 4.5 s of audio has played.
    first, last = scores[0][0], scores[-1][0]
    assert last - first >= 0.8, f"events were not paced: {[round(t, 2) for t, _ in scores]}"
    assert all(e["latency_ms"] < 1000 for _, e in scores)
    assert arrivals[-1][1]["type"] == "summary" and arrivals[-1][1]["windows"] == 3


def test_events_log_records_what_json_prints(checkpoints: dict[str, Path], mixed_folder: Path, tmp_path: Path) -> None:
    wav, log = str(mixed_folder / "a_16k.wav"), tmp_path / "events.jsonl"
    args = ["--input", wav, "--offline", "--windows", "--json", "--model", str(checkpoints["specrnet"])]
    code, events, _ = run_cli([*args, "--events", str(log)])
    assert code == 0 and len(events) == 6
    assert [json.loads(line) for line in log.read_text().splitlines()] == events
    code, _, err = run_cli([*args, "--events", str(tmp_path / "no-such-dir" / "e.jsonl")])
    assert code == 1 and "cannot open" in err and len(err.splitlines()) == 1
    for flag, value in (("--max-realtime-factor", "-1"), ("--events-fsync", "-2"), ("--max-message-rate", "-5")):
        with pytest.raises(SystemExit) as e:
            main(["--input", "ws", flag, value], stdout=io.StringIO(), stderr=io.StringIO())
        assert e.value.code == 2


def cli_process(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "realtime.cli", *args], cwd=REPO, stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


def test_port_in_use_is_one_line_and_exit_1() -> None:
    """Three tries (an abort in ONNX Runtime's teardown came once in four): never a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for _ in range(3):
            cli = cli_process("--input", "ws", "--port", str(port), "--engine", "onnx")
            out, err = cli.communicate(timeout=120)
            assert cli.returncode == 1, err
            assert err.splitlines() == [f"realtime-detect: port {port} on 127.0.0.1 is already in use; "
                                        "choose another with --port (0: any free one)"]


@pytest.mark.parametrize("mode", [["--speed", "8"], ["--offline", "--windows"]])
def test_stdout_closed_by_its_reader_ends_the_run_quietly(mode: list[str]) -> None:
    """`realtime-detect ... --json | head -1`: no BrokenPipe traceback, exit 0, and it stops
    (a paced replay of the demo would otherwise go on for seconds)."""
    cli = cli_process("--input", "demo", "--json", "--engine", "onnx", *mode)
    try:
        first = cli.stdout.readline()
        assert json.loads(first)["type"] == "score"
        cli.stdout.close()  # what `head -1` does after its line
        err = cli.stderr.read()
        assert cli.wait(60) == 0, err
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    assert err == ""


def interrupt_after_first_event(cli: subprocess.Popen) -> tuple[int, list[dict], str]:
    """SIGINT (Ctrl+C) once the first event is out; the exit status, every event, stderr."""
    import signal

    try:
        first = cli.stdout.readline()
        assert json.loads(first)["type"] == "score"
        cli.send_signal(signal.SIGINT)
        # Read on through the pipe's buffer (communicate() would skip what it holds already).
        out, err = cli.stdout.read(), cli.stderr.read()
        cli.wait(60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    return cli.returncode, [json.loads(line) for line in (first + out).splitlines()], err


def test_ctrl_c_during_replay_scores_what_arrived_and_summarises() -> None:
    """SIGINT during a paced replay: the windows so far, then the file's summary; exit 130."""
    code, events, err = interrupt_after_first_event(
        cli_process("--input", "demo", "--json", "--engine", "onnx", "--speed", "2"))
    assert code == 130, err
    scores = [e for e in events if e["type"] == "score"]
    assert events[-1]["type"] == "summary" and events[-1]["windows"] == len(scores) >= 1
    assert events[-1]["duration_s"] < sf.info(REPO / "realtime" / "assets" / "demo.flac").duration
    assert "Traceback" not in err


def test_ctrl_c_during_an_offline_run_scores_what_was_read_and_summarises(tmp_path: Path) -> None:
    """SIGINT during --offline, as during a paced replay: the windows read so far, that file's
    summary, no further file; exit 130."""
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long, speech(600.0, 0), 16000)  # far longer than the run gets to read
    sf.write(short, speech(5.0, 1), 16000)
    code, events, err = interrupt_after_first_event(
        cli_process("--input", str(long), str(short), "--offline", "--windows", "--json", "--engine", "onnx"))
    assert code == 130, err
    scores = [e for e in events if e["type"] == "score"]
    assert [e for e in events if e["type"] != "score"] == events[-1:] and events[-1]["type"] == "summary"
    assert events[-1]["stream"] == str(long) and events[-1]["windows"] == len(scores) >= 1
    assert [e["seq"] for e in scores] == list(range(len(scores)))
    assert events[-1]["duration_s"] < 600.0
    assert "Traceback" not in err


def test_offline_and_paced_replay_give_the_same_file_verdict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--offline is a paced replay without the pacing, not another pipeline: the same speech gate,
    alert rule and aggregate, so the same windows, labels, alerts and summary (issue 13 item 15)."""
    audio, rate = sf.read(speech_files(1)[0], dtype="float32")
    wav = tmp_path / "pause-then-speech.wav"
    sf.write(wav, np.concatenate([np.zeros(5 * rate, np.float32), audio]), rate)  # silence: the gate has work

    class Record(list):
        """A run observer (as --plot): every event, unrounded, as the pipeline made it."""

        def engine_ready(self, engine, threshold: float, hop_s: float) -> None:
            pass

        def window(self, window) -> None:
            pass

        def event(self, ev) -> None:
            self.append(ev)

    def run(*args: str) -> tuple[list[ScoreEvent], SummaryEvent]:
        seen = Record()
        monkeypatch.setattr(cli_module, "plot_observers", lambda files, options, stderr: [seen])
        err = io.StringIO()
        assert main(["--input", str(wav), "--quiet", "--engine", "onnx", *args], stdout=io.StringIO(), stderr=err) == 0, \
            err.getvalue()
        assert isinstance(seen[-1], SummaryEvent) and all(isinstance(e, ScoreEvent) for e in seen[:-1])
        return seen[:-1], seen[-1]

    # A threshold between the middle two window scores: both labels occur and the alert rule has work.
    p = sorted(e.spoof_probability for e in run("--offline")[0] if e.spoof_probability is not None)
    threshold = f"{(p[len(p) // 2 - 1] + p[len(p) // 2]) / 2:.6f}"
    offline, offline_summary = run("--offline", "--threshold", threshold)
    paced, paced_summary = run("--speed", "1000", "--threshold", threshold)
    assert {e.label for e in offline} == {"no_speech", "bonafide", "spoof"}
    assert [(e.seq, e.start_s, e.end_s, e.label, e.alert) for e in offline] == \
        [(e.seq, e.start_s, e.end_s, e.label, e.alert) for e in paced]
    assert [e.spoof_probability for e in offline] == pytest.approx([e.spoof_probability for e in paced], abs=1e-6)
    for s in (offline_summary, paced_summary):
        assert s.windows == len(offline) and s.shed == 0 and s.tiled is False
    assert (offline_summary.label, offline_summary.duration_s) == (paced_summary.label, paced_summary.duration_s)
    assert offline_summary.spoof_probability == pytest.approx(paced_summary.spoof_probability, abs=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "triton"], "--engine triton needs --triton-url grpc://HOST:PORT"),
    (["--engine", "onnx", "--triton-url", "grpc://127.0.0.1:8001"], "are for --engine triton, not --engine onnx"),
    (["--engine", "triton", "--triton-url", "http://127.0.0.1:8000"], "--triton-url 'http://127.0.0.1:8000': expected grpc://HOST:PORT"),
    (["--engine", "triton", "--triton-url", "grpc://h:1", "--triton-timeout", "0"], "--triton-timeout 0.0: must be between"),
])
def test_triton_options_are_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--input", "demo", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
