"""Model zoo page: every architecture trained on the same corpus under one budget, in one table.

    # 1. train each architecture under the common budget (see docs/model-zoo.md for the exact runs)
    python -m training.train --manifest corpus/manifest.csv --arch lcnn --out runs/zoo/lcnn \\
        --epochs 2 --max-minutes 15 --threads 1 --workers 1 --seed 0
    # 2. evaluate what is not evaluated yet, benchmark, and write the page
    python tools/model_zoo.py --manifest corpus/manifest.csv --runs runs/zoo \\
        --bench benchmarks/zoo-cpu-2core-vm.json --out docs/model-zoo.md

A run folder ``runs/zoo/NAME`` holds ``best/`` (our checkpoint) and ``history.json``; its eval
scores go to ``runs/zoo/eval-NAME`` (made here with training.evaluate when missing). Folders named
``specrnet-frac0.25`` and so on are the data-size curve of the default model; ``--full-data`` names
the run trained on all of it. CPU ms per window comes from tools/bench.py's JSON (ONNX Runtime,
1 thread, batch 1). Every number on the page is read or computed here; nothing is typed in.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_card import _pct, _rows, split_eers  # noqa: E402

FRACTION = re.compile(r"^(?P<arch>[a-z0-9_]+)-frac(?P<frac>[0-9.]+)$")


def _evaluate(manifest: Path, model: Path, out: Path, hop_s: float) -> Path:
    from training.evaluate import EvalOptions, evaluate

    scores = out / "scores.csv"
    if not scores.exists():
        print(f"evaluating {model} -> {out}", file=sys.stderr)
        # Batch 16: the full-resolution networks (LCNN, ResNet-18) hold GBs of activations at 64.
        evaluate(EvalOptions(model=str(model), out=str(out), manifest=str(manifest), subset="eval", engine="onnx",
                             hop_s=hop_s, batch_size=16, threads=1, plots=False, progress=False))
    return scores


def _run_row(name: str, run: Path, scores: Path, heldout: list[str]) -> dict[str, Any]:
    cfg = json.loads((run / "best" / "model.json").read_text())
    history = json.loads((run / "history.json").read_text())
    steps = sum(h.get("steps", 0) for h in history)
    seconds = sum(h.get("seconds", 0.0) for h in history)
    tc = cfg["training_data"]["config"]
    return {"name": name, "arch": cfg["architecture"], "params": cfg["parameters"], "steps": steps,
            "epochs": len(history), "partial": bool(history and history[-1].get("partial")),
            "train_minutes": seconds / 60.0, "batch": tc["batch_size"],
            "fraction": cfg["training_data"].get("train_fraction", 1.0),
            "max_minutes": tc.get("max_minutes"), "max_epochs": tc["epochs"],
            "train_files": cfg["training_data"]["train"]["files"],
            "best_epoch": cfg["metrics"]["epoch"], "dev_eer": cfg["metrics"]["dev_eer"],
            **split_eers(_rows(scores), heldout)}


def _bench_ms(bench: dict[str, Any] | None, arch: str) -> float | None:
    if not bench:
        return None
    hits = [r for r in bench["results"] if r["model"] == arch and r["engine"] == "onnx" and r["threads"] == 1
            and r["batch"] == 1]
    return hits[0]["per_window_ms"] if hits else None


def _plot_fractions(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["fraction"])
    x = [100 * r["fraction"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("seen", "seen generators"), ("heldout", "held-out generators"), ("all", "all eval")):
        ax.plot(x, [100 * r[key] for r in rows], "o-", label=label)
    ax.set_xlabel("training data used (%)")
    ax.set_ylabel("EER (%)")
    ax.set_xticks(x)
    ax.set_title(f"{rows[0]['arch']}: EER against training-data size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build(manifest: Path, runs: Path, full: dict[str, Path], bench_path: Path | None, heldout: list[str],
          out: Path, hop_s: float) -> str:
    bench = json.loads(bench_path.read_text()) if bench_path else None
    zoo, fractions = [], []
    for run in sorted(p for p in runs.iterdir() if (p / "best" / "model.json").exists()):
        row = _run_row(run.name, run, _evaluate(manifest, run / "best", runs / f"eval-{run.name}", hop_s), heldout)
        (fractions if FRACTION.match(run.name) else zoo).append(row)
    for name, run in full.items():
        row = _run_row(name, run, _evaluate(manifest, run / "best", runs / f"eval-{name}", hop_s), heldout)
        fractions.append(row)
    if not zoo:
        raise SystemExit(f"no finished runs (best/model.json) under {runs}")
    budgets = {(r["max_epochs"], r["max_minutes"]) for r in zoo}
    if len(budgets) != 1:
        raise SystemExit(f"the runs under {runs} have different budgets (epochs, minutes): {sorted(budgets)}")
    epochs, minutes = budgets.pop()
    lines = [
        "# Model zoo", "",
        "Every seed architecture, trained from scratch on the same corpus (`python -m training.synth` from",
        "`../shared/data`, speaker-disjoint splits, festival and MLSA spoofs held out of training) with the same",
        "recipe: AdamW, lr 1e-3, cosine schedule, batch 32, the default augmentation, seed 0, and the same",
        f"**budget: {epochs} epochs or {minutes:g} minutes of wall time, whichever came first**, on the 2-core CPU",
        "VM (1 torch thread and 1 loader process per run, two runs side by side). No GPU was available. No",
        "network finished its epochs in that time, so the table ranks what each reaches on a small CPU budget,",
        "not what each can reach: the under-trained rows need a longer (GPU) run before they say anything",
        "about the architecture.", "",
        "| model | parameters | steps (epochs) | dev EER | eval EER, all | seen generators | held-out generators"
        " | CPU ms / window |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(zoo, key=lambda r: r["all"]):
        ms = _bench_ms(bench, r["arch"])
        per_epoch = max(1, r["train_files"] // r["batch"])  # drop_last batches of the epoch sampler
        ep = f"{r['steps']} ({r['steps'] / per_epoch:.2f}{'*' if r['partial'] else ''})"
        lines.append(f"| {r['arch']} | {r['params']:,} | {ep} | {_pct(r['dev_eer'])} | {_pct(r['all'])} | "
                     f"{_pct(r['seen'])} | {_pct(r['heldout'])} | {'n/a' if ms is None else f'{ms:.1f}'} |")
    lines += [
        "", "\\* the time budget ended inside this epoch (its dev EER is from the steps completed).", "",
        f"Eval EER: file score = mean logit of the file's 4-s windows taken every {hop_s:g} s, EER as the ASVspoof"
        " scripts compute it, on the eval split",
        "(speakers unseen in training); *seen* pairs all bona fide files with the spoofs of the generators",
        f"used in training, *held-out* with those of {', '.join(heldout)} only.",
    ]
    if bench:
        m = bench["meta"]
        lines += ["CPU ms / window: `tools/bench.py` (ONNX Runtime, 1 thread, batch 1, p50 of a call on real",
                  f"speech), {m.get('processor') or m.get('machine')}, {m.get('cpus')} cores, onnxruntime "
                  f"{m.get('onnxruntime', '?')}; from `{bench_path.name if bench_path else ''}`."]
    if fractions:
        arch = fractions[0]["arch"]
        lines += [
            "", f"## {arch}: EER against the fraction of training data", "",
            "Same recipe as the shipped model (5 epochs, cosine, 52-minute cap); the 25% and 50% sets are a",
            "seeded share of the training files drawn per class, generator and channel "
            "(`--train-fraction`).", "",
            "| run | training data | files | steps (epochs) | eval EER, all | seen generators | held-out generators |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sorted(fractions, key=lambda r: r["fraction"]):
            per_epoch = max(1, r["train_files"] // r["batch"])
            lines.append(f"| {r['name']} | {100 * r['fraction']:.0f}% | {r['train_files']} | {r['steps']} "
                         f"({r['steps'] / per_epoch:.2f}) | {_pct(r['all'])} | {_pct(r['seen'])} | {_pct(r['heldout'])} |")
        lines += ["", "The 100% run is the shipped model; at this hop its EER differs slightly from the model card's "
                  "(hop 0.5 s)."]
        png = out.parent / "model-zoo-fraction.png"
        _plot_fractions(fractions, png)
        lines += ["", f"![EER against training-data size]({png.name})"]
    archs = " ".join(r["arch"] for r in zoo)
    lines += [
        "", "## Reproduce", "", "```sh",
        f"for a in {archs}; do",
        f"  python -m training.train --manifest corpus/manifest.csv --arch $a --out runs/zoo/$a --epochs {epochs} \\",
        f"      --max-minutes {minutes:g} --threads 1 --workers 1 --seed 0",
        "done",
        "# the data-size curve: the shipped model's config (see its MODEL_CARD.md) on a share of the data",
        "for f in 0.25 0.5; do",
        "  python -m training.train --config train.json --manifest corpus/manifest.csv --train-fraction $f \\",
        "      --out runs/zoo/specrnet-frac$f",
        "done",
        f"python tools/bench.py --models {archs} --engines onnx --threads 1 --batches 1 --seconds 3 \\",
        "    --out benchmarks/zoo-cpu-2core-vm.json",
        "python tools/model_zoo.py --manifest corpus/manifest.csv --runs runs/zoo --full-data specrnet-full runs/specrnet \\",
        "    --bench benchmarks/zoo-cpu-2core-vm.json --out docs/model-zoo.md",
        "```",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, required=True, help="corpus manifest with a split column")
    ap.add_argument("--runs", type=Path, required=True, help="folder of training runs (one per architecture)")
    ap.add_argument("--full-data", nargs=2, action="append", default=[], metavar=("NAME", "RUN"),
                    help="the default model's run on all the data, for the data-size curve")
    ap.add_argument("--bench", type=Path, help="tools/bench.py JSON with every architecture")
    ap.add_argument("--heldout", default="festival,mlsa", help="generators held out of training")
    ap.add_argument("--hop-s", type=float, default=4.0,
                    help="window hop of the evaluations (default 4: non-overlapping, so the big networks finish)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    full = {name: Path(run) for name, run in args.full_data}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = build(args.manifest, args.runs, full, args.bench, [h for h in args.heldout.split(",") if h], args.out,
                 args.hop_s)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
