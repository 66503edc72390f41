"""A MelGAN-style vocoder: transposed-conv upsampling and dilated residual stacks.

Kumar et al. 2019 ("MelGAN: generative adversarial networks for conditional waveform
synthesis"): the log-mel is upsampled to the sample rate in stages (a transposed convolution
per ratio), each followed by a stack of residual blocks with dilations 1, 3, 9 that widen the
receptive field; a final tanh conv writes the samples. Unlike HiFi-GAN, there is one residual
stack per stage (no multi-receptive-field fusion), and unlike Vocos, it works in the time domain.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .config import MelGANOptions, VocoderConfig

SLOPE = 0.2  # LeakyReLU slope of the paper


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(SLOPE),
            nn.ReflectionPad1d(dilation),
            weight_norm(nn.Conv1d(channels, channels, kernel_size=3, dilation=dilation)),
            nn.LeakyReLU(SLOPE),
            weight_norm(nn.Conv1d(channels, channels, kernel_size=1)),
        )
        self.shortcut = weight_norm(nn.Conv1d(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


def _upsample(channels: int, ratio: int) -> nn.Module:
    # Kernel 2r with stride r: every output sample sees two input frames, which avoids the
    # checkerboard pattern of kernel == stride; the padding keeps the length exactly T * r.
    return weight_norm(
        nn.ConvTranspose1d(channels, channels // 2, kernel_size=2 * ratio, stride=ratio,
                           padding=ratio // 2 + ratio % 2, output_padding=ratio % 2)
    )


class MelGANStyle(nn.Module):
    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        opts = config.model
        assert isinstance(opts, MelGANOptions)
        layers: list[nn.Module] = [nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(config.mel.n_mels, opts.channels, 7))]
        channels = opts.channels
        for ratio in opts.ratios:
            layers += [nn.LeakyReLU(SLOPE), _upsample(channels, ratio)]
            channels //= 2
            layers += [ResidualBlock(channels, d) for d in opts.dilations]
        layers += [nn.LeakyReLU(SLOPE), nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(channels, 1, 7)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log mel -> (B, T * hop) audio."""
        return self.net(mel)[:, 0]
