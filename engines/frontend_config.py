"""Front-end parameters as plain data (no torch), so checkpoints and the ONNX path can read them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from engines.mel import linear_filterbank, mel_filterbank

FeatureKind = Literal["logmel", "loglinear", "logpower"]
FEATURE_KINDS = ("logmel", "loglinear", "logpower")


@dataclass(frozen=True)
class FrontEndConfig:
    """Parameters of the spectrogram; stored in every checkpoint and checked on load."""

    kind: FeatureKind = "logmel"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80  # bands of the filterbank kinds (logmel: mel-spaced, loglinear: equally spaced in Hz)
    f_min: float = 0.0
    f_max: float | None = None
    center: bool = True  # zero-pad n_fft/2 on both sides, as torch.stft(center=True, pad_mode="constant")
    log_floor: float = 1e-6  # added before the natural log so silence stays finite
    mel_scale: str = field(default="slaney")

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"front end kind {self.kind!r} is not supported; accepted: {', '.join(FEATURE_KINDS)}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length {self.win_length} must be in 1..n_fft ({self.n_fft})")
        if self.hop_length <= 0:
            raise ValueError(f"hop_length {self.hop_length} must be positive")
        if self.mel_scale != "slaney":
            raise ValueError(f"mel_scale {self.mel_scale!r} is not supported: use 'slaney'")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def n_features(self) -> int:
        return self.n_bins if self.kind == "logpower" else self.n_mels

    def filterbank(self) -> np.ndarray | None:
        """[n_features, n_bins] band weights applied to the power spectrum, or None (logpower)."""
        if self.kind == "logpower":
            return None
        bank = mel_filterbank if self.kind == "logmel" else linear_filterbank
        return bank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max)

    @property
    def band_label(self) -> str:
        """What one row of the features is, for plots."""
        return {"logmel": "mel band", "loglinear": "linear band", "logpower": "frequency bin"}[self.kind]

    @property
    def frame_offset(self) -> int:
        """Signal index of frame 0's first window tap; frame t starts ``t * hop_length`` later.
        Negative when centred: the first frames read the zero padding before the signal."""
        left = (self.n_fft - self.win_length) // 2
        return left - self.n_fft // 2 if self.center else left

    def n_frames(self, n_samples: int) -> int:
        # Centring pads n_fft // 2 zeros on each side (one fewer than n_fft in all when it is odd).
        padded = n_samples + (2 * (self.n_fft // 2) if self.center else 0)
        return 1 + (padded - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontEndConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"front end field(s) {sorted(unknown)} are not known; accepted: {sorted(known)}")
        return cls(**d)


# The two front ends the seed systems use.
SPECRNET_FRONTEND = FrontEndConfig(kind="logmel", n_fft=512, win_length=400, hop_length=160, n_mels=80)
RESMAX_FRONTEND = FrontEndConfig(kind="logpower", n_fft=1024, win_length=1024, hop_length=256)
