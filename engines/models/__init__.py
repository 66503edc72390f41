"""Model zoo: each architecture paired with the front end it was designed for.

``build_detector(arch, frontend, **arch_params)`` returns a ``Detector``: waveform float32
[B, N] at 16 kHz -> spoof logit [B]. Heavier or training-only architectures register here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from engines.frontend import RESMAX_FRONTEND, SPECRNET_FRONTEND, FrontEnd, FrontEndConfig


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[..., nn.Module]
    default_frontend: FrontEndConfig
    citation: str


def _specrnet(**kw: Any) -> nn.Module:
    from engines.models.specrnet import SpecRNet

    return SpecRNet(**kw)


def _specrnet_stream(**kw: Any) -> nn.Module:
    from engines.models.specrnet_stream import SpecRNetStream

    return SpecRNetStream(**kw)


def _resmax(**kw: Any) -> nn.Module:
    from engines.models.resmax import ResMax

    return ResMax(**kw)


def _resmax_lite(**kw: Any) -> nn.Module:
    from engines.models.resmax import ResMax

    return ResMax(**{**RESMAX_LITE_PARAMS, **kw})


def _resnet18(**kw: Any) -> nn.Module:
    from engines.models.resnet18 import ResNet18

    return ResNet18(**kw)


def _res2net(**kw: Any) -> nn.Module:
    from engines.models.res2net import Res2Net

    return Res2Net(**kw)


def _efficientnet_b0(**kw: Any) -> nn.Module:
    from engines.models.efficientnet import EfficientNetB0

    return EfficientNetB0(**kw)


def _lcnn(**kw: Any) -> nn.Module:
    from engines.models.lcnn import LCNN

    return LCNN(**kw)


# 128 log-mel bands for Res2Net (seed README). n_fft 1024 (64-ms window, 15.6-Hz bins) so that each
# of the 128 triangles, only ~23 Hz apart below 1 kHz, covers FFT bins of its own; hop 10 ms.
RES2NET_FRONTEND = FrontEndConfig(kind="logmel", n_fft=1024, win_length=1024, hop_length=160, n_mels=128)

# ResMax at a third of its cost: narrower stages and a stem strided in time. Its front end keeps
# ResMax's 513 fine bins (a 257-bin spectrogram did not learn the HiFi-GAN traces, docs/generalization.md)
# with a 250-sample hop, so the default 0.5-s window hop is a whole number of frames (per-hop front end).
RESMAX_LITE_PARAMS: dict[str, Any] = {"widths": (12, 16, 24, 32, 48), "head": 32, "stem_time_stride": 2}
RESMAX_LITE_FRONTEND = FrontEndConfig(kind="logpower", n_fft=1024, win_length=1024, hop_length=250)

ARCHITECTURES: dict[str, Architecture] = {
    "specrnet": Architecture("specrnet", _specrnet, SPECRNET_FRONTEND, "Kawa et al. 2022"),
    # SpecRNet's streaming student: per-hop computation equals its whole window's (engines.stream_network).
    "specrnet_stream": Architecture("specrnet_stream", _specrnet_stream, SPECRNET_FRONTEND,
                                    "Kawa et al. 2022, made streamable here"),
    "resmax": Architecture("resmax", _resmax, RESMAX_FRONTEND, "Kwak et al. 2020"),
    "resmax_lite": Architecture("resmax_lite", _resmax_lite, RESMAX_LITE_FRONTEND, "Kwak et al. 2020, narrowed here"),
    # Training-zoo models: heavier, not shipped with weights.
    "resnet18": Architecture("resnet18", _resnet18, SPECRNET_FRONTEND, "He et al. 2016 (seed README)"),
    "res2net": Architecture("res2net", _res2net, RES2NET_FRONTEND, "Li et al. 2021"),
    "efficientnet_b0": Architecture("efficientnet_b0", _efficientnet_b0, SPECRNET_FRONTEND,
                                    "Tan & Le 2019 (seed README head)"),
    "lcnn": Architecture("lcnn", _lcnn, RESMAX_FRONTEND, "Lavrentyeva et al. 2019"),
}


def register(arch: Architecture) -> None:
    ARCHITECTURES[arch.name] = arch


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"architecture {name!r} is not known; accepted: {sorted(ARCHITECTURES)}") from None


class Detector(nn.Module):
    """Front end + network: the whole graph that is exported and compiled."""

    def __init__(self, frontend: FrontEndConfig, network: nn.Module) -> None:
        super().__init__()
        self.frontend = FrontEnd(frontend)
        self.network = network

    def forward(self, waveform):  # [B, N] float32 -> [B] logits
        return self.network(self.frontend(waveform))


def build_detector(arch: str, frontend: FrontEndConfig | None = None, **arch_params: Any) -> Detector:
    spec = get_architecture(arch)
    return Detector(frontend or spec.default_frontend, spec.build(**arch_params))


class MixedPrecision(nn.Module):
    """A detector with its front end in float32 and its network in float16 (float32 logits):
    the log spectrogram needs float32's range; the network runs at half cost on GPUs."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.frontend = detector.frontend.float()
        self.network = detector.network.half()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.network(self.frontend(wave).half()).float()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
