"""SpecRNet-Stream: a SpecRNet-shaped student whose per-hop computation equals its whole window's.

Live streams are scored as 4-s windows every 0.5-s hop; with SpecRNet's front end (hop 160 at 16 kHz)
a window is 401 centred frames and a hop exactly 50. SpecRNet cannot reuse the overlap (window-global
attention means, zero padding in time, time strides that do not align with 50 frames, a BiGRU). This
network splits into two parts with the cut chosen so that the expensive part is reusable:

* **trunk** (``StreamTrunk``): SpecRNet's three residual blocks at the same widths, log-mel
  [B, 1, 80, L] -> trunk frames [B, C, (L - context) / stride + 1]. Trunk frame j is a function of
  input frames ``stride * j .. stride * j + context - 1`` alone, and the same function for every j:

  - convolutions are unpadded ("valid") in time and padded in frequency only, so no frame sees a
    zero that a longer input would have replaced by audio; block 0 is 3x3 (two convs: 2 frames of
    context each), blocks 1 and 2 are 3x1 (frequency only), since a time tap at stride 10 would
    add 20 input frames of context per conv and the per-hop cost grows with the context;
  - residual shortcuts are 1x1 and cropped in time by what the valid convs removed;
  - FilterAttention's gate from the *window's* mean becomes a gate from each frame's mean over
    frequency (``FrameGate``): local, so frame j's gate does not change when the window moves;
  - time pooling is non-overlapping max pooling, 2 after block 0 and 5 after its gate: a total
    stride of 10 frames, which divides the 50-frame hop, so window k + 1's trunk frame j is window
    k's frame j + 5, computed from the same samples. Frequency pools by 2 six times, as in
    SpecRNet (80 -> 1).

  Receptive field (input frames per trunk frame), layer by layer with the stride s before it:
  conv 3 (+2 x s=1) -> 3, conv 3 (+2) -> 5, pool 2 (+1 x 1) -> 6, pool 5 (+4 x 2) -> 14; the
  3x1 convs and frequency pools add nothing. So context = 14, stride = 10: a hop's 5 new trunk
  frames need the hop's 50 new feature frames plus the 4 before them (54 frames).
* **readout** (``Readout``): trunk frames [B, C, N] -> logit [B]. BatchNorm + SELU, max pooling
  by 5 in time (the newest frames kept: 39 -> 7 steps of 0.5 s, as SpecRNet's GRU sees 6 of
  0.64 s), then SpecRNet's 2-layer BiGRU (last step) and two linear layers. It reads the window's
  trunk frames only, so any computation in it is exact per hop; it is cheap, so it is recomputed
  every hop.

The whole-window forward (``SpecRNetStream``) crops the window before the trunk: the ``edge``
frames at each end whose centred STFT reached into the window's zero padding (2 for SpecRNet's
front end; those differ from the stream's frames at the same place), then the oldest
``(interior - context) % stride`` frames, so the last trunk frame ends on the window's last
interior frame and every pool divides evenly. For the 401-frame window: interior 397 frames,
3 more dropped, trunk frames 39 = (394 - 14) / 10 + 1, the first reading window frame 5.
``geometry`` states this arithmetic for a window length, for the per-hop path
(``engines.stream_network``), which runs the trunk on a hop's 54 frames and the readout on the
stream's cached 39 trunk frames: the same numbers as this forward.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FrameGate", "Readout", "SpecRNetStream", "StreamBlock", "StreamTrunk", "init_from_specrnet"]


class StreamBlock(nn.Module):
    """SpecRNet's residual block, valid in time: two convs (3, ``time_kernel``), a 1x1 shortcut
    cropped by the frames the convs removed, then max pooling (2 in frequency, ``time_pool``)."""

    def __init__(self, c_in: int, c_out: int, time_kernel: int, time_pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=(3, time_kernel), padding=(1, 0))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=(3, time_kernel), padding=(1, 0))
        self.act = nn.LeakyReLU(0.3)
        self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1) if c_in != c_out else nn.Identity()
        self.pool = nn.MaxPool2d((2, time_pool))
        self.trim = time_kernel - 1  # frames each valid conv pair removes at each end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.bn2(self.conv1(x))))
        skip = x[..., self.trim : x.shape[-1] - self.trim] if self.trim else x
        return self.pool(out + self.shortcut(skip))


class FrameGate(nn.Module):
    """FilterAttention's per-filter gate ``x * s + s``, from each frame's mean over frequency instead
    of the window's mean: the gate of a frame depends on that frame alone."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc(x.mean(dim=2).transpose(1, 2))).transpose(1, 2)[:, :, None, :]
        return x * s + s


class StreamTrunk(nn.Module):
    """Log-mel [B, 1, 80, L] -> trunk frames [B, C, (L - context) / stride + 1] (see module docstring)."""

    #: Time pooling of block 0 and of the pool after its gate: total stride 10, context 14.
    TIME_POOLS = (2, 5)

    def __init__(self, filters: tuple[int, int, int] = (20, 64, 64)) -> None:
        super().__init__()
        f0, f1, f2 = filters
        p0, p1 = self.TIME_POOLS
        self.first_bn = nn.BatchNorm2d(1)
        self.block0 = StreamBlock(1, f0, time_kernel=3, time_pool=p0)
        self.att0 = FrameGate(f0)
        self.pool0 = nn.MaxPool2d((2, p1))
        self.block1 = StreamBlock(f0, f1, time_kernel=1, time_pool=1)
        self.att1 = FrameGate(f1)
        self.block2 = StreamBlock(f1, f2, time_kernel=1, time_pool=1)
        self.att2 = FrameGate(f2)
        self.pool = nn.MaxPool2d((2, 1))
        self.channels = f2
        self.stride = p0 * p1
        # Two valid 3-tap convs at stride 1 (+2 each), pool p0 (+p0-1), pool p1 at stride p0.
        self.context = 1 + 2 + 2 + (p0 - 1) + (p1 - 1) * p0

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = nn.functional.selu(self.first_bn(feats))
        x = self.pool0(self.att0(self.block0(x)))
        x = self.pool(self.att1(self.block1(x)))
        x = self.pool(self.att2(self.block2(x)))
        return x.mean(dim=2)  # frequency is 1 here (80 halved six times); mean keeps shapes static


class Readout(nn.Module):
    """Trunk frames [B, C, N] -> logit [B]: SpecRNet's head (BatchNorm, SELU, BiGRU's last step, FC)
    over the trunk frames max-pooled by ``TIME_POOL``, the oldest ``N % TIME_POOL`` left out."""

    #: Trunk frames per GRU step: a short sequence keeps the GRU cheap per hop (and its export small).
    TIME_POOL = 5

    def __init__(self, channels: int = 64, gru_hidden: int = 64, gru_layers: int = 2, fc_hidden: int = 128) -> None:
        super().__init__()
        self.bn_before_gru = nn.BatchNorm1d(channels)
        self.gru = nn.GRU(channels, gru_hidden, num_layers=gru_layers, batch_first=True, bidirectional=True)
        self.fc1 = nn.Linear(2 * gru_hidden, fc_hidden)
        self.fc2 = nn.Linear(fc_hidden, 1)

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        x = nn.functional.selu(self.bn_before_gru(trunk))
        x = nn.functional.max_pool1d(x[..., x.shape[-1] % self.TIME_POOL :], self.TIME_POOL)
        x, _ = self.gru(x.transpose(1, 2))
        return self.fc2(self.fc1(x[:, -1])).squeeze(-1)


class SpecRNetStream(nn.Module):
    """Log-mel [B, 1, 80, T] -> logit [B]: crop, trunk, readout. ``edge``: frames at each end of a
    window that its front end's centred STFT padded (2 for SPECRNET_FRONTEND: n_fft 512, hop 160)."""

    def __init__(self, filters: tuple[int, int, int] = (20, 64, 64), gru_hidden: int = 64, gru_layers: int = 2,
                 fc_hidden: int = 128, edge: int = 2) -> None:
        super().__init__()
        if edge < 0:
            raise ValueError(f"edge must be >= 0 frames, got {edge}")
        self.edge = edge
        self.trunk = StreamTrunk(tuple(filters))
        self.readout = Readout(self.trunk.channels, gru_hidden, gru_layers, fc_hidden)

    def geometry(self, frames: int) -> dict[str, int]:
        """For a window of ``frames`` feature frames: trunk frames per window (``frames``), the window
        frame the first one starts at (``first``), ``stride`` and ``context`` in feature frames and
        the trunk's ``channels``. Trunk frame j reads window frames first + stride * j ..
        first + stride * j + context - 1."""
        stride, context = self.trunk.stride, self.trunk.context
        interior = frames - 2 * self.edge
        if interior < context:
            raise ValueError(f"a window of {frames} frames holds {interior} unpadded frames, fewer than the trunk's "
                             f"context of {context}")
        count = (interior - context) // stride + 1
        first = self.edge + (interior - context) % stride
        return {"frames": count, "first": first, "stride": stride, "context": context,
                "channels": self.trunk.channels, "window_frames": frames}

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        g = self.geometry(feats.shape[-1])
        end = g["first"] + g["stride"] * (g["frames"] - 1) + g["context"]
        return self.readout(self.trunk(feats[..., g["first"] : end]))


def init_from_specrnet(student: SpecRNetStream, teacher: nn.Module) -> list[str]:
    """Copy a SpecRNet's weights into ``student`` where they fit: same name and shape, or a 3x3
    kernel whose centre time column makes a 3x1 one (blocks 1 and 2), attention fc -> frame gate.
    Returns the student's parameter and buffer names that were set (a distillation's start)."""
    source = dict(teacher.state_dict())
    names: dict[str, str] = {}
    for name in student.state_dict():
        part, _, rest = name.partition(".")
        names[name] = rest if part in ("trunk", "readout") else name
    copied = []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            value: Any = source.get(names[name])
            if value is None:
                continue
            if value.shape != tensor.shape and value.ndim == 4 and value.shape[3] == 3 and tensor.shape[3] == 1:
                value = value[..., 1:2]
            if value.shape == tensor.shape:
                tensor.copy_(value)
                copied.append(name)
    return copied
