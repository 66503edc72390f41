"""Evaluation report: metrics from file scores, Markdown + JSON, and PNG plots (matplotlib Agg).

Scores here are SPOOF logits (higher = more spoof), as the engines return them. The ASVspoof
functions of ``training.metrics`` take bona-fide-oriented scores, so they receive the negated
logits; the EER and minDCF do not depend on that choice, thresholds are converted back.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import (
    compute_auc,
    compute_min_dcf,
    compute_tdcf_2019,
    det_curve,
    eer_from_spoof_scores,
    threshold_metrics,
)

__all__ = ["FileScore", "AsvScores", "read_asv_scores", "compute_report", "write_report", "plot_all",
           "SIGN_CONVENTION", "MIN_DCF_COSTS"]

SIGN_CONVENTION = (
    "score = mean over the file's 4-s windows of the model's calibrated spoof logit: HIGHER = MORE SPOOF. "
    "EER, minDCF and t-DCF are computed exactly as the ASVspoof scripts do on the negated score "
    "(their convention: higher = more bona fide); a file is called spoof when sigmoid(score) >= the model threshold."
)
MIN_DCF_COSTS = {"p_spoof": 0.05, "c_miss": 1.0, "c_fa": 10.0}  # ASVspoof 5 evaluation plan


@dataclass(frozen=True)
class FileScore:
    path: str
    label: str
    score: float  # spoof logit
    attack: str | None
    source: str | None
    windows: int


@dataclass(frozen=True)
class AsvScores:
    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray


_ASV_KEYS = {"target": "target", "nontarget": "nontarget", "non-target": "nontarget", "spoof": "spoof"}


def read_asv_scores(path: str | Path) -> AsvScores:
    """ASV scores for the t-DCF: one trial per line, whitespace- or comma-separated, with a key
    ``target``/``nontarget``/``spoof`` in some column and the score (higher = more target) last,
    e.g. the ASVspoof 2019 ``... .asv.eval.gi.trl.scores.txt`` lines ``bonafide target 1.79``."""
    p = Path(path)
    groups: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: cannot read the ASV scores ({e})") from None
    for lineno, line in enumerate(lines, start=1):
        cols = [c for c in re.split(r"[,\s]+", line.strip()) if c]
        if not cols or cols[0].startswith("#"):
            continue
        keys = [_ASV_KEYS[c.lower()] for c in cols[:-1] if c.lower() in _ASV_KEYS]
        if len(keys) != 1:
            raise ValueError(f"{p}:{lineno}: expected exactly one key among target/nontarget/spoof, got {line.strip()!r}")
        try:
            score = float(cols[-1])
        except ValueError:
            raise ValueError(f"{p}:{lineno}: the last column must be the ASV score, got {cols[-1]!r}") from None
        if not math.isfinite(score):
            raise ValueError(f"{p}:{lineno}: ASV score {cols[-1]!r} is not finite")
        groups[keys[0]].append(score)
    empty = [k for k, v in groups.items() if not v]
    if empty:
        raise ValueError(f"{p}: no ASV trials with key(s) {', '.join(empty)}: the t-DCF needs target, nontarget and spoof scores")
    return AsvScores(*(np.asarray(groups[k], dtype=np.float64) for k in ("target", "nontarget", "spoof")))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _group_eers(labels: np.ndarray, scores: np.ndarray, groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    """EER of each group's spoofs. A group holding bona fide trials too (a source such as a
    corpus) is scored on its own trials; a spoof-only group (an attack) against all bona fide,
    as the ASVspoof per-attack tables do."""
    g = np.asarray(groups, dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(g[labels == "spoof"].tolist())):
        in_group = g == name
        own_bona = in_group & (labels == "bonafide")
        sel_bona = own_bona if own_bona.any() else labels == "bonafide"
        sel = sel_bona | (in_group & (labels == "spoof"))
        if not sel_bona.any():
            continue
        eer, thr = eer_from_spoof_scores(labels[sel], scores[sel])
        out[str(name)] = {"eer": eer, "eer_percent": round(100 * eer, 3), "n_bonafide": int(sel_bona.sum()),
                          "n_spoof": int((in_group & (labels == "spoof")).sum()),
                          "bonafide_pool": "own" if own_bona.any() else "all"}
    return out


def compute_report(files: Sequence[FileScore], threshold: float, asv: AsvScores | None = None) -> dict[str, Any]:
    """All metrics of one evaluation; a metric needing both classes is None when one is absent."""
    labels = np.array([f.label for f in files], dtype=str)
    scores = np.array([f.score for f in files], dtype=np.float64)
    n_bona, n_spoof = int((labels == "bonafide").sum()), int((labels == "spoof").sum())
    both = n_bona > 0 and n_spoof > 0
    m: dict[str, Any] = {"files": len(files), "bonafide": n_bona, "spoof": n_spoof,
                         "eer": None, "eer_percent": None, "eer_threshold_logit": None, "min_dcf": None,
                         "min_dcf_costs": MIN_DCF_COSTS, "auc": None, "tdcf": None}
    if both:
        eer, thr = eer_from_spoof_scores(labels, scores)
        bona, spoof = -scores[labels == "bonafide"], -scores[labels == "spoof"]
        min_dcf, _ = compute_min_dcf(bona, spoof, **MIN_DCF_COSTS)
        m.update(eer=eer, eer_percent=round(100 * eer, 4), eer_threshold_logit=thr, min_dcf=min_dcf,
                 auc=compute_auc(labels, scores))
        if asv is not None:
            tdcf, _ = compute_tdcf_2019(bona, spoof, asv.target, asv.nontarget, asv.spoof)
            m["tdcf"] = {"min_tdcf": tdcf, "formulation": "ASVspoof 2019 (legacy) normalised min t-DCF",
                         "asv_trials": {"target": int(asv.target.size), "nontarget": int(asv.nontarget.size),
                                        "spoof": int(asv.spoof.size)}}
    elif asv is not None:
        m["tdcf"] = None
    at = threshold_metrics(labels, _sigmoid(scores), threshold) if files else None
    m["at_model_threshold"] = at.as_dict() if at else None
    per_attack = _group_eers(labels, scores, [f.attack or "-" for f in files]) if both else {}
    per_source = _group_eers(labels, scores, [f.source or "-" for f in files]) if both else {}
    return {"metrics": m, "per_attack": per_attack, "per_source": per_source}


# ----------------------------------------------------------------------------- plots


def _probit(p: np.ndarray) -> np.ndarray:
    nd = statistics.NormalDist()
    return np.array([nd.inv_cdf(float(v)) for v in np.clip(p, 1e-5, 1 - 1e-5)])


def plot_all(files: Sequence[FileScore], threshold: float, out: Path) -> dict[str, str]:
    """DET curve, score histograms by class and the confusion matrix at the model threshold."""
    try:
        import matplotlib
    except ImportError:
        from engines.errors import MissingExtraError

        raise MissingExtraError("matplotlib", "plot", "the evaluation plots (or pass --no-plots)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = np.array([f.label for f in files], dtype=str)
    scores = np.array([f.score for f in files], dtype=np.float64)
    thr_logit = math.log(threshold / (1.0 - threshold))
    written: dict[str, str] = {}

    if (labels == "bonafide").any() and (labels == "spoof").any():
        curve = det_curve(-scores[labels == "bonafide"], -scores[labels == "spoof"])
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(_probit(curve.far), _probit(curve.frr), lw=1.5)
        eer, _ = eer_from_spoof_scores(labels, scores)
        ax.plot(_probit(np.array([eer])), _probit(np.array([eer])), "o", label=f"EER {100 * eer:.2f}%")
        ticks = np.array([0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
        ax.set_xticks(_probit(ticks), [f"{100 * t:g}" for t in ticks])
        ax.set_yticks(_probit(ticks), [f"{100 * t:g}" for t in ticks])
        lim = _probit(np.array([0.0005, 0.6]))
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel("false acceptance of spoofs (%)")
        ax.set_ylabel("false rejection of bona fide (%)")
        ax.set_title("DET curve")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "det.png", dpi=100)
        plt.close(fig)
        written["det"] = "det.png"

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(scores.min(), scores.max(), 41) if scores.size and scores.max() > scores.min() else 10
    for name, colour in (("bonafide", "tab:green"), ("spoof", "tab:red")):
        sel = scores[labels == name]
        if sel.size:
            ax.hist(sel, bins=bins, alpha=0.6, color=colour, label=f"{name} ({sel.size})")
    ax.axvline(thr_logit, color="k", ls="--", lw=1, label=f"threshold p={threshold:.3g}")
    ax.set_xlabel("file score (spoof logit)")
    ax.set_ylabel("files")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores_hist.png", dpi=100)
    plt.close(fig)
    written["histogram"] = "scores_hist.png"

    pred_spoof = _sigmoid(scores) >= threshold
    cm = np.array([[np.sum((labels == "bonafide") & ~pred_spoof), np.sum((labels == "bonafide") & pred_spoof)],
                   [np.sum((labels == "spoof") & ~pred_spoof), np.sum((labels == "spoof") & pred_spoof)]])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], ["bonafide", "spoof"])
    ax.set_yticks([0, 1], ["bonafide", "spoof"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"threshold p >= {threshold:.3g}")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)
    written["confusion"] = "confusion.png"
    return written


# ----------------------------------------------------------------------------- writing


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``report.json`` (everything) and ``report.md`` (the same, for people)."""
    jpath, mpath = out / "report.json", out / "report.md"
    jpath.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    m, model, data = report["metrics"], report["model"], report["data"]
    lines = [
        f"# Evaluation of `{model['id']}`", "",
        f"- model: `{model['path']}` ({model['architecture']}, engine {model['engine']}, threshold p = {model['threshold']:.4g})",
        f"- data: {data['description']}",
        f"- files: {data['listed']} listed, {data['scored']} scored "
        f"({m['bonafide']} bona fide, {m['spoof']} spoof), {data['unreadable']} unreadable",
        f"- windows: {report['windowing']['window_s']} s, hop {report['windowing']['hop_s']} s; "
        f"{report['windowing']['file_score']}", "",
        f"Sign convention: {SIGN_CONVENTION}", "",
        "| metric | value |", "| --- | --- |",
        f"| EER | {_fmt(m['eer_percent'], 2)} % |",
        f"| minDCF (ASVspoof 5: p_spoof {MIN_DCF_COSTS['p_spoof']}, C_miss {MIN_DCF_COSTS['c_miss']:g}, "
        f"C_fa {MIN_DCF_COSTS['c_fa']:g}) | {_fmt(m['min_dcf'])} |",
        f"| min t-DCF (ASVspoof 2019) | {_fmt(m['tdcf']['min_tdcf']) if m['tdcf'] else 'n/a (no --asv-scores)'} |",
        f"| AUC (spoof positive) | {_fmt(m['auc'])} |",
    ]
    at = m.get("at_model_threshold")
    if at:
        lines += [
            f"| accuracy at threshold | {_fmt(at['accuracy'])} |",
            f"| precision (spoof) | {_fmt(at['precision'])} |",
            f"| recall (spoof) | {_fmt(at['recall'])} |",
            f"| F1 (spoof) | {_fmt(at['f1'])} |",
            f"| confusion (tp / fp / tn / fn) | {at['tp']} / {at['fp']} / {at['tn']} / {at['fn']} |",
        ]
    for title, key in (("EER per attack", "per_attack"), ("EER per source", "per_source")):
        rows = report[key]
        if rows:
            lines += ["", f"## {title}", "", "| group | EER % | spoof | bona fide (pool) |", "| --- | --- | --- | --- |"]
            lines += [f"| {name} | {r['eer_percent']:.2f} | {r['n_spoof']} | {r['n_bonafide']} ({r['bonafide_pool']}) |"
                      for name, r in rows.items()]
    if data["unreadable_files"]:
        lines += ["", "## Unreadable files (skipped)", ""]
        lines += [f"- `{u['path']}`: {u['reason']}" for u in data["unreadable_files"]]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in report["plots"].items()]
    mpath.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return jpath, mpath

