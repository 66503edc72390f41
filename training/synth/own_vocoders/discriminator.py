"""A light multi-resolution spectrogram discriminator (UnivNet's MRD, Jang et al. 2021).

Vocos and MelGAN are GAN-trained, and the adversarial loss is what gives a GAN vocoder its
fingerprint (sharp, detailed but subtly wrong fine structure) rather than the over-smoothed
spectrum of a regression-only model. A spectrogram discriminator is the cheapest that works
on two CPU cores: its 2-D convs run on a few hundred frames instead of every sample.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .torch_mel import hann, stft_magnitude

# (n_fft, hop) at 16 kHz: 16, 32 and 64 ms windows, so time and frequency detail are both judged.
RESOLUTIONS: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256))


class SpectrogramDiscriminator(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            # Striding frequency from the first layer on: a quarter of the cost of full-resolution
            # early layers, which on two CPU cores would cost more than the generator itself.
            weight_norm(nn.Conv2d(1, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Compressed magnitude (time, frequency) as an image; the strides shrink frequency only.
        h = stft_magnitude(x, self.n_fft, self.hop, self.n_fft, self.window).pow(0.5).transpose(1, 2)[:, None]
        features = []
        for conv in self.convs:
            h = nn.functional.leaky_relu(conv(h), 0.1)
            features.append(h)
        return self.out(h), features


class MultiResolutionDiscriminator(nn.Module):
    def __init__(self, channels: int = 8, resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(SpectrogramDiscriminator(n, h, channels) for n, h in resolutions)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(x) for d in self.discriminators]
