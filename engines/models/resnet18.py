"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) on a log-mel
spectrogram, as the seed README describes: the ImageNet layout with BasicBlocks [2, 2, 2, 2] and
widths 64/128/256/512, a 7x7 stride-2 stem and 3x3 max-pool, but a 1-channel input and a single
spoof logit instead of 1000 classes.

11,170,753 trainable parameters (torchvision's ImageNet ResNet-18 has 11,689,512: its 3-channel
stem is 6,272 larger and its 1000-way head 512,487 larger). Trained from scratch: no ImageNet
weights are used or downloaded.
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the identity (or a strided 1x1 projection)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    """Log-mel [B, 1, F, T] -> logit [B]. Any F, T >= 32 (five stride-2 stages)."""

    def __init__(self, widths: tuple[int, int, int, int] = (64, 128, 256, 512),
                 blocks: tuple[int, int, int, int] = (2, 2, 2, 2), dropout: float = 0.0) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(f"widths {widths} and blocks {blocks} must each have 4 entries (one per stage)")
        self.input_bn = nn.BatchNorm2d(1, affine=False)  # per-utterance level drifts; no extra params
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            for j in range(n):
                layers.append(BasicBlock(c_in, width, stride if j == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.input_bn(feats)))
        x = x.mean(dim=(2, 3))
        return self.fc(self.dropout(x)).squeeze(-1)
