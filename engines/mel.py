"""Mel filterbank in numpy (Slaney scale and area normalisation, as librosa's default).

Kept free of torch so the feature definition can be inspected, plotted and tested on its own;
the torch front end turns the matrix into a fixed buffer.
"""
from __future__ import annotations

import numpy as np

# Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    f = np.asarray(freq, dtype=np.float64)
    linear = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    m = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * m
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, linear)


def _check_band(sample_rate: int, f_min: float, f_max: float | None) -> float:
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"filterbank band {f_min}..{f_max} Hz is invalid: need 0 <= f_min < f_max <= {sample_rate / 2} Hz"
        )
    return f_max


def triangular_filters(edges_hz: np.ndarray, sample_rate: int, n_fft: int) -> np.ndarray:
    """Triangles [len(edges) - 2, n_fft // 2 + 1] with corners at consecutive ``edges_hz``,
    each normalised to unit area (so a band's value is a mean power, whatever its width)."""
    n = len(edges_hz) - 2
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2 : n + 2] - edges_hz[:n]))[:, None]
    return weights.astype(np.float32)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """Triangular filters [n_mels, n_fft // 2 + 1], Slaney mel scale, each normalised to unit area.

    Equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")``.
    """
    f_max = _check_band(sample_rate, f_min, f_max)
    return triangular_filters(mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)), sample_rate, n_fft)


def linear_filterbank(
    sample_rate: int, n_fft: int, n_bands: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """Triangular filters [n_bands, n_fft // 2 + 1] equally spaced in Hz, unit area.

    The resolution a mel scale gives up above 1 kHz is kept: a neural vocoder trained to match a
    log-mel spectrogram can leave its errors exactly where mel bands average them away (fine
    harmonic structure, high-band noise), so a detector looking through the same mel is blind
    to them. Same size as the mel bank, so the network's cost does not change.
    """
    f_max = _check_band(sample_rate, f_min, f_max)
    return triangular_filters(np.linspace(f_min, f_max, n_bands + 2), sample_rate, n_fft)
