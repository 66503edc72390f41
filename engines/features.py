"""The front end in numpy: the same features as ``engines.frontend.FrontEnd`` without torch.

For the torch-free paths: displays and analysis (the dashboard's spectrogram of the window the
engine scored, data analysis) and the streaming front end (``engines.hop_frontend``), which
computes each window's frames here and runs only the network graph.

Frames go through a real FFT, not the graph's DFT-as-convolution. On one core it takes half
(SpecRNet: 400 taps, 512 points) to a fifth (ResMax: 1024) of the time of the same DFT as a numpy
float32 matmul, and a whole window costs what ONNX Runtime's float32 convolution does for SpecRNet
and 2.5x less for ResMax (tools/hop_bench.py). The transform runs in float32, as the graph does:
15-20% less time than float64 (the per-hop front end of 8 windows, 432 frames: 1.65 -> 1.40 ms
SpecRNet, 2.9 -> 2.3 ms ResMax) for a feature difference from float64 of at most 1.4e-5 (SpecRNet)
and 2.2e-4 (ResMax's quietest bins) on 36 s of speech, below the graph's own float32 rounding
(3.4e-5 and 2.0e-3). Per hop the split path's logits stay 1.2e-5 (SpecRNet) and 1.1e-5 (ResMax)
from the whole window graph's, as in float64 (docs/benchmarks.md).
"""
from __future__ import annotations

import numpy as np

from engines.frontend_config import FrontEndConfig


def fourier_basis(n_fft: int, win_length: int) -> np.ndarray:
    """Conv1d kernels [2 * bins, 1, win_length]: periodic Hann window times cos (real part) and
    -sin (imaginary part), with the phase of an n_fft-point DFT whose frame holds the window
    centred, as torch.stft does. Taps where the window is zero are dropped: for SpecRNet's
    400-sample window in a 512-point frame that is 22% less work."""
    left = (n_fft - win_length) // 2
    j = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * j / win_length)
    k = np.arange(n_fft // 2 + 1)[:, None]
    # Reduce k*n modulo n_fft in integers before scaling, so the angle stays below 2*pi.
    phase = 2.0 * np.pi * ((k * (left + j)[None, :]) % n_fft) / n_fft
    basis = np.concatenate([np.cos(phase), -np.sin(phase)], axis=0) * window[None, :]
    return basis[:, None, :].astype(np.float32)


def frames(x: np.ndarray, config: FrontEndConfig, first: int, count: int) -> np.ndarray:
    """Frames ``first .. first + count - 1`` of signal ``x`` as rows [count, win_length] of the
    samples under the window's taps, with zeros where a frame reaches past the signal's ends
    (the centre padding). A view of ``x`` unless padding was needed."""
    hop, win = config.hop_length, config.win_length
    lo = config.frame_offset + first * hop
    hi = lo + (count - 1) * hop + win
    seg = x[max(lo, 0) : min(hi, len(x))]
    if lo < 0 or hi > len(x):  # a zeroed copy, not np.pad: the per-hop path pads two short blocks per window
        padded = np.zeros(hi - lo, dtype=x.dtype)
        padded[max(0, -lo) : max(0, -lo) + len(seg)] = seg
        seg = padded
    # as_strided, not sliding_window_view: the same rows without its per-call checks (per hop, twice a window)
    step = seg.strides[0]
    return np.lib.stride_tricks.as_strided(seg, (count, win), (hop * step, step), writeable=False)


class SpectralFrames:
    """Frames [n, win_length] -> log features float32 [n, n_features]: Hann window, power of
    the n_fft-point real FFT, filterbank, log, all in float32. Holds the window and filterbank, made once."""

    def __init__(self, config: FrontEndConfig) -> None:
        self.config = config
        j = np.arange(config.win_length)
        self._window = (0.5 - 0.5 * np.cos(2.0 * np.pi * j / config.win_length)).astype(np.float32)
        fb = config.filterbank()
        self._bands = None if fb is None else np.ascontiguousarray(fb.T, dtype=np.float32)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        # Zero-padding the window at the end instead of centring it in the n_fft frame is a
        # circular shift of the frame: it changes the phases only, not the power.
        spec = np.fft.rfft(rows * self._window, n=self.config.n_fft, axis=1)
        power = spec.real * spec.real + spec.imag * spec.imag
        if self._bands is not None:
            power = power @ self._bands
        return np.log(power + np.float32(self.config.log_floor)).astype(np.float32, copy=False)


def log_features(wave: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """float32 [N] waveform -> float32 [n_features, frames], as FrontEnd computes it."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"wave must be 1-D samples, got shape {x.shape}")
    count = config.n_frames(len(x))
    if count < 1:
        raise ValueError(f"a wave of {len(x)} samples is shorter than one frame of this front end")
    return SpectralFrames(config)(frames(x, config, 0, count)).T
