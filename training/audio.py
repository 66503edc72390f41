"""Windowing shared by training and evaluation (numpy; no torch). Decoding: engines.audio_io."""
from __future__ import annotations

import numpy as np

__all__ = ["window_starts", "cut_windows"]


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
