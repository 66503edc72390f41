"""A Vocos-style vocoder: ConvNeXt on the log-mel, STFT magnitude and phase out, iSTFT.

Siuzdak 2023 ("Vocos: closing the gap between time-domain and Fourier-based neural vocoders
for high-quality audio synthesis"): every layer runs at the frame rate, and the network
predicts one complex spectrum per mel frame, so the waveform is made by overlap-add of
inverse FFTs, with no upsampling layers at all. That is the difference from HiFi-GAN and
MelGAN that this family adds to the corpus: its artefacts are those of frame-wise phase.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import VocoderConfig, VocosOptions
from .torch_mel import hann


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7), LayerNorm, pointwise MLP, learned per-channel scale, residual (Liu et al. 2022)."""

    def __init__(self, dim: int, intermediate: int, scale: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.expand = nn.Linear(dim, intermediate)
        self.project = nn.Linear(intermediate, dim)
        # A small initial scale keeps the deep residual stack near identity early in training.
        self.gamma = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x).transpose(1, 2)
        h = self.project(nn.functional.gelu(self.expand(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class OverlapAdd(nn.Module):
    """Inverse STFT aligned with MelAnalysis: frame t is centred on sample t * hop + hop / 2.

    ``torch.istft`` centres frame t on t * hop; the mel's frames sit half a hop later, and a
    network asked to learn that shift as a linear phase ramp wastes capacity on it.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann(n_fft), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, n_fft//2+1, T) complex -> (B, T * hop) audio."""
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[:, None]  # (B, n_fft, T)
        n_frames = frames.shape[-1]
        length = (n_frames - 1) * self.hop + self.n_fft
        fold = dict(output_size=(1, length), kernel_size=(1, self.n_fft), stride=(1, self.hop))
        y = nn.functional.fold(frames, **fold)[:, 0, 0]
        envelope = self.window.square()[None, :, None].expand(1, -1, n_frames)
        norm = nn.functional.fold(envelope, **fold)[:, 0, 0]
        start = (self.n_fft - self.hop) // 2
        return (y / norm.clamp(min=1e-5))[:, start : start + n_frames * self.hop]


class VocosStyle(nn.Module):
    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        opts = config.model
        assert isinstance(opts, VocosOptions)
        self.embed = nn.Conv1d(config.mel.n_mels, opts.dim, kernel_size=7, padding=3)
        self.norm_in = nn.LayerNorm(opts.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(opts.dim, opts.intermediate, 1.0 / opts.layers) for _ in range(opts.layers))
        self.norm_out = nn.LayerNorm(opts.dim, eps=1e-6)
        self.bins = opts.n_fft // 2 + 1
        self.head = nn.Linear(opts.dim, 2 * self.bins)
        self.synthesis = OverlapAdd(opts.n_fft, config.mel.hop_length)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log mel -> (B, T * hop) audio."""
        h = self.norm_in(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        out = self.head(self.norm_out(h.transpose(1, 2))).transpose(1, 2)
        log_magnitude, phase = out[:, : self.bins], out[:, self.bins :]
        # exp of a clipped log: the magnitude stays positive and cannot overflow early in training.
        magnitude = torch.exp(log_magnitude.clamp(max=6.0))
        # Vocos's phase parametrisation: an unbounded angle, wrapped implicitly by cos/sin.
        spec = torch.polar(magnitude, phase)
        return self.synthesis(spec)
