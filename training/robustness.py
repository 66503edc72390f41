"""Robustness sweep: score one corpus under level, channel and noise conditions and report how far
the EER and the mean spoof probability move from the clean condition.

``python -m training.robustness --manifest corpus/manifest.csv --subset eval --model specrnet --out DIR``

Each condition is applied to every decoded file (16 kHz mono) before windowing, so both classes go
through the same channel and the channel cannot separate them. By default only the corpus's clean
files are used (sources without a ``+channel`` suffix): the coded copies are already channel variants.
Level changes are clipped to [-1, 1], as a 16-bit capture would clip them. Noise is seeded by the file
path, so reruns are identical. Writes ``robustness.json``, ``robustness.md`` and ``robustness.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import EngineError, MissingExtraError
from training.augment import add_noise, available_codecs, codec, pink_noise, telephone, white_noise
from training.evaluate import ENGINES, EvalOptions, select_utterances, evaluate_utterances
from training.report import FileScore

__all__ = ["CONDITIONS", "Condition", "RobustnessOptions", "main", "run_sweep", "table_lines"]

Transform = Callable[[Path, np.ndarray], np.ndarray]

# Targets of the training issue: a level change moves the mean spoof probability by at most this
# much, and the telephone band at most doubles the EER.
GAIN_PROB_SHIFT_TARGET = 0.05
# The level range the target covers (x0.1..x2); gain0.05 (-26 dB) is reported beside it.
GAIN_TARGET_CONDITIONS = ("gain0.1", "gain0.25", "gain0.5", "gain2")
TELEPHONE_EER_RATIO_TARGET = 2.0


@dataclass(frozen=True)
class Condition:
    name: str
    kind: str  # "reference", "gain", "channel" or "noise"
    description: str
    transform: Transform | None


def _rng_for(path: Path) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(str(path).encode()).digest()[:8], "little"))


def _gain(scale: float) -> Transform:
    return lambda _p, x: np.clip(x * np.float32(scale), -1.0, 1.0).astype(np.float32)


def _noise(kind: str, snr_db: float) -> Transform:
    make = white_noise if kind == "white" else pink_noise

    def apply(path: Path, x: np.ndarray) -> np.ndarray:
        return add_noise(x, make(x.size, _rng_for(path)), snr_db).astype(np.float32)

    return apply


def _codec(kind: str) -> Transform:
    return lambda _p, x: codec(x, kind)


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("clean", "reference", "as decoded", None),
    Condition("gain0.05", "gain", "x0.05 (-26 dB)", _gain(0.05)),
    Condition("gain0.1", "gain", "x0.1 (-20 dB)", _gain(0.1)),
    Condition("gain0.25", "gain", "x0.25 (-12 dB)", _gain(0.25)),
    Condition("gain0.5", "gain", "x0.5 (-6 dB)", _gain(0.5)),
    Condition("gain2", "gain", "x2 (+6 dB, clipped at full scale)", _gain(2.0)),
    Condition("tel8k", "channel", "8 kHz, 300-3400 Hz, G.711 mu-law", lambda _p, x: telephone(x)),
    Condition("mp3", "channel", "MP3 through libsndfile", _codec("mp3")),
    Condition("opus", "channel", "Opus through libsndfile", _codec("opus")),
    Condition("pink20", "noise", "pink noise at 20 dB SNR", _noise("pink", 20.0)),
    Condition("white10", "noise", "white noise at 10 dB SNR", _noise("white", 10.0)),
)}


@dataclass
class RobustnessOptions:
    model: str
    out: str
    manifest: str
    subset: str | None = "eval"
    conditions: tuple[str, ...] = tuple(CONDITIONS)
    all_channels: bool = False  # also the corpus's coded copies, not only its clean files
    engine: str = "auto"
    threads: int | None = None
    workers: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"condition(s) {unknown} not known; accepted: {', '.join(CONDITIONS)}")
        if "clean" not in self.conditions:
            self.conditions = ("clean", *self.conditions)
        codecs = set(available_codecs())
        missing = [c for c in self.conditions if c in ("mp3", "opus") and c not in codecs]
        if missing:
            raise ValueError(f"condition(s) {missing} need codecs this libsndfile cannot write; available: "
                             f"{sorted(codecs)}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def _summary(scores: Sequence[FileScore], report: dict[str, Any]) -> dict[str, Any]:
    labels = np.array([s.label for s in scores])
    prob = _sigmoid(np.array([s.score for s in scores], dtype=np.float64))
    m = report["metrics"]
    return {"eer_percent": m["eer_percent"], "min_dcf": m["min_dcf"], "auc": m["auc"],
            "mean_prob_bonafide": float(prob[labels == "bonafide"].mean()),
            "mean_prob_spoof": float(prob[labels == "spoof"].mean()),
            "files": len(scores)}


def run_sweep(opts: RobustnessOptions) -> dict[str, Any]:
    base = EvalOptions(model=opts.model, out=opts.out, manifest=opts.manifest, subset=opts.subset,
                       engine=opts.engine, threads=opts.threads, workers=opts.workers, plots=False,
                       progress=opts.progress)
    utts, description = select_utterances(base)
    if not opts.all_channels:
        utts = [u for u in utts if "+" not in (u.source or "")]
        description += ", clean files only (no +channel source)"
    if not utts:
        raise ValueError(f"{opts.manifest}: no files left to score ({description})")
    out = Path(opts.out)
    results: dict[str, Any] = {}
    model_info: dict[str, Any] = {}
    for name in opts.conditions:
        cond = CONDITIONS[name]
        if opts.progress:
            print(f"condition {name}: {cond.description}", file=sys.stderr)
        run = evaluate_utterances(dataclasses.replace(base, out=str(out / name), transform=cond.transform),
                                  utts, description)
        results[name] = {"kind": cond.kind, "description": cond.description, **_summary(run.scores, run.report)}
        model_info = run.report["model"]
    clean = results["clean"]
    for r in results.values():
        r["prob_shift_bonafide"] = r["mean_prob_bonafide"] - clean["mean_prob_bonafide"]
        r["prob_shift_spoof"] = r["mean_prob_spoof"] - clean["mean_prob_spoof"]
        r["eer_ratio"] = (r["eer_percent"] / clean["eer_percent"]) if clean["eer_percent"] else None
    gains = [r for name, r in results.items() if name in GAIN_TARGET_CONDITIONS]
    targets: dict[str, Any] = {}
    if gains:
        worst = max(max(abs(r["prob_shift_bonafide"]), abs(r["prob_shift_spoof"])) for r in gains)
        targets["gain_max_prob_shift"] = {"value": worst, "target": GAIN_PROB_SHIFT_TARGET,
                                          "met": worst <= GAIN_PROB_SHIFT_TARGET}
    if "tel8k" in results:
        tel, ref = results["tel8k"]["eer_percent"], clean["eer_percent"]
        # A clean EER of 0 makes the ratio undefined: then the target holds only if tel8k is 0 too.
        ratio = tel / ref if ref else (1.0 if not tel else None)
        targets["telephone_eer_ratio"] = {"value": ratio, "target": TELEPHONE_EER_RATIO_TARGET,
                                          "met": ratio is not None and ratio <= TELEPHONE_EER_RATIO_TARGET}
    summary = {"model": model_info, "data": description, "files": len(utts),
               "file_probability": "sigmoid of the file's mean calibrated window logit",
               "conditions": results, "targets": targets}
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "robustness.md").write_text(_markdown(summary), encoding="utf-8")
    _plot(results, out / "robustness.png")
    return summary


def table_lines(s: dict[str, Any]) -> list[str]:
    """The sweep's Markdown table and target lines (the report and the model cards share them)."""
    lines = ["| condition | what | EER | EER / clean | mean p(spoof) bona fide | mean p(spoof) spoof |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in s["conditions"].items():
        ratio = "-" if r["eer_ratio"] is None else f"{r['eer_ratio']:.2f}"
        lines.append(f"| {name} | {r['description']} | {r['eer_percent']:.2f}% | {ratio} | "
                     f"{r['mean_prob_bonafide']:.3f} ({r['prob_shift_bonafide']:+.3f}) | "
                     f"{r['mean_prob_spoof']:.3f} ({r['prob_shift_spoof']:+.3f}) |")
    lines.append("")
    for key, t in s["targets"].items():
        value = "undefined" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"- {key.replace('_', ' ')}: {value} (target <= {t['target']}): "
                     f"{'met' if t['met'] else 'NOT met'}")
    return lines


def _markdown(s: dict[str, Any]) -> str:
    head = [f"# Robustness of `{s['model'].get('path', '?')}` ({s['model'].get('architecture', '?')})", "",
            f"Data: {s['data']} ({s['files']} files). File probability: {s['file_probability']}.", ""]
    return "\n".join(head + table_lines(s)) + "\n"


def _plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return  # plots are optional; the tables carry the numbers
    names = list(results)
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.bar(x, [results[n]["eer_percent"] for n in names], color="#4c72b0")
    a.set_xticks(x, names, rotation=40, ha="right")
    a.set_ylabel("EER (%)")
    a.set_title("EER per condition")
    b.plot(x, [results[n]["mean_prob_bonafide"] for n in names], "o-", label="bona fide")
    b.plot(x, [results[n]["mean_prob_spoof"] for n in names], "s-", label="spoof")
    b.set_xticks(x, names, rotation=40, ha="right")
    b.set_ylim(-0.02, 1.02)
    b.set_ylabel("mean spoof probability")
    b.set_title("Mean spoof probability per class")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.robustness", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="conditions: " + "; ".join(f"{c.name} = {c.description}"
                                                                  for c in CONDITIONS.values()))
    p.add_argument("--manifest", required=True, help="CSV path,label[,speaker,attack,source,split]")
    p.add_argument("--subset", default="eval", help="split to score when the manifest has a split column "
                   "(default eval; 'all' for every row)")
    p.add_argument("--model", required=True, help="shipped model name or checkpoint folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), metavar="NAME",
                   help="conditions to run (default: all; clean is always included)")
    p.add_argument("--all-channels", action="store_true", help="also score the corpus's coded copies")
    p.add_argument("--engine", default="auto", choices=ENGINES)
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        opts = RobustnessOptions(model=a.model, out=a.out, manifest=a.manifest,
                                 subset=None if a.subset == "all" else a.subset, conditions=tuple(a.conditions),
                                 all_channels=a.all_channels, engine=a.engine, threads=a.threads,
                                 workers=a.workers, progress=not a.no_progress)
        s = run_sweep(opts)
    except (ValueError, FileNotFoundError, EngineError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_markdown(s), end="")
    print(f"report: {Path(a.out) / 'robustness.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
