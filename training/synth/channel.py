"""Transmission channels applied to bona fide copies and spoofs alike.

A detector must not learn "codec means spoof" (or the reverse), so every
channel here is applied with the same probability to both classes, and the
manifest's ``source`` column records it ("librispeech+mp3", "piper+opus").
Codecs go through libsndfile (soundfile) in memory: real encoders, no files.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfilt

from .audio import SAMPLE_RATE, fit_length

CHANNELS: tuple[str, ...] = ("tel8k", "mulaw", "mp3", "opus")


class UnknownChannelError(ValueError):
    """A channel name that is not in CHANNELS."""


class ChannelUnavailable(RuntimeError):
    """The installed libsndfile lacks the codec a channel needs."""


@dataclass(frozen=True)
class ChannelOptions:
    tel_band_hz: tuple[float, float] = (300.0, 3400.0)  # ITU-T narrowband telephone band
    # soundfile compression_level: 0 = best quality. At 16 kHz these give roughly
    # 25-50 kbit/s MP3 and 12-45 kbit/s Opus, the range of VoIP and streaming speech.
    mp3_level: tuple[float, float] = (0.4, 0.95)
    opus_level: tuple[float, float] = (0.85, 0.99)


def _roundtrip(x: np.ndarray, fmt: str, subtype: str, **kwargs: float) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), SAMPLE_RATE, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return fit_length(y, x.size)


def tel8k(x: np.ndarray, rng: np.random.Generator, opt: ChannelOptions) -> np.ndarray:
    """Narrowband telephone: 8 kHz sampling and a 300-3400 Hz band-pass, back to 16 kHz."""
    narrow = soxr.resample(x, SAMPLE_RATE, 8000, quality="HQ")
    sos = butter(6, opt.tel_band_hz, btype="bandpass", fs=8000, output="sos")
    narrow = sosfilt(sos, narrow).astype(np.float32)
    return fit_length(soxr.resample(narrow, 8000, SAMPLE_RATE, quality="HQ").astype(np.float32), x.size)


def mulaw(x: np.ndarray, rng: np.random.Generator, opt: ChannelOptions) -> np.ndarray:
    """8-bit G.711 mu-law companding (libsndfile's ULAW encoder)."""
    return _roundtrip(x, "WAV", "ULAW")


def mp3(x: np.ndarray, rng: np.random.Generator, opt: ChannelOptions) -> np.ndarray:
    return _roundtrip(x, "MP3", "MPEG_LAYER_III", compression_level=float(rng.uniform(*opt.mp3_level)))


def opus(x: np.ndarray, rng: np.random.Generator, opt: ChannelOptions) -> np.ndarray:
    return _roundtrip(x, "OGG", "OPUS", compression_level=float(rng.uniform(*opt.opus_level)))


_APPLY: dict[str, Callable[[np.ndarray, np.random.Generator, ChannelOptions], np.ndarray]] = {
    "tel8k": tel8k, "mulaw": mulaw, "mp3": mp3, "opus": opus,
}


def unavailable_reason(name: str) -> str | None:
    """None when this libsndfile can run the channel, else why not."""
    formats = sf.available_formats()
    if name == "mp3" and "MP3" not in formats:
        return f"mp3 needs libsndfile >= 1.1 with MPEG support (have {sf.__libsndfile_version__})"
    if name == "opus" and "OPUS" not in sf.available_subtypes("OGG"):
        return f"opus needs libsndfile >= 1.0.29 with Opus support (have {sf.__libsndfile_version__})"
    return None


def apply_channel(name: str, x: np.ndarray, rng: np.random.Generator,
                  options: ChannelOptions | None = None) -> np.ndarray:
    """Pass 16 kHz mono ``x`` through channel ``name``; output has the same length."""
    try:
        fn = _APPLY[name]
    except KeyError:
        raise UnknownChannelError(f"unknown channel {name!r}; choose from {', '.join(CHANNELS)}") from None
    reason = unavailable_reason(name)
    if reason:
        raise ChannelUnavailable(reason)
    return fn(np.asarray(x, dtype=np.float32), rng, options or ChannelOptions())
