"""EfficientNet-B0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019) on a log-mel spectrogram, with the seed README's head: global average pool
-> Linear 1280->256 -> ReLU -> dropout -> Linear 256->1.

The body is the B0 baseline of the paper's Table 1: a 3x3 stride-2 stem (32 channels), seven
stages of MBConv blocks (inverted bottleneck: 1x1 expansion, depthwise kxk, squeeze-excitation
with a quarter of the block's input channels, linear 1x1 projection; SiLU activations), and a
1x1 conv to 1280 channels. Residual blocks use stochastic depth, rate rising linearly to 0.2.
The stem takes one channel instead of RGB. Trained from scratch: no ImageNet weights.

4,335,165 trainable parameters (4,006,972 in the body + 328,193 in the head).
"""
from __future__ import annotations

import torch
from torch import nn

# (expansion, kernel, stride, out channels, repeats) per stage, EfficientNet-B0.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, kernel_size=1)
        self.expand = nn.Conv2d(squeezed, channels, kernel_size=1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, expansion: int, kernel: int, stride: int,
                 drop_path: float) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_act(c_in, hidden, 1))
        layers += [
            _conv_bn_act(hidden, hidden, kernel, stride, groups=hidden),
            SqueezeExcite(hidden, max(1, c_in // 4)),
            _conv_bn_act(hidden, c_out, 1, act=False),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if not self.residual:
            return out
        if self.training and self.drop_path > 0.0:
            # Stochastic depth: drop the whole branch per sample, rescale the survivors.
            keep = 1.0 - self.drop_path
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return out + x


class EfficientNetB0(nn.Module):
    """Log-mel [B, 1, F, T] -> logit [B]. Any F, T >= 32 (five stride-2 stages)."""

    def __init__(self, head_hidden: int = 256, dropout: float = 0.2, drop_path: float = 0.2) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, affine=False)
        self.stem = _conv_bn_act(1, 32, 3, stride=2)
        total = sum(s[4] for s in B0_STAGES)
        blocks: list[nn.Module] = []
        c_in, index = 32, 0
        for expansion, kernel, stride, c_out, repeats in B0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, expansion, kernel, stride if r == 0 else 1,
                                     drop_path * index / total))
                c_in, index = c_out, index + 1
        self.blocks = nn.Sequential(*blocks)
        self.top = _conv_bn_act(c_in, 1280, 1)
        self.head = nn.Sequential(
            nn.Linear(1280, head_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(head_hidden, 1)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.top(self.blocks(self.stem(self.input_bn(feats))))
        return self.head(x.mean(dim=(2, 3))).squeeze(-1)
