"""Extension points: a backend added from outside the package is found by name everywhere
(engines.load, --list-engines, --engine) without touching engines/__init__.py or realtime/cli.py."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import engines
from engines.backends import BACKENDS
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import EngineError
from realtime.cli import main
from tests.conftest import speech_files


class LoudnessEngine(Engine):
    """A stand-in model: the spoof logit is the window's RMS level in dB above -30 dBFS."""

    name = "loudness"
    uses_threads = True

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        return cls(request.config, request.max_batch)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        return Availability(True, "numpy on the CPU (test backend)")

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1)) + 1e-12
        return (20 * np.log10(rms) + 30).astype(np.float32)


@pytest.fixture
def loudness_backend() -> Iterator[str]:
    engines.register("loudness", f"{__name__}:LoudnessEngine")
    try:
        yield "loudness"
    finally:
        del BACKENDS["loudness"]


def test_registered_backend_loads_scores_and_lists(loudness_backend: str, checkpoints: dict[str, Path]) -> None:
    e = engines.load(checkpoints["specrnet"], loudness_backend, threads=2)
    assert isinstance(e, LoudnessEngine)
    quiet, loud = np.full((1, e.window_samples), 0.001, np.float32), np.full((1, e.window_samples), 0.5, np.float32)
    z = e.logits(np.concatenate([quiet, loud]))
    assert z[0] < 0 < z[1]  # -60+30 dB vs -6+30 dB, through the checkpoint's calibration
    names = [s.name for s in engines.available_engines(checkpoints["specrnet"])]
    assert loudness_backend in names
    assert "auto" not in names


def test_registered_backend_runs_from_the_cli(loudness_backend: str, checkpoints: dict[str, Path],
                                             tmp_path: Path) -> None:
    audio, rate = sf.read(speech_files(1)[0], dtype="float32")
    summaries = {}
    for name, gain in (("loud", 1.0), ("quiet", 0.01)):  # -40 dB: every window's logit falls by 40
        path = tmp_path / f"{name}.wav"
        sf.write(path, audio * gain, rate)
        out, err = io.StringIO(), io.StringIO()
        rc = main(["--input", str(path), "--offline", "--json", "--speech-gate", "off", "--model",
                   str(checkpoints["specrnet"]), "--engine", loudness_backend], stdout=out, stderr=err)
        assert rc == 0, err.getvalue()
        summaries[name] = json.loads(out.getvalue().splitlines()[-1])
    assert summaries["loud"]["type"] == summaries["quiet"]["type"] == "summary"
    assert summaries["loud"]["spoof_probability"] > summaries["quiet"]["spoof_probability"]
    listed = io.StringIO()
    assert main(["--list-engines"], stdout=listed) == 0
    assert "loudness" in listed.getvalue() and "test backend" in listed.getvalue()


def test_register_refuses_taken_names_and_bad_targets() -> None:
    with pytest.raises(EngineError, match="taken"):
        engines.register("onnx", "x:Y")
    with pytest.raises(EngineError, match="taken"):
        engines.register("auto", "x:Y")
    with pytest.raises(EngineError, match="module:Class"):
        engines.register("new", "no_colon")


def test_threads_refused_by_a_backend_that_ignores_them(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(EngineError, match="--threads is for the CPU engines"):
        engines.load(checkpoints["specrnet"], "cuda", threads=4)


@pytest.fixture
def bonafide_source() -> Iterator[str]:
    """A source added from outside realtime/: ``--input bonafide:N``, the N-th shared speech file."""
    from realtime import inputs
    from realtime.sources.file import FileSource

    def open_bonafide(words, options) -> inputs.Inputs:
        path = speech_files(int(words[0]) + 1)[-1] if words else speech_files(1)[0]
        return inputs.Inputs([(f"bonafide:{path.stem}", lambda: FileSource(path, realtime=False))], "block",
                             path.name, files=True)

    inputs.register("bonafide", open_bonafide)
    yield "bonafide"
    del inputs.SOURCES["bonafide"]


def test_registered_source_runs_from_the_cli(bonafide_source: str, checkpoints: dict[str, Path]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--input", f"{bonafide_source}:1", "--json", "--engine", "onnx",
                 "--model", str(checkpoints["specrnet"])], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    scores = [e for e in events if e["type"] == "score"]
    assert scores and all(e["stream"].startswith("bonafide:") for e in events)
    assert events[-1]["type"] == "summary" and events[-1]["windows"] == len(scores)
    assert events[-1]["label"] in ("bonafide", "spoof")
