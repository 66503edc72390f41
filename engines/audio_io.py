"""Audio files and arrays to mono float32 at a chosen rate: the one decode -> mix-down -> resample
path of training, evaluation, the corpus builder and quantization calibration.

Decoding is libsndfile's (WAV, FLAC, OGG/Vorbis/Opus, MP3, ...), resampling soxr's high quality.
The live file source (realtime/sources/file.py) streams with the same decoder but keeps the
channels and resamples per chunk, so it does not go through here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AudioFileError", "mono", "resample", "to_mono", "read_frames", "read_mono"]


class AudioFileError(ValueError):
    """A file that cannot be used as audio; the message names the file and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: cannot use this audio file: {reason}")


def mono(x: np.ndarray) -> np.ndarray:
    """Mean of the channels of ``(frames, channels)`` audio; 1-D audio as it is (float32)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D or 2-D (frames, channels) audio, got shape {x.shape}")
    return x


def resample(x: np.ndarray, rate: float, target: int) -> np.ndarray:
    """1-D float32 audio from ``rate`` to ``target`` Hz (soxr HQ); unchanged when equal."""
    if rate == target:
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(soxr.resample(x, rate, target, quality="HQ"), dtype=np.float32)


def to_mono(x: np.ndarray, rate: float, target: int) -> np.ndarray:
    """Mix down, then resample: what a generator's or a file's audio needs before scoring."""
    return resample(mono(x), rate, target)


def read_frames(path: str | os.PathLike[str], max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """A whole file (or its first ``max_seconds``) as float32 ``(frames, channels)`` and its rate.

    Raises :class:`AudioFileError` for a file that cannot be opened or decoded or has no samples."""
    try:
        with sf.SoundFile(str(path)) as f:
            frames = -1 if max_seconds is None else int(round(max_seconds * f.samplerate))
            data = f.read(frames, dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.SoundFileError, OSError) as e:
        raise AudioFileError(path, str(e)) from None
    if data.shape[0] == 0:
        raise AudioFileError(path, "it has no samples")
    return data, rate


def read_mono(path: str | os.PathLike[str], sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """A whole file (or its first ``max_seconds``) as mono float32 at ``sample_rate``.

    Raises :class:`AudioFileError` as :func:`read_frames` does, and for NaN/Inf samples
    (possible in float WAV files)."""
    data, rate = read_frames(path, max_seconds)
    x = to_mono(data, rate, sample_rate)
    if not np.isfinite(x).all():
        raise AudioFileError(path, "it contains NaN or Inf samples")
    return x
