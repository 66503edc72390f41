"""Res2Net-50 for anti-spoofing (Li, Wu, Lu, Liu, Meng, "Replay and Synthetic Speech Detection
with Res2Net Architecture", ICASSP 2021), on a 128-band log-mel spectrogram.

Res2Net (Gao et al., TPAMI 2019) replaces the 3x3 convolution of a ResNet bottleneck by a
hierarchy: the 1x1-reduced channels are split into ``scale`` groups; group 1 passes through,
group i (i >= 2) is convolved after adding the previous group's output, which widens the
receptive field inside one block. Li et al. keep the ResNet-50 depth ([3, 4, 6, 3] bottlenecks)
but shrink the widths so the model stays below a million parameters. Here: planes 16/32/64/128
(a quarter of ImageNet's), scale 4 and base width 26 as in Res2Net-50 26w4s, and a bottleneck
expansion of 2 (256 output channels), which is what lands on the paper's ~0.9M; expansion 4
would give 1.49M. ``se=True`` adds squeeze-excitation (reduction 16) to each block, their
SE-Res2Net50. The stem (3x3 conv, 16 channels) is followed by a 3x3 stride-2 max-pool, which
has no parameters but quarters the cost of every later layer on a 128 x 401 log-mel map.

Default layout: 878,877 trainable parameters (the paper reports about 0.9M for Res2Net50);
with ``se=True``: 920,179 (about 0.96M in the paper for SE-Res2Net50). A 1-logit head replaces
their 2-way output.
"""
from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class Res2Bottleneck(nn.Module):
    """1x1 reduce -> hierarchical 3x3 over ``scale`` splits -> 1x1 expand, plus shortcut."""

    expansion = 2

    def __init__(self, c_in: int, planes: int, stride: int = 1, base_width: int = 26, scale: int = 4,
                 se: bool = False) -> None:
        super().__init__()
        if scale < 2:
            raise ValueError(f"Res2Net scale {scale} must be >= 2")
        width = planes * base_width // 64
        if width < 1:
            raise ValueError(f"planes {planes} x base_width {base_width} / 64 gives an empty split")
        self.width, self.scale = width, scale
        # First block of a stage: the splits do not accumulate and the pass-through split is
        # pooled so all groups leave with the same (possibly strided) size, as in Res2Net's 'stage' blocks.
        self.first = stride != 1 or c_in != planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, width * scale, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False) for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1) if self.first else nn.Identity()
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.se: nn.Module = SqueezeExcite(planes * self.expansion) if se else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if self.first:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, planes * self.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        splits = torch.split(out, self.width, dim=1)
        outs: list[torch.Tensor] = []
        sp = splits[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i > 0:
                sp = splits[i] if self.first else sp + splits[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        outs.append(self.pool(splits[-1]))
        out = self.se(self.bn3(self.conv3(torch.cat(outs, dim=1))))
        return self.relu(out + self.downsample(x))


class Res2Net(nn.Module):
    """Log-mel [B, 1, 128, T] -> logit [B]. Frequency and time are averaged globally at the end."""

    def __init__(self, planes: tuple[int, int, int, int] = (16, 32, 64, 128),
                 blocks: tuple[int, int, int, int] = (3, 4, 6, 3), base_width: int = 26, scale: int = 4,
                 se: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if len(planes) != 4 or len(blocks) != 4:
            raise ValueError(f"planes {planes} and blocks {blocks} must each have 4 entries (one per stage)")
        self.input_bn = nn.BatchNorm2d(1, affine=False)
        self.stem = nn.Sequential(
            nn.Conv2d(1, planes[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(planes[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        c_in = planes[0]
        for i, (p, n) in enumerate(zip(planes, blocks)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(Res2Bottleneck(c_in, p, stride, base_width, scale, se))
                c_in = p * Res2Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.input_bn(feats)))
        return self.fc(self.dropout(x.mean(dim=(2, 3)))).squeeze(-1)
