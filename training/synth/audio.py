"""Audio helpers shared by every generator and the corpus builder.

Everything here works on mono float32 numpy arrays at ``SAMPLE_RATE``. The same
functions are applied to bona fide copies and to spoofs, so that level, DC,
edge silence and file format never tell the classes apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from engines.audio_io import AudioFileError, read_mono, resample, to_mono

SAMPLE_RATE = 16_000
PEAK_LIMIT = 0.97  # headroom so that 16-bit FLAC never clips
_FRAME = 400  # 25 ms analysis frame at 16 kHz
_HOP = 160  # 10 ms


class BadAudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, non-finite or silent."""


def to_mono_16k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix down to mono and resample to 16 kHz (a generator's output)."""
    try:
        return to_mono(x, sample_rate, SAMPLE_RATE)
    except ValueError as err:
        raise BadAudioError(str(err)) from None


def round_trip(x: np.ndarray, via_rate: int) -> np.ndarray:
    """Resample 16 kHz -> ``via_rate`` -> 16 kHz: the band edge a 22.05 kHz vocoder's output gets."""
    return fit_length(resample(resample(x, SAMPLE_RATE, via_rate), via_rate, SAMPLE_RATE), x.size)


def load_audio(path: str | Path, max_seconds: float | None = None) -> np.ndarray:
    """Read any libsndfile format as mono 16 kHz float32, optionally cut to ``max_seconds``."""
    try:
        y = read_mono(path, SAMPLE_RATE, max_seconds)
    except AudioFileError as err:
        raise BadAudioError(str(err)) from None
    check_audio(y, what=str(path))
    return y


def check_audio(x: np.ndarray, what: str = "audio", min_seconds: float = 0.2) -> None:
    """Raise BadAudioError unless ``x`` is finite, long enough and not silent."""
    if x.ndim != 1:
        raise BadAudioError(f"{what}: expected mono audio, got shape {x.shape}")
    if x.size < min_seconds * SAMPLE_RATE:
        raise BadAudioError(f"{what}: {x.size / SAMPLE_RATE:.3f} s is shorter than {min_seconds} s")
    if not np.all(np.isfinite(x)):
        raise BadAudioError(f"{what}: contains NaN or inf samples")
    if float(np.max(np.abs(x))) < 1e-4:
        raise BadAudioError(f"{what}: silent (peak below -80 dBFS)")


def frame_db(x: np.ndarray, frame: int = _FRAME, hop: int = _HOP) -> np.ndarray:
    """Per-frame RMS level in dBFS (10 ms hop)."""
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-12)


def active_mask(levels_db: np.ndarray, below_peak_db: float = 35.0, floor_db: float = -70.0) -> np.ndarray:
    """Frames that carry speech: within ``below_peak_db`` of the loudest frame and above a floor.

    A threshold relative to the loudest frame works for both quiet room noise
    (bona fide) and digital silence (TTS), which an absolute gate would not.
    """
    threshold = max(float(levels_db.max()) - below_peak_db, floor_db)
    return levels_db > threshold


def speech_bounds(x: np.ndarray) -> tuple[int, int]:
    """Sample indices [start, end) of the first and last active frame."""
    active = np.flatnonzero(active_mask(frame_db(x)))
    if active.size == 0:
        return 0, x.size
    return int(active[0] * _HOP), min(x.size, int(active[-1] * _HOP + _FRAME))


def trim_edges(x: np.ndarray, lead_s: float, trail_s: float) -> np.ndarray:
    """Leave exactly ``lead_s``/``trail_s`` of silence around the speech.

    The margins come from the signal's own edges where it has them (room noise
    for recordings) and are completed with digital silence where it does not
    (TTS engines that start speaking on the first sample). Every item, bona fide
    or spoof, goes through this with margins drawn from the same distribution,
    so the length of the edge silence carries no class information.
    """
    start, end = speech_bounds(x)
    want_lead, want_trail = int(lead_s * SAMPLE_RATE), int(trail_s * SAMPLE_RATE)
    cut = x[max(0, start - want_lead) : min(x.size, end + want_trail)]
    pad_lead = max(0, want_lead - start)
    pad_trail = max(0, want_trail - (x.size - end))
    return np.ascontiguousarray(np.pad(cut, (pad_lead, pad_trail)), dtype=np.float32)


def remove_dc(x: np.ndarray) -> np.ndarray:
    return (x - np.float32(x.mean())).astype(np.float32)


def active_level_db(x: np.ndarray) -> float:
    """RMS level of the speech-active frames (a light-weight ITU P.56 stand-in)."""
    levels = frame_db(x)
    active = levels[active_mask(levels)]
    if active.size == 0:
        return float(levels.max())
    return float(10.0 * np.log10(np.mean(10.0 ** (active / 10.0)) + 1e-12))


def normalize_level(x: np.ndarray, target_db: float, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale to ``target_db`` active level, then lower the gain if the peak would exceed ``peak``."""
    gain = 10.0 ** ((target_db - active_level_db(x)) / 20.0)
    top = float(np.max(np.abs(x))) * gain
    if top > peak:
        gain *= peak / top
    return (x * gain).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad to exactly ``n`` samples (codecs may add or drop a few)."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))


def write_flac(path: Path, x: np.ndarray) -> None:
    """Write 16-bit mono FLAC atomically, so an interrupted build never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    sf.write(str(tmp), np.clip(x, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def is_valid_output(path: Path) -> bool:
    """True when ``path`` is a readable 16 kHz mono FLAC with samples (what resume trusts)."""
    if not path.is_file():
        return False
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError:
        return False
    return info.format == "FLAC" and info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames > 0
