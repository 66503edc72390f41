"""What a trained vocoder is: its architecture, its sizes and the mel it was trained on.

Saved as ``config.json`` beside the weights, so a checkpoint is usable without the command
that made it; a vocoder only sounds right on the exact analysis it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..audio import SAMPLE_RATE
from ..neural_vocoder import MelAnalysis


class VocoderConfigError(ValueError):
    """A config or option that cannot make a vocoder (the message says which value)."""


CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"

# 16 kHz, 10-ms hop (the rate of the detector's own features), 40-ms window, 80 Slaney bands
# over the whole 0-8 kHz band, natural log of the magnitude mel: HiFi-GAN's recipe at 16 kHz.
OWN_MEL = MelAnalysis(sample_rate=SAMPLE_RATE, n_fft=1024, win_length=640, hop_length=160)


@dataclass(frozen=True)
class VocosOptions:
    """ConvNeXt backbone width/depth and the synthesis STFT (window = n_fft, hop = the mel's)."""

    dim: int = 192
    intermediate: int = 576
    layers: int = 6
    n_fft: int = 640  # 4 x hop, Vocos's ratio; 321 bins of magnitude and phase per frame


@dataclass(frozen=True)
class MelGANOptions:
    """Width after the input conv, halved at each upsampling; the ratios multiply to the hop."""

    channels: int = 256
    ratios: tuple[int, ...] = (5, 4, 4, 2)
    dilations: tuple[int, ...] = (1, 3, 9)  # one residual stack of this many blocks per ratio


ARCH_OPTIONS: dict[str, type[VocosOptions] | type[MelGANOptions]] = {"vocos": VocosOptions, "melgan": MelGANOptions}


@dataclass(frozen=True)
class VocoderConfig:
    arch: str
    mel: MelAnalysis = OWN_MEL
    model: VocosOptions | MelGANOptions = field(default_factory=VocosOptions)

    def __post_init__(self) -> None:
        if self.arch not in ARCH_OPTIONS:
            raise VocoderConfigError(f"unknown vocoder architecture {self.arch!r}; choose from {', '.join(ARCH_OPTIONS)}")
        if not isinstance(self.model, ARCH_OPTIONS[self.arch]):
            raise VocoderConfigError(f"{self.arch} needs {ARCH_OPTIONS[self.arch].__name__}, got {type(self.model).__name__}")
        if self.mel.sample_rate != SAMPLE_RATE:
            raise VocoderConfigError(f"own vocoders run at {SAMPLE_RATE} Hz, the mel says {self.mel.sample_rate}")
        hop = self.mel.hop_length
        if isinstance(self.model, MelGANOptions):
            product = 1
            for r in self.model.ratios:
                product *= r
            if product != hop or min(self.model.ratios) < 1:
                raise VocoderConfigError(f"melgan ratios {self.model.ratios} must multiply to the hop {hop}")
            if self.model.channels % 2 ** len(self.model.ratios):
                raise VocoderConfigError(f"melgan channels {self.model.channels} must halve {len(self.model.ratios)} times")
        else:
            if self.model.n_fft < 2 * hop or self.model.n_fft % 2:
                raise VocoderConfigError(f"vocos n_fft {self.model.n_fft} must be even and at least twice the hop {hop}")
            if min(self.model.dim, self.model.intermediate, self.model.layers) < 1:
                raise VocoderConfigError(f"vocos sizes must be positive: {self.model}")

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "mel": asdict(self.mel), "model": asdict(self.model)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VocoderConfig:
        try:
            arch = data["arch"]
            options = ARCH_OPTIONS.get(arch, VocosOptions)
            model = {k: tuple(v) if isinstance(v, list) else v for k, v in data["model"].items()}
            known = {f.name for f in fields(options)}
            if set(model) - known:
                raise VocoderConfigError(f"unknown {arch} options {sorted(set(model) - known)}")
            return cls(arch=arch, mel=MelAnalysis(**data["mel"]), model=options(**model))
        except (KeyError, TypeError) as err:
            raise VocoderConfigError(f"not a vocoder config: {err}") from None

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> VocoderConfig:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            raise VocoderConfigError(f"cannot read the vocoder config {path}: {err}") from None


def default_config(arch: str) -> VocoderConfig:
    if arch not in ARCH_OPTIONS:
        raise VocoderConfigError(f"unknown vocoder architecture {arch!r}; choose from {', '.join(ARCH_OPTIONS)}")
    return VocoderConfig(arch=arch, model=ARCH_OPTIONS[arch]())


def write_json(path: Path, data: object) -> None:
    """Atomic: a checkpoint interrupted mid-write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
