"""The front end in numpy: the same features as ``engines.frontend.FrontEnd`` without torch.

For displays and analysis on the torch-free path (the dashboard's spectrogram of the window the
engine scored, data analysis); the engines themselves run the exported graph.
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


def log_features(wave: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """float32 [N] waveform -> float32 [n_features, frames], as FrontEnd computes it."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"wave must be 1-D samples, got shape {x.shape}")
    left = (config.n_fft - config.win_length) // 2
    right = config.n_fft - config.win_length - left
    half = config.n_fft // 2
    x = np.pad(x, (half - left, half - right)) if config.center else x[left : len(x) - right]
    frames = np.lib.stride_tricks.sliding_window_view(x, config.win_length)[:: config.hop_length]
    basis = fourier_basis(config.n_fft, config.win_length)[:, 0, :]
    spec = frames @ basis.T  # [frames, 2 * bins]
    bins = config.n_bins
    power = spec[:, :bins] ** 2 + spec[:, bins:] ** 2
    fb = config.filterbank()
    if fb is not None:
        power = power @ fb.T
    return np.log(power + config.log_floor).T.astype(np.float32)
