"""Robustness sweep: the conditions change the audio as named, and the sweep reports every condition
against the clean one (shipped SpecRNet on a tiny corpus; the numbers are plumbing, not accuracy)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.evaluate import EvalOptions, evaluate
from training.robustness import CONDITIONS, RobustnessOptions, main, run_sweep
from tests.conftest import speech
from tests.tiny_corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("robust")
    manifest = make_corpus(root, n_per_class=3, dev_per_class=0, split_column=False, odd_formats=False)
    sf.write(root / "coded.wav", speech(4.0, 7), 16000)
    with open(manifest, "a", newline="") as f:
        csv.writer(f).writerow(["coded.wav", "bonafide", "spk7", "", "tiny+tel8k"])
    return manifest


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / 16000)
    return float(spec[(f >= lo) & (f < hi)].sum())


def _scores(path: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f)}


def test_conditions_do_what_they_say() -> None:
    x = speech(2.0, 3)
    p = Path("a.wav")
    loud = CONDITIONS["gain2"].transform(p, x)
    assert np.abs(loud).max() <= 1.0 and np.allclose(loud[np.abs(x) < 0.4], 2 * x[np.abs(x) < 0.4])
    assert np.allclose(CONDITIONS["gain0.05"].transform(p, x), 0.05 * x, atol=1e-7)
    tel = CONDITIONS["tel8k"].transform(p, x)
    assert tel.size == x.size and _band_energy(tel, 4200, 8000) < 1e-3 * _band_energy(x, 4200, 8000)
    noisy = CONDITIONS["white10"].transform(p, x)
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((noisy - x).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5
    assert np.array_equal(noisy, CONDITIONS["white10"].transform(p, x))  # seeded by the path
    assert not np.array_equal(noisy, CONDITIONS["white10"].transform(Path("b.wav"), x))


def test_sweep_reports_every_condition_against_clean(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    s = run_sweep(RobustnessOptions(model="specrnet", out=str(out), manifest=str(corpus), subset=None,
                                    conditions=("gain0.1", "tel8k"), engine="onnx", threads=1, progress=False))
    assert list(s["conditions"]) == ["clean", "gain0.1", "tel8k"]
    assert s["files"] == 6  # the +tel8k copy is left out by default
    clean = s["conditions"]["clean"]
    assert clean["prob_shift_bonafide"] == 0.0 and clean["eer_ratio"] in (1.0, None)
    # The clean condition is exactly what evaluate() reports on the same files.
    ref = evaluate(EvalOptions(model="specrnet", out=str(tmp_path / "ref"), manifest=str(corpus), engine="onnx",
                               threads=1, plots=False, progress=False))
    ref_scores = {f.path: f.score for f in ref.scores if "+" not in (f.source or "")}
    clean_scores = _scores(out / "clean" / "scores.csv")
    assert clean_scores.keys() == ref_scores.keys()
    assert all(abs(clean_scores[k] - ref_scores[k]) < 1e-5 for k in ref_scores)
    for name in ("gain0.1", "tel8k"):
        r = s["conditions"][name]
        assert 0.0 <= r["mean_prob_bonafide"] <= 1.0 and 0.0 <= r["mean_prob_spoof"] <= 1.0
        scores = _scores(out / name / "scores.csv")
        assert scores.keys() == clean_scores.keys() and scores != clean_scores  # the transform reached the engine
    assert set(s["targets"]) == {"gain_max_prob_shift", "telephone_eer_ratio"}
    saved = json.loads((out / "robustness.json").read_text())
    assert saved["conditions"]["tel8k"]["description"].startswith("8 kHz")
    assert "| tel8k |" in (out / "robustness.md").read_text()
    assert (out / "robustness.png").stat().st_size > 1000


def test_cli_rejects_unknown_condition(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--manifest", str(corpus), "--model", "specrnet", "--out", str(tmp_path),
                 "--conditions", "underwater"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "underwater" in err and "gain0.05" in err
