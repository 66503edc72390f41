"""Evaluation mechanics with a randomly initialised checkpoint (scores mean nothing; plumbing does)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import engines
from engines.audio_io import read_mono
from training.audio import cut_windows, window_starts
from training.evaluate import EvalOptions, evaluate, main
from training.metrics import eer_from_spoof_scores
from training.report import read_asv_scores
from tests.conftest import speech
from tests.tiny_corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalset")
    manifest = make_corpus(root, n_per_class=4, dev_per_class=1, split_column=False)
    sf.write(root / "long.wav", speech(6.0, 9), 16000)  # 5 windows at hop 0.5 s
    (root / "broken.wav").write_bytes(b"this is not audio")
    with open(manifest, "a", newline="") as f:
        w = csv.writer(f)
        w.writerow(["long.wav", "bonafide", "spk9", "", "tiny"])
        w.writerow(["broken.wav", "spoof", "x", "RPV", "tiny-synth"])
        w.writerow(["missing.flac", "spoof", "x", "RPV", "tiny-synth"])
    (root / "asv.txt").write_text("bonafide target 3.1\nbonafide target 2.5\nbonafide target 1.9\n"
                                  "bonafide nontarget -2.0\nbonafide nontarget 0.1\nbonafide nontarget -1.1\n"
                                  "A07 spoof 0.5\nA08 spoof 2.2\nA09 spoof -0.4\n")
    return manifest


def test_windows_cover_the_whole_file() -> None:
    assert window_starts(64000, 64000, 8000) == [0]
    assert window_starts(96000, 64000, 8000) == [0, 8000, 16000, 24000, 32000]
    assert window_starts(100000, 64000, 8000)[-1] == 36000  # one extra window aligned to the end
    short = np.arange(1000, dtype=np.float32)
    w = cut_windows(short, 4000, 500)
    assert w.shape == (1, 4000) and np.array_equal(w[0, 1000:2000], short)


def test_load_audio_downmixes_and_resamples(tmp_path: Path) -> None:
    x = speech(1.0, 0)
    import soxr

    y = soxr.resample(x, 16000, 48000)
    sf.write(tmp_path / "st.flac", np.stack([y, y], axis=1), 48000)
    z = read_mono(tmp_path / "st.flac")
    assert z.dtype == np.float32 and abs(z.size - 16000) <= 1
    assert np.corrcoef(z[:15000], x[:15000])[0, 1] > 0.99


def test_evaluate_scores_reports_and_plots(corpus: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = evaluate(EvalOptions(model=str(checkpoints["specrnet"]), out=str(out), manifest=str(corpus),
                               engine="onnx", asv_scores=str(corpus.parent / "asv.txt"), progress=False,
                               batch_size=4, workers=2))
    # 9 readable files scored, the broken and the missing one skipped by name.
    assert len(res.scores) == 9
    assert sorted(Path(p).name for p, _ in res.unreadable) == ["broken.wav", "missing.flac"]
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "score", "attack", "source"]
    assert len(rows) == 9 and {r["label"] for r in rows} == {"bonafide", "spoof"}

    # The file score is the mean of the window logits the engine gives for that file.
    eng = engines.load(checkpoints["specrnet"], engine="onnx")
    long_row = next(r for r in rows if r["path"].endswith("long.wav"))
    windows = cut_windows(read_mono(corpus.parent / "long.wav"), 64000, 8000)
    assert windows.shape[0] == 5
    assert float(long_row["score"]) == pytest.approx(float(eng.logits(windows).mean()), abs=1e-5)
    assert next(s for s in res.scores if s.path.endswith("long.wav")).windows == 5

    rep = json.loads((out / "report.json").read_text())
    m = rep["metrics"]
    labels = np.array([r["label"] for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    assert m["eer"] == pytest.approx(eer_from_spoof_scores(labels, scores)[0], abs=1e-6)
    assert 0.0 <= m["eer"] <= 1.0 and 0.0 <= m["auc"] <= 1.0 and m["min_dcf"] is not None
    assert m["min_dcf_costs"] == {"p_spoof": 0.05, "c_miss": 1.0, "c_fa": 10.0}
    assert m["tdcf"] is not None and m["tdcf"]["asv_trials"] == {"target": 3, "nontarget": 3, "spoof": 3}
    at = m["at_model_threshold"]
    assert at["tp"] + at["fp"] + at["tn"] + at["fn"] == 9
    assert set(rep["per_attack"]) == {"RPV", "RPV2"}
    assert rep["per_attack"]["RPV"]["bonafide_pool"] == "all"
    assert set(rep["per_source"]) == {"tiny-synth"}
    assert rep["data"]["unreadable"] == 2
    md = (out / "report.md").read_text()
    assert "broken.wav" in md and "HIGHER = MORE SPOOF" in md and "min t-DCF" in md
    for name in ("det.png", "scores_hist.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_dataset_mode_and_errors(corpus: Path, checkpoints: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--dataset", "manifest", "--root", str(corpus), "--model", str(checkpoints["specrnet"]),
               "--out", str(tmp_path / "r"), "--engine", "onnx", "--no-plots", "--no-progress"])
    assert rc == 0
    assert "9 files scored, 2 unreadable" in capsys.readouterr().out
    assert not (tmp_path / "r" / "det.png").exists() and (tmp_path / "r" / "scores.csv").is_file()
    rc = main(["--manifest", str(corpus), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: model ") and err.count("\n") == 1
    with pytest.raises(ValueError, match="exactly one of"):
        EvalOptions(model="specrnet", out="o")
    rc = main(["--manifest", str(corpus), "--subset", "eval", "--model", str(checkpoints["specrnet"]),
               "--out", str(tmp_path / "y")])
    assert rc == 2 and "needs a 'split' column" in capsys.readouterr().err


def test_manifest_subset_keeps_one_split(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    manifest = make_corpus(tmp_path / "c", n_per_class=3, dev_per_class=1, odd_formats=False)
    res = evaluate(EvalOptions(model=str(checkpoints["specrnet"]), out=str(tmp_path / "r"), manifest=str(manifest),
                               subset="dev", engine="onnx", plots=False, progress=False))
    assert sorted(Path(s.path).name for s in res.scores) == ["bona_0.wav", "spoof_0.wav"]
    assert res.report["data"]["description"].endswith("split dev")


def test_asv_score_file_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "asv.txt"
    p.write_text("LA_0001 A07 spoof 1.0\nLA_0001 - target 2.0\nLA_0002 - nontarget x\n")
    with pytest.raises(ValueError, match=r"asv.txt:3: the last column must be the ASV score, got 'x'"):
        read_asv_scores(p)
    p.write_text("- target 2.0\n- spoof 1.0\n")
    with pytest.raises(ValueError, match="no ASV trials with key\\(s\\) nontarget"):
        read_asv_scores(p)
