"""Spectrogram front end that lives inside every model and exports with it.

The STFT is one Conv1d whose fixed kernels are the windowed Fourier basis of the n_fft/2+1
non-negative frequencies (real parts in the first half of the output channels, imaginary parts in
the second half). A convolution exports to ONNX and TensorRT everywhere, unlike ``torch.stft``,
so the same graph runs on CPU (ONNX Runtime) and GPU (TensorRT, CUDA graphs). The front end is
always computed in float32, even when the network after it runs in FP16: log-spectra of quiet
audio lose too much in half precision.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engines.frontend_config import RESMAX_FRONTEND, SPECRNET_FRONTEND, FrontEndConfig
from engines.features import fourier_basis

__all__ = ["FrontEnd", "FrontEndConfig", "STFT", "SPECRNET_FRONTEND", "RESMAX_FRONTEND", "fourier_basis"]


def fourier_basis_graph(n_fft: int, win_length: int, like: torch.Tensor) -> torch.Tensor:
    """The same kernels as ``fourier_basis`` built from a few tensor ops.

    Exported graphs build the basis this way instead of storing it: for n_fft 1024 the stored
    basis alone would be 4.2 MB. The phase index k*n is reduced modulo n_fft in integers first,
    so float32 sees angles below 2*pi and stays accurate to ~1e-7 (a float32 k*n*2*pi/n_fft
    would be off by 1e-4 rad at the top bins).
    """
    left = (n_fft - win_length) // 2
    k = torch.arange(n_fft // 2 + 1, device=like.device).unsqueeze(1)
    j = torch.arange(win_length, device=like.device)
    phase = torch.remainder(k * (j + left).unsqueeze(0), n_fft).to(like.dtype) * (2.0 * np.pi / n_fft)
    window = 0.5 - 0.5 * torch.cos(j.to(like.dtype) * (2.0 * np.pi / win_length))
    basis = torch.cat([torch.cos(phase), -torch.sin(phase)], dim=0) * window.unsqueeze(0)
    return basis.unsqueeze(1)


class STFT(nn.Module):
    """Complex STFT as a strided Conv1d; returns (real, imag), each [B, bins, frames]."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int, center: bool = True) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop_length, self.center = n_fft, win_length, hop_length, center
        self.n_bins = n_fft // 2 + 1
        # Not persistent: derived from the config, so checkpoints do not carry it.
        self.register_buffer("basis", torch.from_numpy(fourier_basis(n_fft, win_length)), persistent=False)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = wave.unsqueeze(1)
        # The kernel skips the window's zero taps (left/right of it), so the signal shifts by as much.
        left = (self.n_fft - self.win_length) // 2
        right = self.n_fft - self.win_length - left
        if self.center:
            half = self.n_fft // 2
            x = nn.functional.pad(x, (half - left, half - right))
        else:
            x = x[..., left : x.shape[-1] - right]
        if torch.onnx.is_in_onnx_export():
            basis = fourier_basis_graph(self.n_fft, self.win_length, x)
        else:
            basis = self.basis
        spec = nn.functional.conv1d(x, basis, stride=self.hop_length)
        return spec[:, : self.n_bins], spec[:, self.n_bins :]


class FrontEnd(nn.Module):
    """Waveform float32 [B, N] -> log features float32 [B, 1, n_features, frames]."""

    def __init__(self, config: FrontEndConfig) -> None:
        super().__init__()
        self.config = config
        self.stft = STFT(config.n_fft, config.win_length, config.hop_length, config.center)
        fb = config.filterbank()
        if fb is not None:
            self.register_buffer("band_fb", torch.from_numpy(fb), persistent=False)
        else:
            self.band_fb = None

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.float()
        real, imag = self.stft(wave)
        power = real * real + imag * imag
        if self.band_fb is not None:
            power = torch.matmul(self.band_fb, power)
        return torch.log(power + self.config.log_floor).unsqueeze(1)
