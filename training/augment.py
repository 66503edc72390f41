"""On-the-fly waveform augmentation for training (numpy, soxr, soundfile; no torch).

Every random choice comes from the ``numpy.random.Generator`` passed in, so one seed gives one
augmented window, whichever worker process draws it. The ops, in the order ``Augmenter`` applies
them (a plausible signal chain: talker -> device -> room -> level -> channel):

* ``random_crop`` to the window (4 s), tiling clips that are shorter;
* ``time_stretch`` (WSOLA: tempo changes, pitch does not) and ``pitch_shift`` (resample, then
  stretch back: pitch changes, tempo does not);
* ``time_shift`` (circular roll);
* RawBoost (Tak et al., "RawBoost: A Raw Data Boosting and Augmentation Method Applied to
  Automatic Speaker Verification Anti-Spoofing", ICASSP 2022): ``rawboost_lnl`` linear and
  non-linear convolutive noise, ``rawboost_isd`` impulsive signal-dependent noise,
  ``rawboost_ssi`` stationary signal-independent coloured noise;
* ``add_noise`` at a random SNR: white, pink or babble (a sum of other training clips);
* ``apply_gain`` in dB (no clipping: float audio, the front end takes any level);
* channel: ``telephone`` (8 kHz resampling, optional 300-3400 Hz band, optional G.711 mu-law),
  ``mu_law`` (8-bit companding at 16 kHz), ``codec`` (MP3 / Vorbis / Opus through libsndfile).

Why these: a detector trained on clean studio speech learns "clean = bona fide"; live calls
arrive band-limited, compressed, noisy and at any level, for bona fide and spoof alike.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AugmentConfig", "Augmenter", "NOISE_KINDS", "CODECS", "RAWBOOST_ALGOS",
    "tile_to", "random_crop", "center_crop", "apply_gain", "add_noise", "white_noise", "pink_noise",
    "babble_noise", "time_shift", "time_stretch", "pitch_shift", "telephone", "mu_law", "codec",
    "rawboost_lnl", "rawboost_isd", "rawboost_ssi", "rms_db", "available_codecs",
]

NOISE_KINDS = ("white", "pink", "babble")
CODECS = ("mp3", "vorbis", "opus")
RAWBOOST_ALGOS = ("lnl", "isd", "ssi")
_CODEC_FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III"), "vorbis": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}


# ----------------------------------------------------------------------------- configuration


@dataclass
class AugmentConfig:
    """Probabilities (``p_*``, each op drawn independently) and ranges of the training augmentation.

    Ranges are ``(low, high)`` and drawn uniformly. Set a probability to 0 to disable an op;
    ``AugmentConfig.off()`` disables all (crop only).
    """

    sample_rate: int = 16000
    window_s: float = 4.0
    p_stretch: float = 0.1
    stretch_rate: tuple[float, float] = (0.9, 1.1)  # >1 = faster
    p_pitch: float = 0.1
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    p_shift: float = 0.3
    max_shift_s: float = 1.0
    p_rawboost: float = 0.0
    rawboost: tuple[str, ...] = ("lnl", "isd")  # applied in series; Tak et al.'s best LA setting
    p_noise: float = 0.3
    snr_db: tuple[float, float] = (5.0, 40.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    babble_talkers: tuple[int, int] = (3, 7)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-30.0, 6.0)
    p_telephone: float = 0.1
    telephone_bandpass: bool = True
    telephone_mulaw: bool = True
    p_mulaw: float = 0.05
    p_codec: float = 0.1
    codecs: tuple[str, ...] = CODECS
    codec_compression: tuple[float, float] = (0.0, 0.8)  # libsndfile compression level (1.0 fails for MP3)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"{f.name} = {value!r} must be a probability in [0, 1]")
            if isinstance(value, list):  # from JSON
                setattr(self, f.name, tuple(value))
        for name in ("stretch_rate", "pitch_semitones", "snr_db", "babble_talkers", "gain_db", "codec_compression"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} = {(lo, hi)!r}: low must not exceed high")
        if not (0.5 <= self.stretch_rate[0] and self.stretch_rate[1] <= 2.0):
            raise ValueError(f"stretch_rate {self.stretch_rate} must lie in [0.5, 2.0]")
        if self.babble_talkers[0] < 1:
            raise ValueError(f"babble_talkers {self.babble_talkers} must be >= 1")
        if not (0.0 <= self.codec_compression[0] and self.codec_compression[1] <= 0.9):
            raise ValueError(f"codec_compression {self.codec_compression} must lie in [0, 0.9]")
        _check_names("noise_kinds", self.noise_kinds, NOISE_KINDS)
        _check_names("codecs", self.codecs, CODECS)
        _check_names("rawboost", self.rawboost, RAWBOOST_ALGOS)
        if self.sample_rate <= 0 or self.window_s <= 0:
            raise ValueError(f"sample_rate {self.sample_rate} and window_s {self.window_s} must be positive")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @classmethod
    def off(cls, **kw: Any) -> AugmentConfig:
        probs = {f.name: 0.0 for f in fields(cls) if f.name.startswith("p_")}
        return cls(**{**probs, **kw})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"augmentation option(s) {unknown} are not known; accepted: {sorted(known)}")
        return cls(**d)


def _check_names(what: str, values: Sequence[str], accepted: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in accepted]
    if bad:
        raise ValueError(f"{what}: {bad} not known; accepted: {list(accepted)}")


# ----------------------------------------------------------------------------- cropping


def _as_mono(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("audio is empty")
    return a


def tile_to(x: np.ndarray, n: int) -> np.ndarray:
    """Repeat a short clip until it has ``n`` samples (longer clips are cut at ``n``)."""
    x = _as_mono(x)
    if x.size >= n:
        return x[:n].copy()
    return np.resize(x, n).astype(np.float32)  # np.resize repeats the data cyclically


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample excerpt; a clip shorter than ``n`` is tiled from a random phase."""
    x = _as_mono(x)
    if x.size < n:
        start = int(rng.integers(0, x.size))
        return tile_to(np.roll(x, -start), n)
    start = int(rng.integers(0, x.size - n + 1))
    return x[start : start + n].copy()


def center_crop(x: np.ndarray, n: int) -> np.ndarray:
    """The middle ``n`` samples (deterministic, for dev/eval); short clips are tiled."""
    x = _as_mono(x)
    if x.size <= n:
        return tile_to(x, n)
    start = (x.size - n) // 2
    return x[start : start + n].copy()


# ----------------------------------------------------------------------------- level and noise


def rms_db(x: np.ndarray) -> float:
    """Root-mean-square level in dB (re 1.0); -inf for silence."""
    p = float(np.mean(np.square(x, dtype=np.float64)))
    return 10.0 * math.log10(p) if p > 0 else -math.inf


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    return (x * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f)
    spec[0] = 0.0  # no DC
    return np.fft.irfft(spec, n).astype(np.float32)


def babble_noise(n: int, pool: Sequence[np.ndarray], talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of ``talkers`` random excerpts of other clips, each brought to the same RMS first."""
    if not pool:
        raise ValueError("babble noise needs a non-empty pool of other clips")
    out = np.zeros(n, dtype=np.float64)
    for i in rng.integers(0, len(pool), size=talkers):
        part = random_crop(pool[int(i)], n, rng).astype(np.float64)
        rms = np.sqrt(np.mean(part * part))
        if rms > 0:
            out += part / rms
    return out.astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled so that 10 log10(P_x / P_noise) = ``snr_db`` over the whole clip.

    Silent ``x`` (or silent noise) is returned unchanged: an SNR has no meaning there.
    """
    if noise.shape != x.shape:
        raise ValueError(f"noise shape {noise.shape} differs from the signal's {x.shape}")
    p_x = float(np.mean(np.square(x, dtype=np.float64)))
    p_n = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_x == 0.0 or p_n == 0.0:
        return x.copy()
    scale = math.sqrt(p_x / (p_n * 10.0 ** (snr_db / 10.0)))
    return (x + noise * scale).astype(np.float32)


# ----------------------------------------------------------------------------- time and pitch


def time_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """Circular shift by ``shift`` samples (positive = later): content is moved, never lost."""
    return np.roll(x, shift).astype(np.float32, copy=False)


def _hann(n: int) -> np.ndarray:
    # Periodic Hann: overlapping at 50% it sums to exactly 1.
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float64)


def time_stretch(x: np.ndarray, rate: float, frame: int = 512, tolerance: int = 160) -> np.ndarray:
    """WSOLA (Verhelst & Roelands 1993): change the tempo by ``rate`` (>1 faster) keeping the pitch.

    Output length is round(len(x) / rate). Frames of ``frame`` samples (32 ms at 16 kHz) are
    overlap-added at a fixed synthesis hop of frame/2 with a Hann window; each is read from
    the input near its nominal position k * hop * rate, shifted by up to ``tolerance`` samples
    to the offset whose waveform best continues the previous frame (largest cross-correlation
    with the samples that naturally followed it), which avoids phase cancellations.
    """
    x = _as_mono(x).astype(np.float64)
    if not 0.25 <= rate <= 4.0:
        raise ValueError(f"stretch rate {rate} out of range [0.25, 4]")
    n_out = int(round(x.size / rate))
    hop = frame // 2
    win = _hann(frame)
    pad = frame + 2 * tolerance
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad + int(math.ceil(frame * rate)) + hop)])
    n_frames = n_out // hop + 2
    out = np.zeros(n_frames * hop + frame)
    prev = pad  # input position of the previously chosen frame (padded coordinates)
    for k in range(n_frames):
        nominal = pad + int(round(k * hop * rate)) - hop  # frame k is centred on output sample k*hop
        if k == 0:
            pos = nominal
        else:
            template = xp[prev + hop : prev + hop + frame]  # what naturally follows the previous frame
            lo = max(0, nominal - tolerance)
            region = xp[lo : nominal + tolerance + frame]
            corr = np.correlate(region, template, mode="valid")
            pos = lo + int(np.argmax(corr))
        out[k * hop : k * hop + frame] += win * xp[pos : pos + frame]
        prev = pos
    return out[hop : hop + n_out].astype(np.float32)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.size >= n:
        return y[:n].astype(np.float32, copy=False)
    return tile_to(y, n)


def pitch_shift(x: np.ndarray, semitones: float, sample_rate: int = 16000) -> np.ndarray:
    """Shift the pitch by ``semitones``, keeping duration: resample by 2^(s/12) (soxr) so that,
    played at the original rate, pitch and tempo both scale; then WSOLA restores the tempo."""
    x = _as_mono(x)
    factor = 2.0 ** (semitones / 12.0)
    if factor == 1.0:
        return x.copy()
    faster = soxr.resample(x, sample_rate, sample_rate / factor)
    return _fit_length(time_stretch(faster, 1.0 / factor), x.size)


# ----------------------------------------------------------------------------- channel


def _band_mask(n: int, sample_rate: int, low: float, high: float, edge_hz: float = 100.0) -> np.ndarray:
    """rFFT gain: 1 inside [low, high], raised-cosine roll-off of ``edge_hz`` outside, 0 beyond."""
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    g = np.ones_like(f)
    below = f < low
    g[below] = 0.5 + 0.5 * np.cos(np.pi * np.clip((low - f[below]) / edge_hz, 0.0, 1.0))
    above = f > high
    g[above] = 0.5 + 0.5 * np.cos(np.pi * np.clip((f[above] - high) / edge_hz, 0.0, 1.0))
    return g


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-style 8-bit mu-law: saturate at full scale, compand, quantise to 256 levels, expand."""
    c = np.clip(x.astype(np.float64), -1.0, 1.0)
    y = np.sign(c) * np.log1p(mu * np.abs(c)) / math.log1p(mu)
    q = np.round((y + 1.0) * 0.5 * mu) / mu * 2.0 - 1.0  # mu+1 = 256 codes
    return (np.sign(q) * np.expm1(np.abs(q) * math.log1p(mu)) / mu).astype(np.float32)


def telephone(x: np.ndarray, sample_rate: int = 16000, bandpass: bool = True, mulaw: bool = True) -> np.ndarray:
    """Narrow-band telephone channel: down to 8 kHz (soxr's anti-alias filter removes > 4 kHz),
    optionally the 300-3400 Hz voice band and G.711 mu-law, then back to ``sample_rate``."""
    x = _as_mono(x)
    y = soxr.resample(x, sample_rate, 8000)
    if bandpass:
        y = np.fft.irfft(np.fft.rfft(y) * _band_mask(y.size, 8000, 300.0, 3400.0), y.size)
    if mulaw:
        y = mu_law(y)
    return _fit_length(soxr.resample(y.astype(np.float32), 8000, sample_rate), x.size)


def available_codecs() -> tuple[str, ...]:
    """The codecs this libsndfile can write (MP3 needs libsndfile >= 1.1)."""
    formats = sf.available_formats()
    return tuple(k for k, (fmt, sub) in _CODEC_FORMATS.items() if fmt in formats and sub in sf.available_subtypes(fmt))


def codec(x: np.ndarray, kind: str, sample_rate: int = 16000, compression: float = 0.5) -> np.ndarray:
    """Encode and decode in memory with libsndfile (MP3, Ogg Vorbis or Opus); length kept."""
    if kind not in _CODEC_FORMATS:
        raise ValueError(f"codec {kind!r} not known; accepted: {list(CODECS)}")
    if kind not in available_codecs():
        raise ValueError(f"codec {kind!r} is not supported by libsndfile {sf.__libsndfile_version__} here;"
                         f" available: {list(available_codecs())}")
    x = _as_mono(x)
    fmt, subtype = _CODEC_FORMATS[kind]
    buf = io.BytesIO()
    # Codecs saturate at full scale, as a real encoder's integer input would.
    sf.write(buf, np.clip(x, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype, compression_level=compression)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return _fit_length(y, x.size)


# ----------------------------------------------------------------------------- RawBoost


def _multiband_fir(rng: np.random.Generator, sample_rate: int, n_bands: int = 5, f_range: tuple[float, float] = (20.0, 8000.0),
                   bw_range: tuple[float, float] = (100.0, 1000.0), taps_range: tuple[int, int] = (10, 100),
                   gain_db_range: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Random multi-band FIR: the sum of ``n_bands`` windowed-sinc band-pass filters with random
    centre, bandwidth, length and gain (RawBoost's filter generator, from the paper's description)."""
    nyq = sample_rate / 2.0
    taps = int(rng.integers(taps_range[0], taps_range[1] + 1)) | 1  # odd: linear phase, integer delay
    m = np.arange(taps) - (taps - 1) / 2.0
    window = np.hamming(taps)
    h = np.zeros(taps)
    for _ in range(n_bands):
        fc = rng.uniform(*f_range)
        bw = rng.uniform(*bw_range)
        lo = np.clip(fc - bw / 2.0, 1.0, nyq - 1.0) / sample_rate
        hi = np.clip(fc + bw / 2.0, 1.0, nyq - 1.0) / sample_rate
        if hi <= lo:
            continue
        band = 2.0 * hi * np.sinc(2.0 * hi * m) - 2.0 * lo * np.sinc(2.0 * lo * m)
        h += 10.0 ** (rng.uniform(*gain_db_range) / 20.0) * band * window
    return h


def _causal_filter(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.convolve(x, h, mode="full")[: x.size]


def _renorm(y: np.ndarray, peak: float) -> np.ndarray:
    m = float(np.max(np.abs(y)))
    return y * (peak / m) if m > 0 else y


def rawboost_lnl(x: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000, n_branches: int = 5,
                 bias_db: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    """Linear and non-linear convolutive noise: a Hammerstein channel
    y = sum_j g_j * h_j * x^j  (j = 1..n_branches), each h_j a random multi-band FIR.

    Higher-order branches are attenuated by a random 5-20 dB bias (as the paper's linear vs
    non-linear bias), powers are taken of the peak-normalised signal so that they are not
    vanishingly small for quiet input, and the output is brought back to the input's peak.
    """
    x = _as_mono(x).astype(np.float64)
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return x.astype(np.float32)
    u = x / peak
    y = np.zeros_like(u)
    for j in range(1, n_branches + 1):
        gain = 1.0 if j == 1 else 10.0 ** (-rng.uniform(*bias_db) * (j - 1) / 20.0)
        y += gain * _causal_filter(u**j, _multiband_fir(rng, sample_rate))
    y -= y.mean()
    return _renorm(y, peak).astype(np.float32)


def rawboost_isd(x: np.ndarray, rng: np.random.Generator, max_fraction: float = 0.10,
                 g_sd: float = 2.0) -> np.ndarray:
    """Impulsive signal-dependent noise: at a random ``P`` <= 10% of the samples,
    y[n] = x[n] + g_sd * x[n] * u[n], u ~ U(-1, 1) (clicks whose size follows the signal)."""
    x = _as_mono(x)
    y = x.astype(np.float64)
    count = int(rng.integers(0, int(max_fraction * x.size) + 1))
    idx = rng.choice(x.size, size=count, replace=False)
    y[idx] += g_sd * y[idx] * rng.uniform(-1.0, 1.0, size=count)
    return y.astype(np.float32)


def rawboost_ssi(x: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000,
                 snr_db: tuple[float, float] = (10.0, 40.0)) -> np.ndarray:
    """Stationary signal-independent noise: white noise coloured by a random multi-band FIR,
    added at a random SNR of 10-40 dB."""
    x = _as_mono(x)
    noise = _causal_filter(rng.standard_normal(x.size), _multiband_fir(rng, sample_rate))
    return add_noise(x, noise.astype(np.float32), float(rng.uniform(*snr_db)))


# ----------------------------------------------------------------------------- pipeline


@dataclass
class Augmenter:
    """Waveform of any length -> one augmented window of ``config.window_samples``.

    ``babble_pool`` holds other (bona fide) training clips for babble noise; without it babble
    is left out of the noise kinds. Codecs this libsndfile cannot write are left out too.
    """

    config: AugmentConfig = field(default_factory=AugmentConfig)
    babble_pool: Sequence[np.ndarray] = ()

    def __post_init__(self) -> None:
        usable = available_codecs()
        self._codecs = tuple(k for k in self.config.codecs if k in usable)

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        n, sr = c.window_samples, c.sample_rate
        audio = _as_mono(audio)
        # Draw every decision up front, in a fixed order, so results depend only on the seed.
        rate = rng.uniform(*c.stretch_rate) if rng.random() < c.p_stretch else 1.0
        x = random_crop(audio, int(math.ceil(n * rate)) + 1, rng)
        if rate != 1.0:
            x = time_stretch(x, rate)
        x = _fit_length(x, n)
        if rng.random() < c.p_pitch:
            x = pitch_shift(x, rng.uniform(*c.pitch_semitones), sr)
        if rng.random() < c.p_shift:
            limit = int(c.max_shift_s * sr)
            x = time_shift(x, int(rng.integers(-limit, limit + 1)))
        if c.rawboost and rng.random() < c.p_rawboost:
            for algo in c.rawboost:
                if algo == "lnl":
                    x = rawboost_lnl(x, rng, sr)
                elif algo == "isd":
                    x = rawboost_isd(x, rng)
                else:
                    x = rawboost_ssi(x, rng, sr)
        kinds = [k for k in c.noise_kinds if k != "babble" or self.babble_pool]
        if kinds and rng.random() < c.p_noise:
            kind = kinds[int(rng.integers(0, len(kinds)))]
            if kind == "white":
                noise = white_noise(n, rng)
            elif kind == "pink":
                noise = pink_noise(n, rng)
            else:
                noise = babble_noise(n, self.babble_pool, int(rng.integers(c.babble_talkers[0], c.babble_talkers[1] + 1)), rng)
            x = add_noise(x, noise, rng.uniform(*c.snr_db))
        if rng.random() < c.p_gain:
            x = apply_gain(x, rng.uniform(*c.gain_db))
        if rng.random() < c.p_telephone:
            x = telephone(x, sr, c.telephone_bandpass, c.telephone_mulaw)
        if rng.random() < c.p_mulaw:
            x = mu_law(x)
        if self._codecs and rng.random() < c.p_codec:
            kind = self._codecs[int(rng.integers(0, len(self._codecs)))]
            x = codec(x, kind, sr, rng.uniform(*c.codec_compression))
        return np.ascontiguousarray(x, dtype=np.float32)
