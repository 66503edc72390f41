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
    # The periodogram's floor, relative to the mean frame energy. An absolute floor lets the empty
    # top band of upsampled 8 kHz recordings (-100 dB) stretch the cepstrum until the MLSA filter
    # diverges (70 of 8,796 corpus items did); -40 dB bounds it without touching the speech band.
    spectral_floor_db: float = -40.0
    pade: int = 5  # Pade order of the MLSA approximation: 5 stays stable for larger cepstra than 4
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
        frames = np.ascontiguousarray(frames[:n])
        floor = float(np.mean(np.sum(frames**2, axis=1))) * 10.0 ** (opt.spectral_floor_db / 10.0)
        mc = pysptk.mcep(frames, opt.order, opt.alpha, etype=1, eps=max(floor, 1e-12))
        b = pysptk.mc2b(mc, opt.alpha)
        seed = int(item.rng.integers(1, 2**31 - 1))
        excitation = pysptk.excite(np.ascontiguousarray(pitch[:n], dtype=np.float64), opt.hop,
                                   gaussian=opt.gaussian_noise, seed=seed)
        # A fresh filter per item: the synthesizer keeps its delay line between calls.
        synth = pysptk.synthesis.Synthesizer(pysptk.synthesis.MLSADF(order=opt.order, alpha=opt.alpha, pd=opt.pade), opt.hop)
        y = synth.synthesis(excitation, b)
        if not np.all(np.isfinite(y)) or float(np.max(np.abs(y))) > 1e3:  # past float32, or diverging
            raise SynthError("mlsa: MLSA filter became unstable (non-finite output)")
        return fit_length(y.astype(np.float32), x.size)
