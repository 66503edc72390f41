"""The corpus builder's generators for the own vocoders: ``vocos-ours``, ``melgan-ours``.

Each loads ``training/synth/weights/<name>/`` (config.json + generator.safetensors, written by
``python -m training.synth.train_vocoder``) and copy-synthesizes like the pretrained HiFi-GANs:
16 kHz in, the training mel, the vocoder, 16 kHz out, same length and active level.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import Needs, SynthInput, register, require_audio
from .config import CONFIG_FILE, WEIGHTS_FILE

WEIGHTS_ROOT = Path(__file__).resolve().parents[1] / "weights"


class OwnVocoder:
    name: ClassVar[str]
    arch: ClassVar[str]
    family: ClassVar[str] = "neural-vocoder"
    needs: ClassVar[Needs] = "audio"
    native_rate: ClassVar[int] = 16000
    minutes: ClassVar[int] = 90
    # Rendered only when named (--generators): the shipped detectors were trained and measured on
    # corpora without them, and the default build and protocol folds reproduce those corpora.
    opt_in: ClassVar[bool] = True

    def __init__(self, weights: Path | None = None) -> None:
        self.weights = Path(weights) if weights is not None else WEIGHTS_ROOT / self.name
        self._model: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def train_command(self) -> str:
        return (f"python -m training.synth.train_vocoder --arch {self.arch} --data ../shared/data/bonafide "
                f"--out training/synth/weights/{self.name} --minutes {self.minutes}")

    def unavailable_reason(self) -> str | None:
        try:
            import safetensors  # noqa: F401
            import torch  # noqa: F401
        except ImportError as err:
            return f"{self.name} needs torch and safetensors (pip install -e '.[train]'): {err}"
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (self.weights / f).is_file()]
        if missing:
            return f"{self.name} has no trained weights in {self.weights} (missing {', '.join(missing)}): train them with {self.train_command()}"
        return None

    def network(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                import torch

                from .config import VocoderConfigError
                from .synthesis import load_vocoder

                # One thread: the corpus builder runs one process per core (--workers).
                torch.set_num_threads(1)
                model, config = load_vocoder(self.weights)
                if config.arch != self.arch:
                    raise VocoderConfigError(f"{self.weights} holds a {config.arch} vocoder, {self.name} needs {self.arch}")
                self._model = (model, config)
            return self._model

    def __call__(self, item: SynthInput) -> np.ndarray:
        from .synthesis import vocode

        x = require_audio(item, self.name)
        model, config = self.network()
        return vocode(model, config, x, self.name)


@register
class VocosOurs(OwnVocoder):
    name: ClassVar[str] = "vocos-ours"
    arch: ClassVar[str] = "vocos"


@register
class MelganOurs(OwnVocoder):
    name: ClassVar[str] = "melgan-ours"
    arch: ClassVar[str] = "melgan"
