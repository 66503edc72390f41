"""Train a detector from a manifest: ``python -m training.train --manifest CSV --arch specrnet --out DIR``.

Writes into ``--out``:

* ``best/``  the checkpoint with the lowest dev EER (``engines.checkpoint`` format: model.json,
  model.safetensors and, at the end of the run, model.onnx), with the dev EER, epoch, training
  data (manifest path, sha256, counts per class/attack) and the threshold at the dev EER point;
* ``last/``  the state to resume from (``--resume``): safetensors + JSON, no pickle;
* ``config.json`` (the TrainConfig used) and ``history.json`` (one entry per epoch);
* ``first-stage/``  with a curriculum (``first_stage``), the run on its families alone
  (``training.curriculum``), whose weights start the run above.

Resuming with a larger ``--epochs`` stretches the cosine schedule from where the run stands.
Loss: BCE on the spoof logit (target 1 = spoof), mixed with a teacher's logits when given one
(``--teacher``, distillation: ``python -m training.distill``; TrainConfig says how). The front end always runs in float32; on CUDA
the network runs under autocast (bf16, or fp16 with loss scaling). The dev set is scored with one
centre window per file; the EER follows the ASVspoof procedure on negated spoof logits.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import EngineError, MissingExtraError
from engines.frontend_config import FrontEndConfig
from training.augment import AugmentConfig, Augmenter
from training.config import AMP_MODES, BALANCING, DEVICES, SCHEDULERS, SELECTION, TrainConfig
from training.metrics import compute_auc, compute_min_dcf, eer_from_spoof_scores, spoof_mask

__all__ = ["TrainResult", "train", "main", "threshold_from_logit"]

BEST, LAST = "best", "last"


@dataclass(frozen=True)
class TrainResult:
    best_dir: Path
    best_eer: float
    best_epoch: int  # 1-based
    epochs_completed: int
    stop_reason: str  # "epochs", "early_stop" or "time_limit"
    seconds: float


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf."""


def threshold_from_logit(logit: float) -> float:
    """Spoof-probability threshold for a logit threshold; kept strictly inside (0, 1) because
    model.json requires it (a dev set separated perfectly can put the EER point at +-inf)."""
    p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
    return float(min(max(p, 1e-6), 1.0 - 1e-6))


def _lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int, lr_scale: float) -> float:
    if cfg.scheduler == "plateau":
        return cfg.lr * lr_scale
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig, manifest_sha: str, saved_sha: str | None) -> None:
    """Refuse to continue a run whose model or data differ; epochs, time limit, device may change."""
    fixed = ("arch", "arch_params", "frontend", "window_s", "sample_rate", "seed", "scheduler", "balance", "batch_size",
             "teacher", "distill_weight", "distill_temperature")
    diffs = [f"{k}: saved {saved.get(k)!r}, now {getattr(cfg, k)!r}" for k in fixed if saved.get(k) != getattr(cfg, k)]
    if saved_sha is not None and saved_sha != manifest_sha:
        diffs.append("manifest content changed (sha256 differs)")
    if diffs:
        from training.state import ResumeError

        raise ResumeError("cannot resume: the run was started with other settings: " + "; ".join(diffs))


def init_from(det: Any, checkpoint: str) -> dict[str, str]:
    """Copy a checkpoint's network weights into ``det``, which must be the same model; returns
    what the training record keeps of it."""
    from engines.checkpoint import load_detector

    source, mc = load_detector(checkpoint)
    if source.frontend.config != det.frontend.config:
        raise ValueError(f"--init {checkpoint}: its front end {source.frontend.config.to_dict()} differs from "
                         f"this run's {det.frontend.config.to_dict()}")
    try:
        det.network.load_state_dict(source.network.state_dict())
    except RuntimeError:  # other layers or shapes: another architecture or arch_params
        raise ValueError(f"--init {checkpoint}: a {mc.architecture} with arch_params {mc.arch_params}, "
                         "not this run's network") from None
    return {"checkpoint": str(Path(checkpoint).resolve()), "model": mc.model_id}


def teacher_logits(teacher: Any, student: Any, wave: Any, feats: Any) -> Any:
    """The teacher's logits of a batch, from the student's features when the front ends are the same."""
    import torch

    with torch.no_grad():
        if teacher.frontend.config != student.frontend.config:
            feats = teacher.frontend(wave)
        return teacher.network(feats).float()


def distill_loss(logit: Any, teacher_logit: Any, temperature: float) -> Any:
    """T^2 x BCE between the student's and the teacher's spoof probabilities at temperature T: the
    binary KL divergence up to the teacher's entropy (a constant), scaled so gradients keep their size."""
    from torch.nn import functional as F

    soft = (teacher_logit / temperature).sigmoid()
    return temperature**2 * F.binary_cross_entropy_with_logits(logit / temperature, soft)


def train(cfg: TrainConfig) -> TrainResult:
    if cfg.teacher_init and not cfg.teacher:
        raise ValueError("teacher_init starts the student from its teacher's weights: it needs --teacher")
    try:
        import torch
    except ImportError:
        raise MissingExtraError("torch", "train", "training") from None
    from torch.nn import functional as F
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from engines.checkpoint import load_detector, save_checkpoint
    from engines.models import build_detector, get_architecture
    from training.data import DevWindows, EpochSampler, TrainWindows, babble_pool
    from training.splits import data_summary, read_splits, sha256_of, subsample
    from training.state import STATE_JSON, ResumeError, ResumeState, load_state, read_state, save_state

    t0 = time.monotonic()
    if not cfg.manifest or not cfg.out:
        raise ValueError("both a manifest (--manifest) and an output folder (--out) are needed")
    out = Path(cfg.out)
    if (out / LAST / STATE_JSON).exists() and not cfg.resume:
        raise ValueError(f"{out} already holds a training run: pass --resume to continue it or choose another --out")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device 'cuda' requested but torch {torch.__version__} sees no CUDA GPU; accepted here: cpu")
    device = torch.device(cfg.device)
    torch.set_num_threads(cfg.cpu_threads())
    torch.manual_seed(cfg.seed)
    amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
        amp_dtype = torch.bfloat16 if bf16 else torch.float16

    spec = get_architecture(cfg.arch)
    if cfg.frontend is None and spec.default_frontend.sample_rate != cfg.sample_rate:
        raise ValueError(f"sample_rate {cfg.sample_rate} differs from {cfg.arch}'s front end ({spec.default_frontend.sample_rate})")
    split = read_splits(cfg.manifest, cfg.dev_manifest)
    if cfg.train_fraction < 1.0:
        split = dataclasses.replace(split, train=subsample(split.train, cfg.train_fraction, cfg.seed))
    manifest_sha = sha256_of(cfg.manifest)
    training_data: dict[str, Any] = {
        "manifest": str(Path(cfg.manifest).resolve()),
        "manifest_sha256": manifest_sha,
        "split": split.how,
        "train_fraction": cfg.train_fraction,
        "train": data_summary(split.train),
        "dev": data_summary(split.dev),
    }
    if cfg.dev_manifest:
        training_data["dev_manifest"] = str(Path(cfg.dev_manifest).resolve())
        training_data["dev_manifest_sha256"] = sha256_of(cfg.dev_manifest)

    uses_babble = cfg.augment.p_noise > 0 and "babble" in cfg.augment.noise_kinds
    pool = babble_pool(split.train, cfg.babble_pool, cfg.seed, cfg.sample_rate) if uses_babble else []
    train_ds = TrainWindows(split.train, Augmenter(cfg.augment, pool), cfg.seed, cfg.sample_rate)
    sampler = EpochSampler(train_ds.labels, cfg.seed, balanced=cfg.balance == "sampler")
    loader_kw: dict[str, Any] = {"num_workers": cfg.workers, "pin_memory": device.type == "cuda",
                                 "persistent_workers": cfg.workers > 0}
    # drop_last keeps BatchNorm away from a one-item batch; tiny sets still get one full batch.
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                          drop_last=len(train_ds) >= cfg.batch_size, **loader_kw)
    dev_ds = DevWindows(split.dev, cfg.window_samples, cfg.sample_rate)
    dev_dl = DataLoader(dev_ds, batch_size=cfg.batch_size, shuffle=False, **loader_kw)
    dev_labels = np.asarray(dev_ds.labels)
    monitor_dl, monitor_labels = None, None
    if cfg.monitor_manifest:
        from training.datasets import load_manifest

        monitor_ds = DevWindows(load_manifest(cfg.monitor_manifest), cfg.window_samples, cfg.sample_rate)
        monitor_dl = DataLoader(monitor_ds, batch_size=cfg.batch_size, shuffle=False, **loader_kw)
        monitor_labels = np.asarray(monitor_ds.labels)
        training_data["monitor_manifest"] = str(Path(cfg.monitor_manifest).resolve())

    frontend = FrontEndConfig.from_dict(cfg.frontend) if cfg.frontend is not None else None
    det = build_detector(cfg.arch, frontend, **cfg.arch_params).to(device)
    if cfg.init and not cfg.resume:
        training_data["init"] = init_from(det, cfg.init)
    teacher = None
    if cfg.teacher:
        teacher, tc = load_detector(cfg.teacher)
        teacher = teacher.to(device).eval()
        training_data["teacher"] = {"checkpoint": str(Path(cfg.teacher).resolve()), "model": tc.model_id,
                                    "weight": cfg.distill_weight, "temperature": cfg.distill_temperature}
        if cfg.teacher_init and not cfg.resume:
            from engines.models.specrnet_stream import init_from_specrnet

            training_data["teacher"]["init_tensors"] = len(init_from_specrnet(det.network, teacher.network))
    # No weight decay on norms and biases (1-D tensors): decaying a BatchNorm scale only fights it.
    params = [p for p in det.network.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    n_bona, n_spoof = int((1 - np.asarray(train_ds.labels)).sum()), int(np.sum(train_ds.labels))
    pos_weight = torch.tensor(n_bona / n_spoof, device=device) if cfg.balance == "pos_weight" else None

    state = ResumeState(epoch=0, global_step=0, best_eer=None, best_epoch=None, bad_epochs=0, lr_scale=1.0,
                        config=cfg.to_dict())
    if cfg.resume:
        saved = read_state(out / LAST)  # check the settings before touching the model
        _check_resumable(saved.config, cfg, manifest_sha, saved.config.get("_manifest_sha256"))
        state = load_state(out / LAST, det, opt)
        if state.scaler and scaler.is_enabled():
            scaler.load_state_dict(state.scaler)
        if state.epoch >= cfg.epochs:
            raise ResumeError(f"{out / LAST} has already completed {state.epoch} epochs; raise --epochs above that to continue")
    state.config = {**cfg.to_dict(), "_manifest_sha256": manifest_sha}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json(), encoding="utf-8")

    def log(msg: str) -> None:
        if cfg.progress:
            tqdm.write(msg, file=sys.stderr)

    def score(loader: DataLoader) -> np.ndarray:
        det.eval()
        parts = []
        with torch.no_grad():
            for wave, _ in loader:
                feats = det.frontend(wave.to(device, non_blocking=True))
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    parts.append(det.network(feats).float().cpu().numpy())
        return np.concatenate(parts).astype(np.float64)

    steps_per_epoch = len(train_dl)
    deadline = t0 + cfg.max_minutes * 60.0 if cfg.max_minutes else None
    stop_reason = "epochs"
    lr = _lr_at(cfg, state.global_step, steps_per_epoch, state.lr_scale)
    log(f"training {cfg.arch} on {len(split.train)} files ({n_bona} bonafide, {n_spoof} spoof), "
        f"dev {len(split.dev)} files, device {device}, from epoch {state.epoch + 1}")
    for epoch in range(state.epoch, cfg.epochs):
        t_epoch = time.monotonic()
        sampler.set_epoch(epoch)
        det.train()
        losses: list[float] = []
        timed_out = False
        bar = tqdm(train_dl, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False,
                   dynamic_ncols=True)
        for wave, target in bar:
            lr = _lr_at(cfg, state.global_step, steps_per_epoch, state.lr_scale)
            for group in opt.param_groups:
                group["lr"] = lr
            wave = wave.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            with torch.no_grad():
                feats = det.frontend(wave)  # float32 always, outside autocast
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logit = det.network(feats)
            loss = F.binary_cross_entropy_with_logits(logit.float(), target, pos_weight=pos_weight)
            if teacher is not None:
                loss = (1.0 - cfg.distill_weight) * loss + cfg.distill_weight * distill_loss(
                    logit.float(), teacher_logits(teacher, det, wave, feats), cfg.distill_temperature)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"loss is {loss.item()} at epoch {epoch + 1}, step {state.global_step}:"
                                            " lower --lr or turn AMP off (--amp off)")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            state.global_step += 1
            losses.append(float(loss.item()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{lr:.2e}")
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                break
        bar.close()

        logits = score(dev_dl)
        eer, thr_logit = eer_from_spoof_scores(dev_labels, logits)
        mask = spoof_mask(dev_labels)
        min_dcf, _ = compute_min_dcf(-logits[~mask], -logits[mask])
        auc = compute_auc(dev_labels, logits)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None,
                  "dev_eer": eer, "dev_min_dcf": min_dcf, "dev_auc": auc, "lr": lr,
                  "steps": len(losses), "seconds": round(time.monotonic() - t_epoch, 2), "partial": timed_out}
        if monitor_dl is not None:
            record["monitor_eer"] = eer_from_spoof_scores(monitor_labels, score(monitor_dl))[0]
        state.history.append(record)
        improved = cfg.select == "last" or state.best_eer is None or eer < state.best_eer - 1e-12
        if improved:
            state.best_eer, state.best_epoch, state.bad_epochs = eer, epoch + 1, 0
            save_checkpoint(
                det, out / BEST, architecture=cfg.arch, arch_params=cfg.arch_params, export_onnx=False,
                window_s=cfg.window_s, threshold=threshold_from_logit(thr_logit),
                training_data={**training_data, "config": cfg.to_dict()},
                metrics={"dev_eer": eer, "dev_eer_percent": round(100.0 * eer, 4), "dev_min_dcf": min_dcf,
                         "dev_auc": auc, "dev_threshold_logit": thr_logit, "epoch": epoch + 1,
                         "train_loss": record["train_loss"], "dev_files": int(dev_labels.size),
                         "score_sign": "spoof logit, higher = more spoof; EER per ASVspoof on the negated score"},
            )
        else:
            state.bad_epochs += 1
            if cfg.scheduler == "plateau" and state.bad_epochs % cfg.plateau_patience == 0:
                state.lr_scale *= 0.5
        state.epoch = epoch + 1
        state.scaler = scaler.state_dict() if scaler.is_enabled() else None
        save_state(out / LAST, det, opt, state)
        (out / "history.json").write_text(json.dumps(state.history, indent=2) + "\n", encoding="utf-8")
        monitored = f"  monitor EER {100 * record['monitor_eer']:.2f}%" if "monitor_eer" in record else ""
        log(f"epoch {epoch + 1}: loss {np.mean(losses) if losses else float('nan'):.4f}  dev EER "
            f"{100 * eer:.2f}%  minDCF {min_dcf:.4f}  AUC {auc:.4f}{monitored}{'  (kept)' if improved else ''}")
        if timed_out:
            stop_reason = "time_limit"
            break
        if cfg.select == "dev" and state.bad_epochs >= cfg.patience:
            stop_reason = "early_stop"
            break

    if state.best_eer is None or state.best_epoch is None:
        raise ResumeError(f"{out / LAST}: no epoch was evaluated, nothing to save")
    if cfg.export_onnx:
        # Re-save the best weights with model.onnx, exported once from the CPU copy.
        best, mc = load_detector(out / BEST)
        save_checkpoint(best, out / BEST, architecture=mc.architecture, arch_params=mc.arch_params,
                        export_onnx=True, window_s=mc.window_s, hop_s=mc.hop_s, threshold=mc.threshold,
                        calibration=mc.calibration, training_data=mc.training_data, metrics=mc.metrics)
    state.finished = True
    save_state(out / LAST, det, opt, state)
    return TrainResult(out / BEST, state.best_eer, state.best_epoch, state.epoch, stop_reason,
                       round(time.monotonic() - t0, 2))


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TrainConfig as JSON; command-line options override it")
    p.add_argument("--manifest", help="CSV path,label[,speaker,attack,source,split]")
    p.add_argument("--dev-manifest", help="dev CSV (needed when the manifest has no split column)")
    p.add_argument("--monitor-manifest", help="labelled CSV scored every epoch (e.g. unseen families), recorded only")
    p.add_argument("--select", choices=SELECTION, help="keep the best dev epoch (dev, default) or the last (last)")
    p.add_argument("--arch", help="architecture (default specrnet)")
    p.add_argument("--arch-params", type=json.loads, help='JSON object, e.g. \'{"se": true}\'')
    p.add_argument("--frontend", type=json.loads,
                   help='front end as JSON (FrontEndConfig fields), e.g. \'{"kind": "loglinear", "n_mels": 80}\'; '
                        "default: the architecture's own (SpecRNet: 80 log-mel bands)")
    p.add_argument("--out", help="output folder (best/, last/, history.json)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--scheduler", choices=SCHEDULERS)
    p.add_argument("--patience", type=int, help="early stopping: epochs without a better dev EER")
    p.add_argument("--balance", choices=BALANCING)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--amp", choices=AMP_MODES)
    p.add_argument("--workers", type=int, help="data loader processes")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int)
    p.add_argument("--train-fraction", type=float,
                   help="train on this seeded share of the training files (0..1], e.g. 0.25 for a data-size curve")
    p.add_argument("--max-minutes", type=float, help="stop and save after this much wall time")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (same model; fresh "
                   "optimizer and schedule), e.g. a run on the neural vocoders alone")
    p.add_argument("--first-stage", type=json.loads, metavar="JSON",
                   help='a curriculum: first train on bona fide and these families alone, e.g. \'{"families": '
                        '["hifigan-lj", "piper"], "epochs": 8}\' (in OUT/first-stage), then on everything')
    p.add_argument("--teacher", metavar="CKPT", help="distil: also learn this checkpoint's logits")
    p.add_argument("--distill-weight", type=float, help="share of the teacher's term in the loss (default 0.5)")
    p.add_argument("--distill-temperature", type=float, help="temperature of the teacher's term (default 2)")
    p.add_argument("--teacher-init", action="store_true", default=None,
                   help="start a specrnet_stream student from its SpecRNet teacher's weights where they fit")
    p.add_argument("--no-augment", action="store_true", help="random crops only")
    p.add_argument("--no-onnx", action="store_true", help="do not export model.onnx at the end")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(argv: list[str] | None = None, defaults: dict[str, Any] | None = None,
                     prog: str = "python -m training.train") -> TrainConfig:
    """The TrainConfig of a command line: ``defaults``, then ``--config``, then the options given."""
    parser = _parser()
    parser.prog = prog
    args = parser.parse_args(argv)
    base = {**(defaults or {}), **(TrainConfig.from_json(args.config).to_dict() if args.config else {})}
    names = {"manifest", "dev_manifest", "monitor_manifest", "select", "arch", "arch_params", "frontend", "out",
             "epochs", "batch_size", "lr", "weight_decay", "scheduler", "patience", "balance", "device", "amp",
             "workers", "threads", "seed", "max_minutes", "resume", "init", "train_fraction", "first_stage",
             "teacher", "distill_weight", "distill_temperature", "teacher_init"}
    for name in names:
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    if args.arch_params is not None and not isinstance(args.arch_params, dict):
        raise ValueError(f"--arch-params must be a JSON object, got {args.arch_params!r}")
    if args.frontend is not None and not isinstance(args.frontend, dict):
        raise ValueError(f"--frontend must be a JSON object, got {args.frontend!r}")
    if args.no_augment:
        base["augment"] = AugmentConfig.off().to_dict()
    if args.no_onnx:
        base["export_onnx"] = False
    if args.no_progress:
        base["progress"] = False
    return TrainConfig.from_dict(base)


def main(argv: list[str] | None = None, defaults: dict[str, Any] | None = None,
         prog: str = "python -m training.train", needs_teacher: bool = False) -> int:
    from training.curriculum import run_training

    try:
        cfg = config_from_args(argv, defaults, prog)
        if needs_teacher and not cfg.teacher:
            raise ValueError(f"{prog} needs a teacher checkpoint (--teacher CKPT)")
        result = run_training(cfg)
    except (ValueError, FileNotFoundError, EngineError, MissingExtraError, TrainingDivergedError) as e:
        # ValueError covers DatasetFormatError, AudioFileError, CheckpointError, ResumeError.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is in OUT/last; continue with --resume", file=sys.stderr)
        return 130
    print(json.dumps({"best": str(result.best_dir), "dev_eer": result.best_eer, "best_epoch": result.best_epoch,
                      "epochs": result.epochs_completed, "stopped": result.stop_reason, "seconds": result.seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
