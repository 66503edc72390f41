"""SpecRNet (Kawa et al., "SpecRNet: Towards Faster and More Accessible Audio DeepFake Detection",
IEEE TrustCom 2022): three residual 2-D blocks with filter-wise attention, then a 2-layer BiGRU.

Layer sizes follow the authors' published configuration (filters 20/64/64, GRU 64, FC 128), giving
277,963 trainable parameters. As in the authors' code, each non-first block owns a BatchNorm whose
pre-activation output is not fed to conv1; we keep that behaviour (and that parameter) so the count
and function match the published model.
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock2D(nn.Module):
    def __init__(self, c_in: int, c_out: int, first: bool = False) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1)
        self.act = nn.LeakyReLU(0.3)
        self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1) if c_in != c_out else nn.Identity()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.bn2(self.conv1(x))))
        return self.pool(out + self.shortcut(x))


class FilterAttention(nn.Module):
    """Per-filter gate from the block's mean activation: x * s + s (as in RawNet2/SpecRNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]
        return x * s + s


class SpecRNet(nn.Module):
    """Log-mel [B, 1, 80, T] -> logit [B]. The frequency axis must reach 1 after six halvings
    (64 <= n_mels < 128)."""

    def __init__(self, filters: tuple[int, int, int] = (20, 64, 64), gru_hidden: int = 64,
                 gru_layers: int = 2, fc_hidden: int = 128) -> None:
        super().__init__()
        f0, f1, f2 = filters
        self.first_bn = nn.BatchNorm2d(1)
        self.block0 = ResidualBlock2D(1, f0, first=True)
        self.att0 = FilterAttention(f0)
        self.block1 = ResidualBlock2D(f0, f1)
        self.att1 = FilterAttention(f1)
        self.block2 = ResidualBlock2D(f1, f2)
        self.att2 = FilterAttention(f2)
        self.pool = nn.MaxPool2d(2)
        self.bn_before_gru = nn.BatchNorm2d(f2)
        self.gru = nn.GRU(f2, gru_hidden, num_layers=gru_layers, batch_first=True, bidirectional=True)
        self.fc1 = nn.Linear(2 * gru_hidden, fc_hidden)
        self.fc2 = nn.Linear(fc_hidden, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = nn.functional.selu(self.first_bn(feats))
        x = self.pool(self.att0(self.block0(x)))
        x = self.pool(self.att1(self.block1(x)))
        x = self.pool(self.att2(self.block2(x)))
        x = nn.functional.selu(self.bn_before_gru(x))
        # [B, C, 1, T'] -> [B, T', C]; mean over the (length-1) frequency axis keeps shapes static.
        x = x.mean(dim=2).transpose(1, 2)
        x, _ = self.gru(x)
        return self.fc2(self.fc1(x[:, -1])).squeeze(-1)
