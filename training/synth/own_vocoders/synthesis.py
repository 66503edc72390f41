"""Build a vocoder from its config, load trained weights, and copy-synthesize speech with it.

``vocode`` is the one copy-synthesis path: the corpus generators and the trainer's
validation both call it, so the validation distance measures exactly what the corpus gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio import active_level_db, fit_length, normalize_level
from ..base import SynthError
from .config import CONFIG_FILE, WEIGHTS_FILE, VocoderConfig
from .melgan import MelGANStyle
from .vocos import VocosStyle

_ARCHITECTURES: dict[str, type[nn.Module]] = {"vocos": VocosStyle, "melgan": MelGANStyle}


def build_model(config: VocoderConfig) -> nn.Module:
    return _ARCHITECTURES[config.arch](config)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_vocoder(folder: Path) -> tuple[nn.Module, VocoderConfig]:
    """The generator saved in ``folder`` (config.json + generator.safetensors), in eval mode."""
    from safetensors.torch import load_file

    config = VocoderConfig.load(folder / CONFIG_FILE)
    model = build_model(config)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), config


def vocode(model: nn.Module, config: VocoderConfig, x: np.ndarray, name: str) -> np.ndarray:
    """16 kHz speech -> its log-mel -> the vocoder -> speech of the same length and active level."""
    mel = config.mel(np.asarray(x, dtype=np.float32))
    device = next(model.parameters()).device  # a model in training may be on a GPU
    with torch.inference_mode():
        y = model(torch.from_numpy(mel)[None].to(device)).reshape(-1).cpu().numpy()
    if not np.all(np.isfinite(y)) or float(np.max(np.abs(y))) < 1e-4:
        raise SynthError(f"{name}: the vocoder returned silence or non-finite samples")
    # The analysis gives len // hop frames: the last partial hop comes back as silence.
    return normalize_level(fit_length(y.astype(np.float32), x.size), active_level_db(x))
