"""LCNN (Lavrentyeva et al., "STC Antispoofing Systems for the ASVspoof2019 Challenge",
Interspeech 2019) on the log-power spectrogram.

Light CNN with Max-Feature-Map activations (MFM: split the channels in two halves, keep the
element-wise maximum; Wu et al. 2018). The body follows the paper's Table 1 layer by layer:

    conv 5x5 64 -> MFM 32 -> maxpool 2x2
    conv 1x1 64 -> MFM 32 -> BN -> conv 3x3  96 -> MFM 48 -> maxpool -> BN
    conv 1x1 96 -> MFM 48 -> BN -> conv 3x3 128 -> MFM 64 -> maxpool
    conv 1x1 128 -> MFM 64 -> BN -> conv 3x3 64 -> MFM 32 -> BN
    conv 1x1 64 -> MFM 32 -> BN -> conv 3x3 64 -> MFM 32 -> maxpool
    FC 160 -> MFM 80 -> BN -> (dropout) -> FC

The paper flattens a fixed-size input into FC 160; for 4-s windows of any frame count we take
the maximum over time instead and keep the frequency axis (an utterance-level max of each
frequency band: artefacts are local in time but sit at specific frequencies). With the 513-bin
log-power front end that leaves 32 channels x 32 bands = 1,024 inputs to FC 160.

Parameters: 158,016 in the convolutional body (independent of input size) + 164,241 in the head
= 322,257 trainable parameters for 513 bins. The design notes quoted about 371K for the paper's
fixed-input variant; the difference is only the width of the flattened input to FC 160. The last
FC gives one spoof logit instead of two classes.
"""
from __future__ import annotations

import torch
from torch import nn


class MFM(nn.Module):
    """Max-Feature-Map over axis 1: 2C channels (or features) in, C out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(x, 2, dim=1)
        return torch.maximum(a, b)


def _mfm_conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Conv with 2*c_out filters followed by MFM -> c_out channels."""
    return nn.Sequential(nn.Conv2d(c_in, 2 * c_out, kernel_size=kernel, padding=kernel // 2), MFM())


class LCNN(nn.Module):
    """Log-power [B, 1, n_bins, T] -> logit [B]; ``n_bins`` fixes the width of FC 160."""

    def __init__(self, n_bins: int = 513, fc_hidden: int = 160, dropout: float = 0.75) -> None:
        super().__init__()
        if n_bins < 16:
            raise ValueError(f"n_bins {n_bins} is too small: the four 2x2 max-pools need at least 16 bins")
        self.body = nn.Sequential(
            _mfm_conv(1, 32, 5),
            nn.MaxPool2d(2),
            _mfm_conv(32, 32, 1),
            nn.BatchNorm2d(32),
            _mfm_conv(32, 48, 3),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(48),
            _mfm_conv(48, 48, 1),
            nn.BatchNorm2d(48),
            _mfm_conv(48, 64, 3),
            nn.MaxPool2d(2),
            _mfm_conv(64, 64, 1),
            nn.BatchNorm2d(64),
            _mfm_conv(64, 32, 3),
            nn.BatchNorm2d(32),
            _mfm_conv(32, 32, 1),
            nn.BatchNorm2d(32),
            _mfm_conv(32, 32, 3),
            nn.MaxPool2d(2),
        )
        bands = n_bins // 16  # four floor-halvings
        self.head = nn.Sequential(
            nn.Linear(32 * bands, fc_hidden),
            MFM(),
            nn.BatchNorm1d(fc_hidden // 2),
            nn.Dropout(dropout),
            nn.Linear(fc_hidden // 2, 1),
        )
        self.n_bins = n_bins

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[2] != self.n_bins:
            raise ValueError(f"LCNN built for {self.n_bins} frequency bins got {feats.shape[2]}:"
                             " pass arch_params n_bins equal to the front end's n_features")
        x = self.body(feats)  # [B, 32, n_bins // 16, T // 16]
        x = torch.amax(x, dim=3).flatten(1)
        return self.head(x).squeeze(-1)
