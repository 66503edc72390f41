"""Train one own vocoder on genuine speech, resumably, on a CPU budget.

Determinism: the weights are initialised from ``seed``, and the segments of step ``s`` come
from a generator seeded with ``(seed, s)``; nothing else draws random numbers. A run resumed
at step ``s`` therefore continues exactly as the uninterrupted run would have (with the same
torch thread count, which fixes the order of floating-point sums).

The discriminator joins at ``gan_from_step``: the regression losses alone reach intelligible
speech fastest, and a discriminator trained against noise early on only slows that down.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..neural_vocoder import mel_distance
from . import losses
from .checkpoint import TrainState, has_checkpoint, load_checkpoint, save_checkpoint
from .config import ARCH_OPTIONS, CONFIG_FILE, VocoderConfig, default_config
from .data import SegmentSampler, load_split
from .discriminator import MultiResolutionDiscriminator
from .synthesis import build_model, parameter_count, vocode
from .torch_mel import TorchMel

log = logging.getLogger(__name__)

LOG_FILE = "log.csv"
VALIDATION_FILE = "validation.csv"
LOG_COLUMNS = ("step", "elapsed_s", "loss_mel", "loss_stft", "loss_adv", "loss_fm", "loss_disc")
MEL_WEIGHT = 45.0  # HiFi-GAN's weights: mel L1 dominates, GAN terms add detail
STFT_WEIGHT = 2.0
FM_WEIGHT = 2.0


class TrainError(ValueError):
    """Bad training options or run folder (one line that names the option)."""


@dataclass(frozen=True)
class TrainOptions:
    arch: str
    data: Path
    out: Path
    minutes: float | None = 90.0  # this session's budget; None: until ``steps``
    steps: int | None = None  # stop at this total step count (over all sessions)
    seed: int = 0
    threads: int = 1
    device: str = "cpu"  # "cuda": minutes on a GPU instead of hours on the CPU
    batch_size: int = 4
    segment_seconds: float = 1.0
    lr: float = 2e-4
    gan_from_step: int = 2000
    checkpoint_every: int = 200
    validate_every: int = 500
    log_every: int = 10
    val_utterances: int = 8
    val_seconds: float = 4.0
    max_files: int | None = None  # per split, for quick runs
    resume: bool = False
    progress: bool = True
    config: VocoderConfig | None = None  # architecture sizes; None: the defaults of ``arch``

    def __post_init__(self) -> None:
        if self.arch not in ARCH_OPTIONS:
            raise TrainError(f"--arch {self.arch!r} is unknown; choose from {', '.join(ARCH_OPTIONS)}")
        if self.minutes is None and self.steps is None:
            raise TrainError("give --minutes or --steps, or both")
        if self.minutes is not None and not self.minutes > 0:
            raise TrainError(f"--minutes must be > 0, got {self.minutes}")
        for name in ("steps", "threads", "batch_size", "checkpoint_every", "validate_every", "log_every",
                     "val_utterances", "max_files"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.config is not None and self.config.arch != self.arch:
            raise TrainError(f"--arch {self.arch} but the given config is a {self.config.arch} vocoder")
        if self.device not in ("cpu", "cuda"):
            raise TrainError(f"--device {self.device!r} is not supported; accepted: cpu, cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise TrainError(f"--device cuda: torch {torch.__version__} sees no CUDA GPU; accepted here: cpu")
        if self.gan_from_step < 0:
            raise TrainError(f"--gan-from-step must be >= 0, got {self.gan_from_step}")
        if not 0.25 <= self.segment_seconds <= 10.0:
            raise TrainError(f"--segment-seconds must be in [0.25, 10], got {self.segment_seconds}")
        if not 0.5 <= self.val_seconds <= 30.0:
            raise TrainError(f"--val-seconds must be in [0.5, 30], got {self.val_seconds}")
        if not 0.0 < self.lr < 1.0:
            raise TrainError(f"--lr must be in (0, 1), got {self.lr}")
        if not Path(self.data).exists():
            raise TrainError(f"--data {self.data} does not exist")
        out = Path(self.out)
        if self.resume and not has_checkpoint(out):
            raise TrainError(f"--resume: {out} has no checkpoint to resume")
        if not self.resume and out.exists() and any(out.iterdir()):
            raise TrainError(f"--out {out} is not empty: pass --resume to continue it, or choose a new folder")


@dataclass
class TrainResult:
    step: int
    elapsed_s: float
    validation: list[tuple[int, float]]  # (step, mean reference log-mel distance, nats) of this session


class Trainer:
    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        self.out = Path(opts.out)
        if opts.resume:
            self.config = VocoderConfig.load(self.out / CONFIG_FILE)
            if self.config.arch != opts.arch:
                raise TrainError(f"--arch {opts.arch} but {self.out} holds a {self.config.arch} run")
        else:
            self.config = opts.config or default_config(opts.arch)
        torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        self.device = torch.device(opts.device)
        # Built on the CPU (the same initial weights for a seed on any device), then moved.
        self.generator = build_model(self.config).to(self.device)
        self.discriminator = MultiResolutionDiscriminator().to(self.device)
        betas = (0.8, 0.99)  # HiFi-GAN's: a short momentum memory suits the moving GAN target
        self.optimizers = {
            "generator": torch.optim.AdamW(self.generator.parameters(), lr=opts.lr, betas=betas),
            "discriminator": torch.optim.AdamW(self.discriminator.parameters(), lr=opts.lr, betas=betas),
        }
        self.mel = TorchMel(self.config.mel).to(self.device)
        self.state = TrainState(step=0, elapsed_s=0.0)
        if opts.resume:
            self.state = load_checkpoint(self.out, self.generator, self.discriminator, self.optimizers)
        hop = self.config.mel.hop_length
        self.segment = int(opts.segment_seconds * SAMPLE_RATE) // hop * hop
        self.sampler = SegmentSampler(load_split(Path(opts.data), "train", self.segment, opts.max_files), self.segment)
        val_len = int(opts.val_seconds * SAMPLE_RATE)
        self.validation_clips = [c[:val_len] for c in load_split(Path(opts.data), "dev", hop * 8, opts.val_utterances)]

    # ------------------------------------------------------------ one step

    def train_step(self, step: int) -> dict[str, float]:
        rng = np.random.default_rng([self.opts.seed, step])
        y = torch.from_numpy(self.sampler.batch(rng, self.opts.batch_size)).to(self.device)
        with torch.no_grad():
            mel = self.mel(y)
        y_hat = self.generator(mel)
        adversarial = step >= self.opts.gan_from_step
        row = {"loss_adv": math.nan, "loss_fm": math.nan, "loss_disc": math.nan}
        if adversarial:
            d_loss = losses.discriminator_loss(self.discriminator(y), self.discriminator(y_hat.detach()))
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizers["discriminator"].step()
            row["loss_disc"] = float(d_loss.detach())
        loss_mel = torch.mean(torch.abs(self.mel(y_hat) - mel))
        loss_stft = losses.multi_resolution_stft(y_hat, y)
        g_loss = MEL_WEIGHT * loss_mel + STFT_WEIGHT * loss_stft
        if adversarial:
            # The discriminator's weights get gradients here too; they are cleared before its next step.
            with torch.no_grad():  # real features are targets only
                real = self.discriminator(y)
            fake = self.discriminator(y_hat)
            loss_adv = losses.generator_adversarial_loss(fake)
            loss_fm = losses.feature_matching_loss(real, fake)
            g_loss = g_loss + loss_adv + FM_WEIGHT * loss_fm
            row["loss_adv"], row["loss_fm"] = float(loss_adv.detach()), float(loss_fm.detach())
        self.optimizers["generator"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["generator"].step()
        row["loss_mel"], row["loss_stft"] = float(loss_mel.detach()), float(loss_stft.detach())
        return row

    def validate(self) -> float:
        """Mean reference log-mel distance (nats) of copy-syntheses of held-out (dev) speakers."""
        self.generator.eval()
        try:
            return float(np.mean([mel_distance(x, vocode(self.generator, self.config, x, self.opts.arch))
                                  for x in self.validation_clips]))
        finally:
            self.generator.train()

    # ------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        from tqdm import tqdm

        opts = self.opts
        self.out.mkdir(parents=True, exist_ok=True)
        _truncate_csv(self.out / LOG_FILE, self.state.step)
        _truncate_csv(self.out / VALIDATION_FILE, self.state.step)
        log.info("%s: %d parameters, starting at step %d", opts.arch, parameter_count(self.generator), self.state.step)
        started = time.monotonic()
        budget = None if opts.minutes is None else opts.minutes * 60.0
        base_elapsed = self.state.elapsed_s
        validation: list[tuple[int, float]] = []
        pending: list[dict[str, float]] = []
        bar = tqdm(total=opts.steps, initial=self.state.step, disable=not opts.progress, unit="step", desc=opts.arch)
        try:
            while opts.steps is None or self.state.step < opts.steps:
                if budget is not None and time.monotonic() - started >= budget:
                    break
                pending.append(self.train_step(self.state.step))
                self.state.step += 1
                self.state.elapsed_s = base_elapsed + time.monotonic() - started
                bar.update(1)
                if self.state.step % opts.log_every == 0:
                    self._log(pending)
                    bar.set_postfix(mel=f"{pending[-1]['loss_mel']:.3f}")
                    pending = []
                if self.state.step % opts.validate_every == 0:
                    validation.append(self._validation_row())
                if self.state.step % opts.checkpoint_every == 0:
                    self._save()
        except KeyboardInterrupt:
            log.warning("interrupted: saving step %d", self.state.step)
        finally:
            bar.close()
        if pending:
            self._log(pending)
        if not validation or validation[-1][0] != self.state.step:
            validation.append(self._validation_row())
        self._save()
        return TrainResult(step=self.state.step, elapsed_s=self.state.elapsed_s, validation=validation)

    def _save(self) -> None:
        save_checkpoint(self.out, self.config, self.generator, self.discriminator, self.optimizers, self.state)

    def _log(self, rows: list[dict[str, float]]) -> None:
        means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        _append_csv(self.out / LOG_FILE, LOG_COLUMNS,
                    [self.state.step, round(self.state.elapsed_s, 1), *(round(means[c], 5) for c in LOG_COLUMNS[2:])])

    def _validation_row(self) -> tuple[int, float]:
        distance = self.validate()
        _append_csv(self.out / VALIDATION_FILE, ("step", "elapsed_s", "mel_distance"),
                    [self.state.step, round(self.state.elapsed_s, 1), round(distance, 4)])
        log.info("step %d: validation mel distance %.4f nats", self.state.step, distance)
        return self.state.step, distance


def _append_csv(path: Path, columns: tuple[str, ...], values: list[object]) -> None:
    new = not path.is_file()
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(columns)
        writer.writerow(values)


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint: a resumed run logs those steps again."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(kept)


def train(opts: TrainOptions) -> TrainResult:
    return Trainer(opts).run()
