"""``TrainConfig``: every option of a training run, as a dataclass that round-trips through JSON."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engines.frontend_config import FrontEndConfig
from training.augment import AugmentConfig

__all__ = ["TrainConfig", "FirstStage", "SCHEDULERS", "SELECTION", "BALANCING", "AMP_MODES", "DEVICES"]

SCHEDULERS = ("cosine", "plateau")
SELECTION = ("dev", "last")
BALANCING = ("pos_weight", "sampler", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class FirstStage:
    """A curriculum's first stage: train on bona fide and these spoof families alone, then on
    everything from the first stage's weights (``training.curriculum``). Families absent from
    the manifest (held out by the generalization protocol) are simply not there to train on."""

    families: tuple[str, ...]
    epochs: int
    train_fraction: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        if not self.families or not all(isinstance(f, str) and f for f in self.families):
            raise ValueError(f"first_stage.families must name at least one spoof family, got {list(self.families)}")
        if self.epochs < 1:
            raise ValueError(f"first_stage.epochs must be >= 1, got {self.epochs}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"first_stage.train_fraction must be in (0, 1], got {self.train_fraction}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FirstStage:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - known or "families" not in d or "epochs" not in d:
            raise ValueError(f"first_stage must be an object with families, epochs[, train_fraction]; got {d!r}")
        return cls(**d)


@dataclass
class TrainConfig:
    """Options of ``python -m training.train``; ``from_json`` reads the same names from a file.

    Class balance: ``pos_weight`` weights the spoof term of the BCE loss by n_bonafide / n_spoof;
    ``sampler`` draws each class equally often (with replacement). ``amp`` applies to CUDA only:
    ``auto`` is bf16 where the GPU supports it, else fp16 with loss scaling; the front end stays
    float32 either way.

    Selection: ``dev`` keeps the epoch with the lowest dev EER and stops early after ``patience``
    epochs without a better one; ``last`` keeps the last epoch and runs them all (the epoch count
    chosen by the leave-families-out protocol, where in-domain dev EER is a poor guide).
    ``monitor_manifest`` (rows with a label, e.g. unseen families' dev items with bona fide dev)
    is scored every epoch and recorded in the history as ``monitor_eer``; it never steers training.

    Distillation (``python -m training.distill``): with a ``teacher`` checkpoint the loss is
    ``(1 - distill_weight)`` x the label BCE + ``distill_weight`` x T^2 x the BCE between the
    student's and the teacher's spoof probabilities at temperature T (``distill_temperature``; the
    binary KL up to a constant). ``teacher_init`` starts a ``specrnet_stream`` student from a SpecRNet
    teacher's weights where they fit (``engines.models.specrnet_stream.init_from_specrnet``).
    """

    manifest: str = ""
    out: str = ""
    dev_manifest: str | None = None
    monitor_manifest: str | None = None
    select: str = "dev"
    arch: str = "specrnet"
    arch_params: dict[str, Any] = field(default_factory=dict)
    frontend: dict[str, Any] | None = None  # FrontEndConfig fields; None = the architecture's own
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0  # cosine only: linear warm-up, in epochs
    min_lr_ratio: float = 0.01  # cosine floor, as a fraction of lr
    plateau_patience: int = 2  # plateau only: halve lr after this many epochs without a better dev EER
    patience: int = 8  # early stopping: epochs without a better dev EER
    balance: str = "pos_weight"
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    device: str = "cpu"
    amp: str = "auto"
    workers: int = 2
    threads: int | None = None  # torch CPU threads; None = cores not used by data workers
    seed: int = 0
    resume: bool = False
    # Start from this checkpoint's network weights (same architecture, arch_params and front end), with
    # a fresh optimizer and schedule: the second stage of a curriculum. A resumed run ignores it.
    init: str | None = None
    # A curriculum (FirstStage fields): first the neural vocoders alone, then every family. None: one stage.
    first_stage: dict[str, Any] | None = None
    max_minutes: float | None = None  # stop (and save) once this much wall time has passed
    teacher: str | None = None  # checkpoint whose logits the student learns too (distillation)
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    teacher_init: bool = False
    window_s: float = 4.0
    sample_rate: int = 16000
    train_fraction: float = 1.0  # seeded share of the training files, per class/attack/source stratum
    babble_pool: int = 16  # bona fide training clips kept in memory as babble noise
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    export_onnx: bool = True  # the final best checkpoint gets model.onnx
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        for name, accepted in (("scheduler", SCHEDULERS), ("balance", BALANCING), ("amp", AMP_MODES),
                               ("device", DEVICES), ("select", SELECTION)):
            value = getattr(self, name)
            if value not in accepted:
                raise ValueError(f"{name} {value!r} is not supported; accepted: {', '.join(accepted)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.device == "cpu" and self.amp in ("bf16", "fp16"):
            raise ValueError(f"amp {self.amp!r} needs device 'cuda': mixed precision is used on CUDA only")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0.0 <= self.distill_weight <= 1.0 or not self.distill_temperature > 0:
            raise ValueError(f"distill_weight must be in [0, 1] and distill_temperature positive, got "
                             f"{self.distill_weight} and {self.distill_temperature}")
        # The teacher itself may come later (the protocol's --teachers gives each fold its own): train()
        # refuses teacher_init without one.
        if self.teacher_init and self.arch != "specrnet_stream":
            raise ValueError(f"teacher_init starts a specrnet_stream student from its teacher: it needs arch "
                             f"specrnet_stream, not {self.arch!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.first_stage is not None:
            FirstStage.from_dict(self.first_stage)  # raises, naming the field, if invalid
        if self.frontend is not None:
            fe = FrontEndConfig.from_dict(self.frontend)  # raises, naming the field, if invalid
            if fe.sample_rate != self.sample_rate:
                raise ValueError(f"the front end's sample_rate {fe.sample_rate} differs from sample_rate {self.sample_rate}")
        if abs(self.augment.window_s - self.window_s) > 1e-9 or self.augment.sample_rate != self.sample_rate:
            self.augment = AugmentConfig.from_dict({**self.augment.to_dict(), "window_s": self.window_s,
                                                    "sample_rate": self.sample_rate})

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    def cpu_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        return max(1, (os.cpu_count() or 1) - self.workers)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"training option(s) {unknown} are not known; accepted: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> TrainConfig:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: cannot read the training config ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: the training config must be a JSON object, got {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None
