"""``mlsa``: mel-cepstral analysis and MLSA-filter resynthesis (pysptk, SPTK).

The HTS-era statistical-parametric vocoder: a pulse train at F0 (noise when
unvoiced) drives an MLSA filter built from order-25 mel-cepstra (alpha 0.42
approximates the mel scale at 16 kHz). Its buzzy excitation and smooth
envelope are a different artefact family from WORLD's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .audio import SAMPLE_RATE, fit_length
from .base import Needs, SynthError, SynthInput, register, require_audio


def import_pysptk():  # type: ignore[no-untyped-def]
    """pysptk 1.0.1 imports pkg_resources, which setuptools >= 81 no longer ships."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pkg_resources deprecation notice
            import pysptk
            import pysptk.synthesis
    except ModuleNotFoundError as err:
        if err.name == "pkg_resources":
            raise ImportError("pysptk needs pkg_resources: pip install 'setuptools<81'") from err
        raise ImportError("mlsa needs pysptk: pip install pysptk") from err
    return pysptk


@dataclass(frozen=True)
class MlsaOptions:
    order: int = 25
    alpha: float = 0.42  # all-pass constant that matches the mel scale at 16 kHz
    frame_length: int = 512  # 32 ms analysis window
    hop: int = 80  # 5 ms
    f0_min: float = 60.0
    f0_max: float = 400.0
    # Seeded Gaussian noise for unvoiced frames: SPTK's M-sequence alternative keeps
    # global state between calls, which would break per-item reproducibility.
    gaussian_noise: bool = True


@register
@dataclass
class Mlsa:
    name: ClassVar[str] = "mlsa"
    family: ClassVar[str] = "vocoder"
    native_rate: ClassVar[int] = SAMPLE_RATE
    needs: ClassVar[Needs] = "audio"
    options: MlsaOptions = field(default_factory=MlsaOptions)

    def unavailable_reason(self) -> str | None:
        try:
            import_pysptk()
        except ImportError as err:
            return str(err)
        return None

    def __call__(self, item: SynthInput) -> np.ndarray:
        pysptk = import_pysptk()
        opt = self.options
        x = require_audio(item, self.name).astype(np.float64)
        # A whisper of dither keeps the mel-cepstrum defined on digital silence.
        x = x + item.rng.normal(0.0, 1e-5, x.size)
        pitch = pysptk.swipe(x, SAMPLE_RATE, opt.hop, min=opt.f0_min, max=opt.f0_max, otype="pitch")
        if not np.any(pitch > 0):
            raise SynthError("mlsa: no voiced frame found in the input")
        half = opt.frame_length // 2
        padded = np.pad(x, (half, half))
        frames = np.lib.stride_tricks.sliding_window_view(padded, opt.frame_length)[:: opt.hop]
        frames = frames * np.blackman(opt.frame_length)
        n = min(len(frames), len(pitch))
        mc = pysptk.mcep(np.ascontiguousarray(frames[:n]), opt.order, opt.alpha, etype=1, eps=1e-8)
        b = pysptk.mc2b(mc, opt.alpha)
        seed = int(item.rng.integers(1, 2**31 - 1))
        excitation = pysptk.excite(np.ascontiguousarray(pitch[:n], dtype=np.float64), opt.hop,
                                   gaussian=opt.gaussian_noise, seed=seed)
        # A fresh filter per item: the synthesizer keeps its delay line between calls.
        synth = pysptk.synthesis.Synthesizer(pysptk.synthesis.MLSADF(order=opt.order, alpha=opt.alpha), opt.hop)
        y = synth.synthesis(excitation, b)
        if not np.all(np.isfinite(y)):
            raise SynthError("mlsa: MLSA filter became unstable (non-finite output)")
        return fit_length(y.astype(np.float32), x.size)
