"""``world``: WORLD vocoder copy-synthesis (pyworld), optionally with a small F0 shift.

Analysis (DIO+StoneMask or Harvest for F0, CheapTrick envelope, D4C aperiodicity)
followed by resynthesis keeps the words and the speaker but imprints the
vocoder's phase and excitation artefacts: the classic ASVspoof-style attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from .audio import SAMPLE_RATE
from .base import Needs, SynthError, SynthInput, register, require_audio


@dataclass(frozen=True)
class WorldOptions:
    f0_method: Literal["dio", "harvest"] = "dio"  # dio is ~10x faster; harvest is more robust
    frame_period_ms: float = 5.0
    f0_floor: float = 60.0
    f0_ceil: float = 600.0
    shift_probability: float = 0.5  # share of items whose F0 is shifted
    max_shift_semitones: float = 1.0  # small: a large shift would be an easy tell


@register
@dataclass
class World:
    name: ClassVar[str] = "world"
    family: ClassVar[str] = "vocoder"
    native_rate: ClassVar[int] = SAMPLE_RATE
    needs: ClassVar[Needs] = "audio"
    options: WorldOptions = field(default_factory=WorldOptions)

    def unavailable_reason(self) -> str | None:
        try:
            import pyworld  # noqa: F401
        except ImportError:
            return "world needs pyworld: pip install pyworld"
        return None

    def __call__(self, item: SynthInput) -> np.ndarray:
        import pyworld

        opt = self.options
        x = require_audio(item, self.name).astype(np.float64)
        shift = 0.0
        if item.rng.random() < opt.shift_probability:
            shift = float(item.rng.uniform(-opt.max_shift_semitones, opt.max_shift_semitones))
        if opt.f0_method == "harvest":
            f0, t = pyworld.harvest(x, SAMPLE_RATE, f0_floor=opt.f0_floor, f0_ceil=opt.f0_ceil,
                                    frame_period=opt.frame_period_ms)
        else:
            f0, t = pyworld.dio(x, SAMPLE_RATE, f0_floor=opt.f0_floor, f0_ceil=opt.f0_ceil,
                                frame_period=opt.frame_period_ms)
            f0 = pyworld.stonemask(x, f0, t, SAMPLE_RATE)
        if not np.any(f0 > 0):
            raise SynthError("world: no voiced frame found in the input")
        sp = pyworld.cheaptrick(x, f0, t, SAMPLE_RATE)
        ap = pyworld.d4c(x, f0, t, SAMPLE_RATE)
        f0 = f0 * 2.0 ** (shift / 12.0)
        y = pyworld.synthesize(f0, sp, ap, SAMPLE_RATE, opt.frame_period_ms)
        return y[: x.size].astype(np.float32)
