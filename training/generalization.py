"""Leave-families-out protocol: how a recipe does on generators it never saw.

    python -m training.generalization --manifest corpus/manifest.csv --out runs/lofo/specrnet \\
        --arch specrnet --epochs 6

The corpus's generator families are grouped into folds (``DEFAULT_FOLDS``; neural vocoders are
never all in one fold). For each fold the recipe is trained on the corpus without that fold's
families (train split; dev split for the dev EER), with the held-out families' dev items and
bona fide dev scored after every epoch as ``monitor_eer`` (recorded, never used to steer that
run). The kept checkpoint then scores the whole eval split (speaker-disjoint from training), and
each family's eval items are compared with the bona fide eval items: a held-out family's EER is
what the recipe does on an unseen generator, a seen family's is in-domain.

Writes into ``--out``: ``fold-NAME/`` (manifests, the training run, ``eval/scores.csv``,
``fold.json``), ``matrix.json`` and ``matrix.md``: EER per fold x family with the number of files,
the mean and worst held-out EER, the pooled held-out EER over all folds, the mean in-domain EER,
the per-epoch monitor curve averaged over folds (to choose the epoch count of the final model),
and the threshold at the pooled held-out EER point (``--apply-threshold CKPT`` writes it into a
checkpoint trained on the full corpus). Interrupted runs resume: finished folds are kept,
a fold whose training stopped continues from its ``last/``. ``--teachers RUN`` distils each fold's
model (a streaming student) from RUN's model of the same fold, so no teacher saw the held-out families.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import read_config, resolve_dir, write_config
from engines.errors import EngineError, MissingExtraError
from engines.quantize import QuantizeOptions, quantize_checkpoint
from training.config import TrainConfig
from training.metrics import eer_from_spoof_scores
from training.train import threshold_from_logit

__all__ = ["DEFAULT_FOLDS", "ProtocolOptions", "FoldPlan", "plan_folds", "run", "build_matrix", "main"]

BONAFIDE = "bonafide"
# Families grouped by how they make speech, so a held-out fold is unseen in kind, not only in
# weights: two HiFi-GAN V1 generators (22.05 kHz), the 16 kHz HiFi-GAN with Piper's VITS (neural
# but different lineage and rate), the signal-processing vocoders, and rule-based TTS.
DEFAULT_FOLDS: dict[str, tuple[str, ...]] = {
    "hifigan-v1": ("hifigan-universal", "hifigan-lj"),
    "hifigan16k-vits": ("hifigan-16k", "piper"),
    "dsp-vocoders": ("world", "mlsa", "griffinlim"),
    "rule-tts": ("espeak", "flite", "festival"),
}


# Eval engines and the suffix of their result files.
EVAL_ENGINES = {"onnx": "", "onnx-int8": "-int8"}
# The most int8 may move the protocol's mean held-out, pooled held-out or mean in-domain EER from
# float32's and still be the CPU default (engines.int8_by_default): one point of EER.
INT8_TOLERANCE = 0.01

# TrainConfig fields that say where and how fast a fold runs, not what it learns.
RUN_SETTINGS = ("manifest", "out", "monitor_manifest", "resume", "progress", "max_minutes", "threads", "workers")


class ProtocolError(ValueError):
    """A manifest or fold specification the protocol cannot use."""


@dataclass
class ProtocolOptions:
    manifest: Path
    out: Path
    recipe: TrainConfig  # manifest, out and monitor_manifest are set per fold
    folds: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_FOLDS))
    only: tuple[str, ...] = ()  # run these folds now; the matrix uses every finished fold
    eval_hop_s: float = 1.0
    threads: int | None = None  # scoring threads; None: all cores
    progress: bool = True
    # Engine that scores the eval split. onnx-int8 quantizes each fold's kept checkpoint (calibrated on
    # the fold's training files, both classes) and writes its results beside float32's
    # (fold-int8.json, matrix-int8.json): the same trained folds, so the two matrices compare int8 alone.
    engine: str = "onnx"
    # Distillation under the protocol: each fold's teacher is this protocol run's model of the same
    # fold, so no teacher has seen the families its student is tested on.
    teachers: Path | None = None

    def __post_init__(self) -> None:
        self.manifest, self.out = Path(self.manifest), Path(self.out)
        if self.recipe.teacher is not None:
            raise ProtocolError("a fixed teacher has seen the folds' held-out families; give --teachers RUN (each "
                                "fold distils from RUN's model of the same fold)")
        if self.recipe.teacher_init and self.teachers is None:
            raise ProtocolError("the recipe's teacher_init needs a teacher per fold: give --teachers RUN")
        if self.teachers is not None:
            self.teachers = Path(self.teachers)
            if not (self.teachers / "recipe.json").is_file():
                raise ProtocolError(f"--teachers {self.teachers}: not a protocol run (no recipe.json)")
        if not self.folds:
            raise ProtocolError("no folds given")
        unknown = [f for f in self.only if f not in self.folds]
        if unknown:
            raise ProtocolError(f"--only {', '.join(unknown)}: not a fold; folds: {', '.join(self.folds)}")
        if self.eval_hop_s <= 0:
            raise ProtocolError(f"--eval-hop must be positive, got {self.eval_hop_s}")
        if self.engine not in EVAL_ENGINES:
            raise ProtocolError(f"--engine {self.engine!r} not accepted; accepted: {', '.join(EVAL_ENGINES)}")

    @property
    def suffix(self) -> str:
        """What the engine adds to result names: '' for onnx (float32), '-int8'."""
        return EVAL_ENGINES[self.engine]


@dataclass(frozen=True)
class Row:
    path: str  # absolute
    label: str
    speaker: str
    attack: str  # "-" for bona fide
    source: str
    split: str


@dataclass(frozen=True)
class FoldPlan:
    name: str
    heldout: tuple[str, ...]
    train: list[Row]  # train and dev splits without the held-out families
    monitor: list[Row]  # bona fide dev + held-out dev
    eval: list[Row]  # the whole eval split


def read_rows(manifest: Path) -> list[Row]:
    """The corpus builder's manifest, paths made absolute."""
    if not manifest.is_file():
        raise ProtocolError(f"manifest {manifest} does not exist")
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        needed = {"path", "label", "attack", "split"}
        if not reader.fieldnames or not needed <= set(reader.fieldnames):
            raise ProtocolError(f"{manifest}: needs the columns {sorted(needed)} (a training.synth manifest), "
                                f"has {reader.fieldnames}")
        rows = []
        for r in reader:
            path = Path(r["path"])
            rows.append(Row(str(path if path.is_absolute() else (manifest.parent / path).resolve()), r["label"],
                            r.get("speaker", ""), r["attack"] or "-", r.get("source", ""), r["split"]))
    return rows


def plan_folds(rows: Sequence[Row], folds: dict[str, tuple[str, ...]]) -> list[FoldPlan]:
    """One plan per fold; every spoof family of the manifest must be in exactly one fold."""
    attacks = {r.attack for r in rows if r.label != BONAFIDE}
    owner: dict[str, str] = {}
    for name, members in folds.items():
        for a in members:
            if a in owner:
                raise ProtocolError(f"family {a} is in two folds: {owner[a]} and {name}")
            owner[a] = name
    missing = sorted(attacks - set(owner))
    if missing:
        raise ProtocolError(f"families {', '.join(missing)} are in no fold; give --folds covering all of "
                            f"{', '.join(sorted(attacks))}")
    absent = sorted(set(owner) - attacks)
    if absent:
        raise ProtocolError(f"fold families {', '.join(absent)} are not in the manifest (families there: "
                            f"{', '.join(sorted(attacks))})")
    splits = {r.split for r in rows}
    if not {"train", "dev", "eval"} <= splits:
        raise ProtocolError(f"the manifest needs train, dev and eval splits; has {', '.join(sorted(splits))}")
    plans = []
    for name, members in folds.items():
        held = set(members)
        plans.append(FoldPlan(
            name=name, heldout=tuple(members),
            train=[r for r in rows if r.split in ("train", "dev") and r.attack not in held],
            monitor=[r for r in rows if r.split == "dev" and (r.label == BONAFIDE or r.attack in held)],
            eval=[r for r in rows if r.split == "eval"],
        ))
    return plans


def _write_rows(path: Path, rows: Sequence[Row], with_split: bool) -> None:
    cols = ["path", "label", "speaker", "attack", "source"] + (["split"] if with_split else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([getattr(r, c) for c in cols])
    tmp.replace(path)


# ----------------------------------------------------------------------------- one fold


def family_eers(scores: Sequence[tuple[str, str, float]]) -> dict[str, dict[str, Any]]:
    """(label, attack, logit) triples -> EER of each spoof family against all bona fide."""
    bona = np.array([s for label, _, s in scores if label == BONAFIDE], dtype=np.float64)
    out: dict[str, dict[str, Any]] = {}
    for attack in sorted({a for label, a, _ in scores if label != BONAFIDE}):
        spoof = np.array([s for label, a, s in scores if label != BONAFIDE and a == attack], dtype=np.float64)
        labels = np.r_[np.zeros(bona.size, dtype=int), np.ones(spoof.size, dtype=int)]
        eer, _ = eer_from_spoof_scores(labels, np.r_[bona, spoof])
        out[attack] = {"eer": float(eer), "spoof_files": int(spoof.size), "bonafide_files": int(bona.size),
                       "mean_spoof_logit": float(spoof.mean())}
    return out


def fold_teacher(teachers: Path, plan: FoldPlan) -> Path:
    """The kept model of ``plan``'s fold in the protocol run ``teachers``, trained without the same families."""
    done = teachers / f"fold-{plan.name}" / "fold.json"
    if not done.is_file():
        raise ProtocolError(f"--teachers {teachers}: fold {plan.name} has not finished there ({done} missing)")
    heldout = json.loads(done.read_text(encoding="utf-8"))["heldout"]
    if sorted(heldout) != sorted(plan.heldout):
        raise ProtocolError(f"--teachers {teachers}: its fold {plan.name} held out {', '.join(heldout)}, "
                            f"this one {', '.join(plan.heldout)}")
    return teachers / f"fold-{plan.name}" / "run" / "best"


def run_fold(plan: FoldPlan, opts: ProtocolOptions) -> dict[str, Any]:
    """Train (or resume) and score one fold; the result is also written to fold.json."""
    from training.curriculum import has_run_state, run_training
    from training.datasets import load_manifest
    from training.evaluate import EvalOptions, evaluate_utterances
    from training.state import STATE_JSON
    from training.train import LAST

    folder = opts.out / f"fold-{plan.name}"
    done = folder / f"fold{opts.suffix}.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    train_csv, monitor_csv, eval_csv = folder / "train.csv", folder / "monitor.csv", folder / "eval.csv"
    _write_rows(train_csv, plan.train, with_split=True)
    _write_rows(monitor_csv, plan.monitor, with_split=False)
    _write_rows(eval_csv, plan.eval, with_split=False)
    run_dir = folder / "run"
    state_file = run_dir / LAST / STATE_JSON
    finished = state_file.is_file() and json.loads(state_file.read_text(encoding="utf-8")).get("finished", False)
    started = time.monotonic()
    if not finished:
        teacher = {"teacher": str(fold_teacher(opts.teachers, plan))} if opts.teachers else {}
        cfg = TrainConfig.from_dict({**opts.recipe.to_dict(), **teacher, "manifest": str(train_csv), "out": str(run_dir),
                                     "monitor_manifest": str(monitor_csv), "resume": has_run_state(run_dir),
                                     "progress": opts.progress})
        result = run_training(cfg)
        if result.stop_reason == "time_limit":
            raise TimeoutError(f"fold {plan.name}: the --minutes budget ran out at epoch {result.epochs_completed}; "
                               "run the same command again to continue")
    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    if opts.engine == "onnx-int8" and read_config(run_dir / "best").int8 is None:
        quantize_checkpoint(run_dir / "best", [train_csv], QuantizeOptions())
    eval_dir = folder / f"eval{opts.suffix}"
    evaluated = evaluate_utterances(
        EvalOptions(model=str(run_dir / "best"), out=str(eval_dir), manifest=str(eval_csv), engine=opts.engine,
                    hop_s=opts.eval_hop_s, threads=opts.threads, plots=False, progress=opts.progress),
        load_manifest(eval_csv), f"eval split of {opts.manifest}")
    by_path = {r.path: r for r in plan.eval}
    triples = [(s.label, by_path[s.path].attack if s.path in by_path else (s.attack or "-"), s.score)
               for s in evaluated.scores]
    result_json = {
        "fold": plan.name, "engine": opts.engine, "scores": str((eval_dir / "scores.csv").relative_to(opts.out)),
        "heldout": list(plan.heldout), "train_files": len(plan.train),
        "eval_files": len(evaluated.scores), "unreadable": len(evaluated.unreadable),
        "families": family_eers(triples), "history": history,
        "model": json.loads((run_dir / "best" / "model.json").read_text(encoding="utf-8")).get("metrics", {}),
        "seconds": round(time.monotonic() - started, 1),
    }
    done.write_text(json.dumps(result_json, indent=2) + "\n", encoding="utf-8")
    return result_json


# ----------------------------------------------------------------------------- the matrix


def _pooled(folds: Sequence[dict[str, Any]], out: Path) -> tuple[float | None, float | None, int, int]:
    """EER and logit threshold of all held-out spoofs against all bona fide, over every fold."""
    bona, spoof = [], []
    for f in folds:
        held = set(f["heldout"])
        path = out / f.get("scores", f"fold-{f['fold']}/eval/scores.csv")  # older fold.json: float32's
        with path.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                if r["label"] == BONAFIDE:
                    bona.append(float(r["score"]))
                elif r["attack"] in held:
                    spoof.append(float(r["score"]))
    if not bona or not spoof:
        return None, None, len(bona), len(spoof)
    labels = np.r_[np.zeros(len(bona), dtype=int), np.ones(len(spoof), dtype=int)]
    eer, thr = eer_from_spoof_scores(labels, np.r_[bona, spoof])
    return float(eer), float(thr), len(bona), len(spoof)


def build_matrix(folds: Sequence[dict[str, Any]], out: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    heldout = {a: f["families"][a] | {"fold": f["fold"]} for f in folds for a in f["heldout"] if a in f["families"]}
    seen = [v["eer"] for f in folds for a, v in f["families"].items() if a not in f["heldout"]]
    pooled_eer, pooled_thr, n_bona, n_spoof = _pooled(folds, out)
    epochs = max((len(f["history"]) for f in folds), default=0)
    curve = []
    for e in range(epochs):
        vals = [f["history"][e]["monitor_eer"] for f in folds if e < len(f["history"]) and "monitor_eer" in f["history"][e]]
        if len(vals) == len(folds):
            curve.append({"epoch": e + 1, "mean_monitor_eer": float(np.mean(vals))})
    best_epoch = min(curve, key=lambda c: c["mean_monitor_eer"])["epoch"] if curve else None
    threshold = threshold_from_logit(pooled_thr) if pooled_thr is not None else None
    return {
        "recipe": recipe,
        "folds": {f["fold"]: {"heldout": f["heldout"], "train_files": f["train_files"], "eval_files": f["eval_files"],
                              "families": f["families"], "kept_epoch": f["model"].get("epoch")} for f in folds},
        "heldout": heldout,
        "mean_heldout_eer": float(np.mean([v["eer"] for v in heldout.values()])) if heldout else None,
        "max_heldout_eer": max((v["eer"] for v in heldout.values()), default=None),
        "worst_family": max(heldout, key=lambda a: heldout[a]["eer"]) if heldout else None,
        "pooled_heldout_eer": pooled_eer, "pooled_bonafide_files": n_bona, "pooled_spoof_files": n_spoof,
        "mean_indomain_eer": float(np.mean(seen)) if seen else None,
        "monitor_curve": curve, "best_monitor_epoch": best_epoch,
        "threshold_logit": pooled_thr, "threshold": threshold,
    }


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def matrix_markdown(m: dict[str, Any]) -> str:
    families = sorted({a for f in m["folds"].values() for a in f["families"]})
    lines = ["| fold (held out) | " + " | ".join(families) + " |", "| --- | " + " | ".join("---" for _ in families) + " |"]
    for name, f in m["folds"].items():
        cells = []
        for a in families:
            v = f["families"].get(a)
            cell = "—" if v is None else _pct(v["eer"])
            cells.append(f"**{cell}**" if a in f["heldout"] else cell)
        lines.append(f"| {name} ({', '.join(f['heldout'])}) | " + " | ".join(cells) + " |")
    lines += ["", "Bold: the fold's held-out families (unseen in training); the others are in-domain. "
              "Each cell is one family's eval files against all bona fide eval files.", "",
              "| held-out family | fold | EER | spoof files | bona fide files |", "| --- | --- | --- | --- | --- |"]
    for a, v in sorted(m["heldout"].items(), key=lambda kv: -kv[1]["eer"]):
        lines.append(f"| {a} | {v['fold']} | {_pct(v['eer'])} | {v['spoof_files']} | {v['bonafide_files']} |")
    lines += ["",
              f"- mean held-out EER: **{_pct(m['mean_heldout_eer'])}**, worst {_pct(m['max_heldout_eer'])} "
              f"({m['worst_family']})",
              f"- pooled held-out EER (all folds' held-out spoofs, {m['pooled_spoof_files']} files, against their "
              f"bona fide, {m['pooled_bonafide_files']} files): {_pct(m['pooled_heldout_eer'])}",
              f"- mean in-domain EER (seen families): {_pct(m['mean_indomain_eer'])}",
              f"- threshold at the pooled held-out EER point: p(spoof) "
              f"{'—' if m['threshold'] is None else format(m['threshold'], '.4f')}"]
    if m["monitor_curve"]:
        lines += ["", "Held-out dev EER by epoch, mean over folds (what more epochs of the recipe do for unseen families):", "",
                  "| epoch | " + " | ".join(str(c["epoch"]) for c in m["monitor_curve"]) + " |",
                  "| --- | " + " | ".join("---" for _ in m["monitor_curve"]) + " |",
                  "| mean held-out dev EER | " + " | ".join(_pct(c["mean_monitor_eer"]) for c in m["monitor_curve"]) + " |"]
    return "\n".join(lines) + "\n"


def run(opts: ProtocolOptions) -> dict[str, Any]:
    plans = plan_folds(read_rows(opts.manifest), opts.folds)
    opts.out.mkdir(parents=True, exist_ok=True)
    recipe = {k: v for k, v in opts.recipe.to_dict().items() if k not in RUN_SETTINGS}
    if opts.teachers is not None:
        recipe["teacher"] = f"each fold's model in {opts.teachers.resolve()}"
    saved = opts.out / "recipe.json"
    # Options added to TrainConfig after a run started are absent from its recipe.json: read as defaults.
    defaults = {k: v for k, v in TrainConfig().to_dict().items() if k not in RUN_SETTINGS}
    if saved.is_file() and {**defaults, **json.loads(saved.read_text(encoding="utf-8"))} != json.loads(json.dumps(recipe)):
        raise ProtocolError(f"{opts.out} holds a run of another recipe ({saved}); use a new --out")
    saved.write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    results = []
    for plan in plans:
        fold_json = opts.out / f"fold-{plan.name}" / f"fold{opts.suffix}.json"
        if opts.only and plan.name not in opts.only:
            if fold_json.is_file():
                results.append(json.loads(fold_json.read_text(encoding="utf-8")))
            continue
        results.append(run_fold(plan, opts))
    matrix = build_matrix(results, opts.out, recipe)
    matrix["complete"] = len(results) == len(plans)
    matrix["engine"] = opts.engine
    (opts.out / f"matrix{opts.suffix}.json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    (opts.out / f"matrix{opts.suffix}.md").write_text(matrix_markdown(matrix), encoding="utf-8")
    return matrix


INT8_MEASURES = ("mean_heldout_eer", "pooled_heldout_eer", "mean_indomain_eer")


def int8_comparison(out: Path) -> dict[str, Any]:
    """float32 against int8 on the same folds (OUT/matrix.json, OUT/matrix-int8.json), and whether
    int8 stays within :data:`INT8_TOLERANCE` on every measure."""
    matrices = {}
    for engine, suffix in EVAL_ENGINES.items():
        path = out / f"matrix{suffix}.json"
        if not path.is_file():
            raise ProtocolError(f"{path} is missing: run the protocol with --engine {engine} first")
        matrices[engine] = json.loads(path.read_text(encoding="utf-8"))
        if not matrices[engine].get("complete"):
            raise ProtocolError(f"{path}: the protocol has not finished every fold")
    fp32, int8 = matrices["onnx"], matrices["onnx-int8"]
    measures = {k: {"float32": fp32[k], "int8": int8[k], "change": int8[k] - fp32[k]} for k in INT8_MEASURES}
    # The recipe and folds, not OUT's path: the record travels with the checkpoint.
    return {"recipe": fp32["recipe"], "folds": {k: f["heldout"] for k, f in fp32["folds"].items()},
            "measures": measures, "tolerance": INT8_TOLERANCE,
            "within_tolerance": all(abs(m["change"]) <= INT8_TOLERANCE for m in measures.values())}


def apply_int8_comparison(out: Path, checkpoint: Path) -> dict[str, Any]:
    """Record :func:`int8_comparison` in the checkpoint's int8 record (model.json only: no file changes)."""
    folder = resolve_dir(checkpoint)
    cfg = read_config(folder)
    if cfg.int8 is None:
        raise ProtocolError(f"{checkpoint} has no int8 model: python -m engines.quantize --model {checkpoint}")
    comparison = int8_comparison(out)
    cfg.int8 = {**cfg.int8, "protocol": comparison}
    write_config(folder, cfg)
    return comparison


def apply_threshold(matrix_path: Path, checkpoint: Path) -> float:
    """Write the protocol's threshold into a checkpoint's model.json. The threshold is metadata:
    weights, graphs and their records (the int8 model's too) stay as they are."""
    m = json.loads(matrix_path.read_text(encoding="utf-8"))
    if m.get("threshold") is None or not m.get("complete"):
        raise ProtocolError(f"{matrix_path}: the protocol has not finished every fold; no threshold yet")
    folder = resolve_dir(checkpoint)
    cfg = read_config(folder)
    cfg.threshold = float(m["threshold"])
    cfg.metrics = {**cfg.metrics, "threshold_from": "pooled held-out EER point of the leave-families-out protocol",
                   "protocol_pooled_heldout_eer": m["pooled_heldout_eer"],
                   "protocol_mean_heldout_eer": m["mean_heldout_eer"]}
    write_config(folder, cfg)
    return cfg.threshold


# ----------------------------------------------------------------------------- CLI


def _folds(text: str) -> dict[str, tuple[str, ...]]:
    """'name=a+b,name2=c' -> folds."""
    out: dict[str, tuple[str, ...]] = {}
    for part in text.split(","):
        name, sep, members = part.partition("=")
        if not sep or not name.strip() or not members.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=FAMILY+FAMILY,... such as dsp=world+mlsa; got {part!r}")
        out[name.strip()] = tuple(m.strip() for m in members.split("+") if m.strip())
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.generalization", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, help="a training.synth manifest (path,label,speaker,attack,source,split)")
    p.add_argument("--out", type=Path, required=True, help="protocol folder (resumed when it exists)")
    p.add_argument("--config", help="TrainConfig JSON: the recipe (architecture, augmentation, epochs, ...)")
    p.add_argument("--arch", help="architecture (overrides --config)")
    p.add_argument("--arch-params", type=json.loads, help="JSON object")
    p.add_argument("--epochs", type=int, help="epochs per fold: the fixed budget of the recipe")
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--train-fraction", type=float, help="train each fold on this seeded share of its files "
                   "(a CPU budget: the matrix then describes the recipe on less data)")
    p.add_argument("--minutes", type=float, help="stop a fold's training after this much wall time in this "
                   "invocation (saved; the same command continues it)")
    p.add_argument("--folds", type=_folds, help="NAME=FAMILY+FAMILY,... (default: " +
                   ",".join(f"{k}={'+'.join(v)}" for k, v in DEFAULT_FOLDS.items()) + ")")
    p.add_argument("--only", default="", help="comma list of folds to run now")
    p.add_argument("--eval-hop", type=float, default=1.0, help="window hop for scoring the eval split (s)")
    p.add_argument("--threads", type=int, help="scoring threads (default: all cores)")
    p.add_argument("--engine", choices=list(EVAL_ENGINES), default="onnx",
                   help="engine scoring the eval split; onnx-int8 quantizes the folds' trained models and "
                        "writes matrix-int8.json beside float32's (default %(default)s)")
    p.add_argument("--teachers", type=Path, metavar="RUN",
                   help="distil each fold's model from protocol run RUN's model of the same fold (a streaming "
                        "student judged on the protocol: --arch specrnet_stream)")
    p.add_argument("--apply-threshold", type=Path, metavar="CKPT",
                   help="write OUT/matrix.json's threshold into checkpoint CKPT and exit")
    p.add_argument("--apply-int8", type=Path, metavar="CKPT",
                   help="record int8 against float32 on OUT's folds (matrix.json, matrix-int8.json) in "
                        f"checkpoint CKPT's int8 record and exit; within {100 * INT8_TOLERANCE:g} point of EER on every "
                        "measure, --engine auto prefers its int8 network on the CPU")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.apply_threshold:
            thr = apply_threshold(a.out / "matrix.json", a.apply_threshold)
            print(f"{a.apply_threshold}: threshold p(spoof) {thr:.4f} from {a.out / 'matrix.json'}")
            return 0
        if a.apply_int8:
            c = apply_int8_comparison(a.out, a.apply_int8)
            changes = ", ".join(f"{k} {100 * m['float32']:.1f} -> {100 * m['int8']:.1f}%"
                                for k, m in c["measures"].items())
            verdict = "within" if c["within_tolerance"] else "outside"
            print(f"{a.apply_int8}: int8 {verdict} {100 * INT8_TOLERANCE:g} point of float32's EER ({changes})")
            return 0
        if a.manifest is None:
            raise ProtocolError("--manifest is required to run the protocol")
        base = TrainConfig.from_json(a.config).to_dict() if a.config else {}
        for name in ("arch", "arch_params", "epochs", "lr", "batch_size", "seed", "train_fraction"):
            if getattr(a, name) is not None:
                base[name] = getattr(a, name)
        if a.minutes is not None:
            base["max_minutes"] = a.minutes
        recipe = TrainConfig.from_dict(base)
        opts = ProtocolOptions(manifest=a.manifest, out=a.out, recipe=recipe, folds=a.folds or dict(DEFAULT_FOLDS),
                               only=tuple(x for x in a.only.split(",") if x), eval_hop_s=a.eval_hop,
                               threads=a.threads, progress=not a.no_progress, engine=a.engine,
                               teachers=a.teachers)
        matrix = run(opts)
    except TimeoutError as e:
        print(f"paused: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, EngineError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command to continue", file=sys.stderr)
        return 130
    print(matrix_markdown(matrix), end="")
    print(f"written: {a.out / f'matrix{opts.suffix}.md'}, {a.out / f'matrix{opts.suffix}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
