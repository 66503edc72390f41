"""Decoding and windowing shared by training and evaluation (numpy, soundfile, soxr; no torch)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AudioDecodeError", "load_audio", "window_starts", "cut_windows"]


class AudioDecodeError(ValueError):
    """A file cannot be decoded into usable audio; names the file and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: cannot use this audio file: {reason}")


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Any format libsndfile reads (WAV, FLAC, OGG, MP3 ...) at any rate -> mono float32 at
    ``sample_rate``: channels are averaged, the rate converted with soxr (high quality)."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as e:
        raise AudioDecodeError(path, str(e)) from None
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "it has no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate)
    if not np.isfinite(mono).all():
        raise AudioDecodeError(path, "it contains NaN or Inf samples")
    return np.ascontiguousarray(mono, dtype=np.float32)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of ``window``-sample windows every ``hop`` samples; when the last regular
    window stops short of the end, one more window is aligned to the end so the tail is scored."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window {window} and hop {hop} must be positive")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def cut_windows(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """[n_windows, window] float32; a clip shorter than one window is tiled to fill it."""
    if x.size == 0:
        raise ValueError("cannot cut windows from empty audio")
    if x.size < window:
        return np.resize(x, window).astype(np.float32)[None, :]
    return np.stack([x[s : s + window] for s in window_starts(x.size, window, hop)]).astype(np.float32, copy=False)
