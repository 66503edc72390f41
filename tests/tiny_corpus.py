"""A tiny labelled corpus for mechanics tests: real bona fide speech and crude "spoofs".

The spoofs are the same kind of speech resynthesised from its STFT magnitude with random phase
(a crude vocoder: buzzy, smeared). They only exercise the plumbing; no claim about real attacks.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import speech

SR = 16000


def random_phase_vocoder(x: np.ndarray, seed: int, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Keep the STFT magnitude, replace the phase by noise, overlap-add back."""
    rng = np.random.default_rng(seed)
    win = np.hanning(n_fft)
    pad = np.concatenate([np.zeros(n_fft), x, np.zeros(n_fft)])
    out = np.zeros_like(pad)
    norm = np.zeros_like(pad)
    for start in range(0, pad.size - n_fft, hop):
        mag = np.abs(np.fft.rfft(pad[start : start + n_fft] * win))
        phase = np.exp(2j * np.pi * rng.random(mag.size))
        out[start : start + n_fft] += np.fft.irfft(mag * phase, n_fft) * win
        norm[start : start + n_fft] += win**2
    y = out / np.maximum(norm, 1e-3)
    return y[n_fft : n_fft + x.size].astype(np.float32)


def make_corpus(root: Path, n_per_class: int = 8, dev_per_class: int = 2, seconds: float = 4.0,
                split_column: bool = True, odd_formats: bool = True) -> Path:
    """Write ``n_per_class`` bona fide and spoof clips plus ``manifest.csv`` (split column optional).

    With ``odd_formats`` one bona fide clip is 44.1 kHz stereo FLAC and one spoof a 2.5-s
    22.05 kHz OGG, to exercise resampling, downmixing and tiling.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_per_class):
        split = "dev" if i < dev_per_class else "train"
        x = speech(seconds, i)
        name = f"bona_{i}.wav"
        if odd_formats and i == dev_per_class:
            import soxr

            y = soxr.resample(x, SR, 44100)
            name = f"bona_{i}.flac"
            sf.write(root / name, np.stack([y, 0.5 * y], axis=1), 44100)
        else:
            sf.write(root / name, x, SR)
        rows.append((name, "bonafide", f"spk{i}", "", "tiny", split))
        s = random_phase_vocoder(speech(seconds, n_per_class + i), seed=i)
        name = f"spoof_{i}.wav"
        if odd_formats and i == dev_per_class + 1:
            import soxr

            name = f"spoof_{i}.ogg"
            sf.write(root / name, soxr.resample(s[: int(2.5 * SR)], SR, 22050), 22050, format="OGG", subtype="VORBIS")
        else:
            sf.write(root / name, s, SR)
        rows.append((name, "spoof", f"spk{n_per_class + i}", "RPV" if i % 2 else "RPV2", "tiny-synth", split))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", "attack", "source"] + (["split"] if split_column else []))
        for r in rows:
            w.writerow(list(r[:5]) + ([r[5]] if split_column else []))
    return manifest
