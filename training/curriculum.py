"""A two-stage curriculum: the neural-vocoder families alone first, then every family.

With every family in one stage, the rule-based TTS and signal-processing vocoders are separated
within an epoch and the faint neural-vocoder trace is never learned, even in-domain; trained on the
neural families alone the network learns it and it transfers to an unseen HiFi-GAN
(docs/generalization.md). So a recipe with ``first_stage`` trains, in ``OUT/first-stage``, on the
manifest's bona fide rows and those families' rows (its own epochs and share of the files), then
the recipe itself in ``OUT`` starting from the first stage's weights (``init``: fresh optimizer and
schedule). Either stage resumes where it stopped (``resume``); a finished first stage is kept.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from training.config import FirstStage, TrainConfig
from training.train import BEST, LAST, TrainResult, train

__all__ = ["FIRST_STAGE_DIR", "run_training", "has_run_state"]

FIRST_STAGE_DIR = "first-stage"
BONAFIDE = "bonafide"


def _has_state(run: Path) -> bool:
    from training.state import STATE_JSON

    return (run / LAST / STATE_JSON).is_file()


def has_run_state(out: Path) -> bool:
    """Whether ``out`` holds a run (of either stage) that ``resume`` would continue."""
    return _has_state(out) or _has_state(out / FIRST_STAGE_DIR)


def _finished(run: Path) -> bool:
    from training.state import STATE_JSON

    return _has_state(run) and bool(json.loads((run / LAST / STATE_JSON).read_text(encoding="utf-8")).get("finished"))


def _filter_manifest(src: Path, dst: Path, families: tuple[str, ...]) -> int:
    """Copy ``src``'s bona fide rows and those of ``families`` to ``dst`` (paths made absolute, as
    the copy lives elsewhere); returns the spoof rows kept."""
    with src.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label", "attack"} <= set(reader.fieldnames):
            raise ValueError(f"{src}: a curriculum needs the columns path,label,attack to pick the first stage's "
                             f"families; has {reader.fieldnames}")
        rows = [r for r in reader if r["label"] == BONAFIDE or r["attack"] in families]
        fieldnames = list(reader.fieldnames)
    for r in rows:
        p = Path(r["path"])
        r["path"] = str(p if p.is_absolute() else (src.parent / p).resolve())
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(dst)
    return sum(r["label"] != BONAFIDE for r in rows)


def run_training(cfg: TrainConfig) -> TrainResult:
    """``train(cfg)``, after its first stage when the recipe has one."""
    if cfg.first_stage is None:
        return train(cfg)
    stage = FirstStage.from_dict(cfg.first_stage)
    out = Path(cfg.out)
    first = out / FIRST_STAGE_DIR
    if has_run_state(out) and not cfg.resume:
        raise ValueError(f"{out} already holds a training run: pass --resume to continue it or choose another --out")
    if not _finished(first):
        manifest = first / "manifest.csv"
        dev_manifest = first / "dev-manifest.csv" if cfg.dev_manifest else None
        if _filter_manifest(Path(cfg.manifest), manifest, stage.families) == 0:
            raise ValueError(f"{cfg.manifest}: no rows of the first stage's families ({', '.join(stage.families)})")
        if dev_manifest is not None:
            _filter_manifest(Path(cfg.dev_manifest or ""), dev_manifest, stage.families)
        result = train(dataclasses.replace(
            cfg, manifest=str(manifest), dev_manifest=str(dev_manifest) if dev_manifest else None, out=str(first),
            epochs=stage.epochs, train_fraction=stage.train_fraction, select="last", first_stage=None,
            export_onnx=False, resume=_has_state(first)))
        if result.stop_reason == "time_limit":
            return result
    # first_stage stays in the second stage's config.json: the record of how the model was made.
    return train(dataclasses.replace(cfg, init=str(first / BEST), resume=_has_state(out)))
