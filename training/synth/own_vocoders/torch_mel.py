"""MelAnalysis in torch: the same frames, window and filterbank, differentiable and batched.

Training needs the mel of generated audio with gradients (the mel loss) and the mel of many
segments at once; synthesis uses the numpy ``MelAnalysis`` itself. The tests check the two agree.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..neural_vocoder import MelAnalysis


def _padded_hann(win_length: int, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    left = (n_fft - win_length) // 2
    return nn.functional.pad(window, (left, n_fft - win_length - left))


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win_length: int, window: torch.Tensor) -> torch.Tensor:
    """|STFT| of (B, N) audio as (B, n_fft//2+1, N//hop): MelAnalysis's reflect-padded framing."""
    pad = (n_fft - hop) // 2
    padded = nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    frames = padded.unfold(-1, n_fft, hop) * window
    spec = torch.fft.rfft(frames, dim=-1)
    # The floor keeps the gradient of |z| finite where the spectrum is exactly zero.
    return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9).transpose(1, 2)


class TorchMel(nn.Module):
    def __init__(self, analysis: MelAnalysis) -> None:
        super().__init__()
        from engines.mel import mel_filterbank

        self.analysis = analysis
        bank = mel_filterbank(analysis.sample_rate, analysis.n_fft, analysis.n_mels, analysis.f_min, analysis.f_max)
        self.register_buffer("bank", torch.from_numpy(np.asarray(bank, dtype=np.float32)), persistent=False)
        window = _padded_hann(analysis.win_length, analysis.n_fft).float()
        self.register_buffer("window", window, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) audio -> (B, n_mels, N // hop) log mel."""
        a = self.analysis
        magnitude = stft_magnitude(x, a.n_fft, a.hop_length, a.win_length, self.window) ** a.power
        return torch.log(torch.clamp(self.bank @ magnitude, min=a.log_floor))


def hann(n: int) -> torch.Tensor:
    return _padded_hann(n, n).float()
