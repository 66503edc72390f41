"""Data analysis tool: measurements, shortcut warnings, report files, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.eda import EdaError, EdaOptions, analyze, main, run

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import DATA
MANIFEST = DATA / "bonafide" / "manifest.csv"
SR = 16_000

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"shared speech data not found at {DATA}")


def _clips(n: int = 4, seconds: float = 2.5) -> list[tuple[str, np.ndarray]]:
    with MANIFEST.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    out = []
    for row in rows:
        x, sr = sf.read(DATA / row["path"], dtype="float32")
        out.append((row["speaker"], x[: int(seconds * sr)]))
    return out


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(x.size, 1 / SR) > cutoff] = 0
    return np.fft.irfft(spec, n=x.size).astype(np.float32)


def _write_manifest(folder: Path, spoof_of) -> Path:  # type: ignore[no-untyped-def]
    """Real clips as bona fide, ``spoof_of(clip)`` as spoof, one unreadable row."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("path", "label", "speaker", "attack", "source", "split")]
    for i, (speaker, x) in enumerate(_clips()):
        split = "train" if i % 2 else "eval"
        sf.write(folder / f"b{i}.flac", x, SR)
        sf.write(folder / f"s{i}.flac", np.clip(spoof_of(x), -1, 1), SR)
        rows.append((f"b{i}.flac", "bonafide", speaker, "-", "librispeech", split))
        rows.append((f"s{i}.flac", "spoof", speaker, "fake", "fakegen", split))
    (folder / "junk.flac").write_bytes(b"not audio")
    rows.append(("junk.flac", "spoof", "x", "fake", "fakegen", "eval"))
    with (folder / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return folder / "manifest.csv"


def _shortcut_spoof(x: np.ndarray) -> np.ndarray:
    """Every nuisance at once: band limit, DC offset, louder, 1 s of leading digital silence."""
    y = _lowpass(x, 3500.0) * 2.0 + 0.02
    return np.concatenate([np.zeros(SR, np.float32), y.astype(np.float32)])


def test_analyze_measures_a_known_signal(tmp_path: Path) -> None:
    t = np.arange(2 * SR) / SR
    tone = 0.1 * np.sin(2 * np.pi * 1000 * t) + 0.05
    x = np.concatenate([np.zeros(SR // 2), tone]).astype(np.float32)
    sf.write(tmp_path / "t.wav", x, SR)
    s = analyze(tmp_path / "t.wav")
    assert s.duration_s == pytest.approx(2.5)
    assert s.dc == pytest.approx(0.04, abs=1e-3)
    assert s.leading_silence_s == pytest.approx(0.5, abs=0.03)
    assert s.high_band_db < -40  # a 1 kHz tone has nothing above 4 kHz
    assert int(np.argmax(s.log_spectrum[1:])) + 1 == 32  # 1 kHz bin at n_fft 512
    # Other rates are resampled to 16 kHz before measuring.
    sf.write(tmp_path / "t8.wav", x[::2], SR // 2)
    assert analyze(tmp_path / "t8.wav").sample_rate == SR // 2
    assert analyze(tmp_path / "t8.wav").duration_s == pytest.approx(2.5, abs=0.01)


def test_shortcuts_are_reported(tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path / "data", _shortcut_spoof)
    out = tmp_path / "eda"
    report = run(EdaOptions(manifest=manifest, out=out, progress=False))
    for name in ("report.md", "report.json", "duration_hist.png", "loudness_hist.png",
                 "leading_silence_hist.png", "spectrum_by_class.png", "spectrum_by_source.png"):
        assert (out / name).stat().st_size > 200, name
    data = json.loads((out / "report.json").read_text())
    assert data["counts"]["label"] == {"bonafide": 4, "spoof": 4}
    assert data["analysed"] == 8 and len(data["unreadable"]) == 1
    assert set(data["per_source"]) == {"librispeech", "fakegen"}
    assert data["speakers_per_split"] == {"eval": 2, "train": 2}
    text = " ".join(report["warnings"])  # type: ignore[arg-type]
    for what in ("duration", "loudness", "DC offset", "leading silence", "above 4 kHz", "could not be read"):
        assert what in text, what
    md = (out / "report.md").read_text()
    assert "| fakegen | 0 | 4 | 4 |" in md and "![spectrum_by_class.png](spectrum_by_class.png)" in md


def test_matched_classes_raise_no_warning(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # The same clips with a whisper of noise: identical nuisance statistics. (Not -x: raw
    # LibriSpeech has a DC offset of about -52 dBFS, which inverting would make a difference.)
    manifest = _write_manifest(tmp_path / "data", lambda x: x + rng.normal(0, 1e-4, x.size).astype(np.float32))
    report = run(EdaOptions(manifest=manifest, out=tmp_path / "eda", progress=False))
    assert report["warnings"] == ["1 files could not be read (listed in report.json)"]


def test_speaker_in_two_splits_is_flagged(tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path / "data", lambda x: x)
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace(",eval", ",train")  # b0 now in train, s0 (same speaker) in eval
    manifest.write_text("\n".join(lines) + "\n")
    report = run(EdaOptions(manifest=manifest, out=tmp_path / "eda", progress=False))
    assert any("more than one split" in w for w in report["warnings"])  # type: ignore[union-attr]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _write_manifest(tmp_path / "data", _shortcut_spoof)
    assert main(["--manifest", str(manifest), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: classes differ" in captured.err and "report.md" in captured.out
    args = ["--manifest", str(manifest), "--out", str(tmp_path / "b"), "--no-progress", "--fail-on-warning"]
    assert main(args) == 1
    capsys.readouterr()
    assert main(["--manifest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --manifest") and "\n" not in err


def test_bad_manifest_columns(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("file,key\na.flac,spoof\n")
    with pytest.raises(EdaError, match="needs columns path,label"):
        run(EdaOptions(manifest=bad, out=tmp_path / "eda", progress=False))
