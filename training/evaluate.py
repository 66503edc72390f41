"""Score a labelled corpus with a checkpoint and report: ``python -m training.evaluate``.

    python -m training.evaluate --manifest eval.csv --model runs/x/best --out reports/x
    python -m training.evaluate --dataset asvspoof2019la --root LA --subset eval --model specrnet \\
        --out reports/la19 --asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt

Every file (any format and rate libsndfile reads) is decoded, downmixed, resampled to 16 kHz with
soxr, and cut into the checkpoint's 4-s windows at its hop (clips shorter than a window are tiled);
the file score is the mean of the window logits (higher = more spoof). Files that cannot be
decoded are named, skipped and counted in the report. Writes ``scores.csv``
(path,label,score,attack,source), ``report.json``, ``report.md`` and PNG plots into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.audio_io import AudioFileError, read_mono
from engines.errors import EngineError, MissingExtraError
from training.audio import cut_windows
from training.datasets import DATASET_KINDS, Utterance, load_dataset, load_manifest
from training.report import AsvScores, FileScore, compute_report, plot_all, read_asv_scores, write_report
from training.splits import SPLIT_NAMES, with_splits

__all__ = ["EvalOptions", "EvalResult", "evaluate", "evaluate_utterances", "main", "select_utterances"]

ENGINES = ("auto", "onnx", "onnx-int8", "torch", "cuda")


@dataclass
class EvalOptions:
    model: str
    out: str
    manifest: str | None = None
    dataset: str | None = None
    root: str | None = None
    subset: str | None = None  # ASVspoof subset (2019: train/dev/eval; 2021: progress/eval/...)
    protocol_file: str | None = None  # ASVspoof 2017
    engine: str = "auto"
    asv_scores: str | None = None
    hop_s: float | None = None  # None: the checkpoint's hop
    batch_size: int = 64  # windows per engine call
    threads: int | None = None  # engine threads; None: all cores
    workers: int = 2  # decoding threads
    plots: bool = True
    progress: bool = True
    # Applied to each decoded file (16 kHz mono float32) before windowing: robustness sweeps.
    transform: Callable[[Path, np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.dataset is None):
            raise ValueError("give exactly one of --manifest CSV or --dataset KIND --root DIR")
        if self.dataset is not None and self.root is None:
            raise ValueError(f"--dataset {self.dataset} needs --root DIR")
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} is not supported; accepted: {', '.join(ENGINES)}")
        if self.hop_s is not None and self.hop_s <= 0:
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError(f"batch_size ({self.batch_size}) and workers ({self.workers}) must be >= 1")


@dataclass(frozen=True)
class EvalResult:
    out: Path
    scores: list[FileScore]
    unreadable: list[tuple[str, str]]
    report: dict[str, Any]


def select_utterances(opts: EvalOptions) -> tuple[list[Utterance], str]:
    csv_path = opts.manifest
    if opts.dataset is not None and opts.dataset.lower() == "manifest":
        csv_path = opts.root
    if csv_path is not None:
        utts = load_manifest(csv_path)
        if opts.subset is None:
            return utts, f"manifest `{csv_path}`"
        # A corpus manifest with a split column: keep one split (e.g. --subset eval).
        tagged = with_splits(utts, csv_path)
        if tagged is None:
            raise ValueError(f"--subset {opts.subset!r} needs a 'split' column in {csv_path}, which has none")
        want = SPLIT_NAMES.get(opts.subset.lower(), opts.subset.lower())
        chosen = [u for u in tagged if u.subset == want]
        if not chosen:
            present = sorted({u.subset for u in tagged if u.subset})
            raise ValueError(f"{csv_path}: no rows in split {want!r}; splits present: {', '.join(present)}")
        return chosen, f"manifest `{csv_path}`, split {want}"
    kw: dict[str, Any] = {}
    if opts.subset is not None:
        kw["subset"] = opts.subset
    if opts.protocol_file is not None:
        kw["protocol_file"] = opts.protocol_file
    assert opts.dataset is not None and opts.root is not None
    desc = f"{opts.dataset} at `{opts.root}`" + (f", subset {opts.subset}" if opts.subset else "")
    return load_dataset(opts.dataset, opts.root, **kw), desc


def _decoded(utts: Sequence[Utterance], workers: int, window: int, hop: int,
             transform: Callable[[Path, np.ndarray], np.ndarray] | None = None
             ) -> Iterator[tuple[Utterance, np.ndarray | None, str | None]]:
    """(utterance, windows, None) or (utterance, None, reason) in order, decoding ahead on threads
    (libsndfile and soxr release the GIL) with a bounded queue so memory stays flat."""

    def job(u: Utterance) -> np.ndarray:
        audio = read_mono(u.path)
        return cut_windows(transform(u.path, audio) if transform else audio, window, hop)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[Utterance, Future[np.ndarray]]] = deque()
        it = iter(utts)
        for u in it:
            pending.append((u, pool.submit(job, u)))
            if len(pending) >= 2 * workers + 2:
                break
        while pending:
            u, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(job, nxt)))
            try:
                yield u, fut.result(), None
            except AudioFileError as e:
                yield u, None, e.reason


def evaluate(opts: EvalOptions) -> EvalResult:
    utts, description = select_utterances(opts)
    return evaluate_utterances(opts, utts, description)


def evaluate_utterances(opts: EvalOptions, utts: Sequence[Utterance], description: str) -> EvalResult:
    """``evaluate`` on an already chosen list of utterances (the robustness sweep's subsets)."""
    import engines
    from tqdm import tqdm

    asv: AsvScores | None = read_asv_scores(opts.asv_scores) if opts.asv_scores else None
    engine = engines.load(opts.model, engine=opts.engine, threads=opts.threads or os.cpu_count() or 1,
                          max_batch=opts.batch_size)
    cfg = engine.config
    window = engine.window_samples
    hop_s = opts.hop_s if opts.hop_s is not None else cfg.hop_s
    hop = max(1, int(round(hop_s * cfg.sample_rate)))
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    scores: list[FileScore] = []
    unreadable: list[tuple[str, str]] = []
    batch: list[tuple[Utterance, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        logits = engine.logits(np.concatenate([w for _, w in batch]))
        i = 0
        for u, w in batch:
            file_logits = logits[i : i + len(w)]
            i += len(w)
            scores.append(FileScore(str(u.path), u.label, float(np.mean(file_logits, dtype=np.float64)),
                                    u.attack, u.source, len(w)))
        batch.clear()

    bar = tqdm(_decoded(utts, opts.workers, window, hop, opts.transform), total=len(utts), desc="scoring", unit="file",
               disable=not opts.progress, dynamic_ncols=True)
    for u, windows, reason in bar:
        if windows is None:
            unreadable.append((str(u.path), reason or "unreadable"))
            bar.write(f"skipped unreadable file {u.path}: {reason}", file=sys.stderr)
            continue
        batch.append((u, windows))
        if sum(len(w) for _, w in batch) >= opts.batch_size:
            flush()
    flush()
    bar.close()
    if not scores:
        raise ValueError(f"none of the {len(utts)} files could be decoded (first: {unreadable[0][0]}: {unreadable[0][1]})")

    with open(out / "scores.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "score", "attack", "source"])
        for s in scores:
            w.writerow([s.path, s.label, f"{s.score:.6f}", s.attack or "", s.source or ""])

    report = compute_report(scores, cfg.threshold, asv)
    report["model"] = {"path": str(opts.model), "id": engine.model_id, "architecture": cfg.architecture,
                       "engine": engine.name, "threshold": cfg.threshold, "calibration": cfg.calibration}
    report["data"] = {"description": description, "listed": len(utts), "scored": len(scores),
                      "unreadable": len(unreadable),
                      "unreadable_files": [{"path": p, "reason": r} for p, r in unreadable],
                      "windows": int(sum(s.windows for s in scores))}
    report["windowing"] = {"window_s": cfg.window_s, "hop_s": hop_s, "sample_rate": cfg.sample_rate,
                           "file_score": "mean of the window logits; clips shorter than a window are tiled"}
    report["plots"] = plot_all(scores, cfg.threshold, out) if opts.plots else {}
    write_report(report, out)
    engine.close()
    return EvalResult(out, scores, unreadable, report)


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="CSV path,label[,speaker,attack,source]")
    src.add_argument("--dataset", help=f"corpus layout: {', '.join(DATASET_KINDS)}")
    p.add_argument("--root", help="corpus folder for --dataset (the CSV for 'manifest')")
    p.add_argument("--subset", help="ASVspoof subset (2019 LA: train/dev/eval; 2021: eval/progress/hidden_track),"
                   " or a manifest's split (train/dev/eval) when it has a split column")
    p.add_argument("--protocol-file", help="ASVspoof 2017 protocol file")
    p.add_argument("--model", required=True, help="shipped model name or checkpoint folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--engine", default="auto", choices=ENGINES)
    p.add_argument("--asv-scores", help="ASV score file (key target/nontarget/spoof, score last) for the t-DCF")
    p.add_argument("--hop-s", type=float, help="window hop in seconds (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per engine call")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        opts = EvalOptions(model=a.model, out=a.out, manifest=a.manifest, dataset=a.dataset, root=a.root,
                           subset=a.subset, protocol_file=a.protocol_file, engine=a.engine, asv_scores=a.asv_scores,
                           hop_s=a.hop_s, batch_size=a.batch_size, threads=a.threads, workers=a.workers,
                           plots=not a.no_plots, progress=not a.no_progress)
        result = evaluate(opts)
    except (ValueError, FileNotFoundError, EngineError, MissingExtraError) as e:
        # ValueError covers DatasetFormatError and CheckpointError; FileNotFoundError the missing protocols.
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.report["metrics"]
    eer = "n/a" if m["eer_percent"] is None else f"{m['eer_percent']:.2f}%"
    print(f"{len(result.scores)} files scored, {len(result.unreadable)} unreadable; EER {eer}; "
          f"report: {result.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
