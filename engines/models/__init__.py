"""Model zoo: each architecture paired with the front end it was designed for.

``build_detector(arch, frontend, **arch_params)`` returns a ``Detector``: waveform float32
[B, N] at 16 kHz -> spoof logit [B]. Heavier or training-only architectures register here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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


def _resmax(**kw: Any) -> nn.Module:
    from engines.models.resmax import ResMax

    return ResMax(**kw)


ARCHITECTURES: dict[str, Architecture] = {
    "specrnet": Architecture("specrnet", _specrnet, SPECRNET_FRONTEND, "Kawa et al. 2022"),
    "resmax": Architecture("resmax", _resmax, RESMAX_FRONTEND, "Kwak et al. 2020"),
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


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
