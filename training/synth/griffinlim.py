"""``griffinlim``: mel spectrogram -> linear magnitude -> Griffin-Lim phase.

This is what a mel-predicting TTS model sounds like with the simplest
"vocoder": information lost by the mel projection and the discarded phase come
back as smearing and phasiness. Implemented with numpy only (fast Griffin-Lim,
Perraudin et al. 2013) so it has no dependency beyond numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from .audio import SAMPLE_RATE
from .base import Needs, SynthError, SynthInput, register, require_audio


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1), each peaking at 1."""
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Centred STFT, shape (frames, n_fft // 2 + 1). Reflect padding keeps the edges usable."""
    padded = np.pad(x, (n_fft // 2, n_fft // 2 + hop), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * window, axis=1)


def istft(spec: np.ndarray, n_fft: int, hop: int, window: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of ``stft`` (requires n_fft % hop == 0)."""
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window
    n_frames, ratio = frames.shape[0], n_fft // hop
    out = np.zeros((n_frames + ratio - 1, hop))
    norm = np.zeros((n_frames + ratio - 1, hop))
    blocks = frames.reshape(n_frames, ratio, hop)
    wblocks = (window**2).reshape(ratio, hop)
    # Frame t's r-th hop-sized block lands on output block t + r: one add per block offset.
    for r in range(ratio):
        out[r : r + n_frames] += blocks[:, r, :]
        norm[r : r + n_frames] += wblocks[r]
    y = (out / np.maximum(norm, 1e-8)).reshape(-1)
    return y[n_fft // 2 : n_fft // 2 + length]


@dataclass(frozen=True)
class GriffinLimOptions:
    n_fft: int = 1024
    hop: int = 256  # the 16 ms hop typical of mel-predicting TTS at 16 kHz
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    n_iter: int = 32
    momentum: float = 0.99  # fast Griffin-Lim extrapolation; 0 gives the original algorithm
    inverse: Literal["pinv", "nnls"] = "pinv"  # nnls is exact but ~50x slower


@register
@dataclass
class GriffinLim:
    name: ClassVar[str] = "griffinlim"
    family: ClassVar[str] = "vocoder"
    native_rate: ClassVar[int] = SAMPLE_RATE
    needs: ClassVar[Needs] = "audio"
    options: GriffinLimOptions = field(default_factory=GriffinLimOptions)

    def unavailable_reason(self) -> str | None:
        return None  # numpy (and scipy for nnls) are core dependencies

    def mel_inverse(self, mel: np.ndarray, fb: np.ndarray) -> np.ndarray:
        """Least-squares linear magnitude from mel energies, constrained to be >= 0."""
        if self.options.inverse == "nnls":
            from scipy.optimize import nnls

            return np.stack([nnls(fb, frame)[0] for frame in mel])
        return np.maximum(mel @ np.linalg.pinv(fb).T, 0.0)

    def __call__(self, item: SynthInput) -> np.ndarray:
        opt = self.options
        if opt.n_fft % opt.hop:
            raise SynthError(f"griffinlim: n_fft {opt.n_fft} must be a multiple of hop {opt.hop}")
        x = require_audio(item, self.name).astype(np.float64)
        window = np.hanning(opt.n_fft + 1)[:-1]  # periodic Hann: satisfies overlap-add
        fb = mel_filterbank(opt.n_mels, opt.n_fft, SAMPLE_RATE, opt.fmin, opt.fmax)
        mel = np.abs(stft(x, opt.n_fft, opt.hop, window)) @ fb.T
        magnitude = self.mel_inverse(mel, fb)
        phase = np.exp(2j * np.pi * item.rng.random(magnitude.shape))
        previous = np.zeros_like(phase)
        for _ in range(opt.n_iter):
            # Project onto consistent spectrograms, then extrapolate (the "fast" variant).
            consistent = stft(istft(magnitude * phase, opt.n_fft, opt.hop, window, x.size),
                              opt.n_fft, opt.hop, window)
            accelerated = consistent + opt.momentum * (consistent - previous)
            previous = consistent
            phase = accelerated / np.maximum(np.abs(accelerated), 1e-12)
        y = istft(magnitude * phase, opt.n_fft, opt.hop, window, x.size)
        return y.astype(np.float32)
