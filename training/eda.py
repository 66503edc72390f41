"""Data analysis of a labelled speech manifest: counts, level, duration, spectra, shortcuts.

``python -m training.eda --manifest corpus/manifest.csv --out reports/eda``

A spoof detector learns whatever separates the classes most cheaply. If all
spoofs are band-limited, shorter, louder, DC-free or padded with digital
silence, it learns that instead of synthesis artefacts and fails in the wild.
This tool measures those nuisance properties per class and per source, writes
report.md / report.json and PNG plots, and warns when the classes differ.

Mean log-power spectra are computed at 16 kHz (other rates are resampled) as
the mean over frames of 10*log10(power) with a -120 dB floor, so digital
silence pulls a curve down and a band limit shows as a cliff.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.audio_io import AudioFileError, read_frames, to_mono

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
FLOOR_DB = -120.0
HIGH_BAND_HZ = 4000.0


class EdaError(ValueError):
    """Bad input to the analysis: missing manifest, columns or files."""


@dataclass(frozen=True)
class Thresholds:
    """When a class difference is a warning: both the absolute gap and the effect size must be large."""

    duration_rel: float = 0.2  # |mean difference| / overall mean
    loudness_db: float = 3.0
    dc: float = 0.002  # about -54 dBFS
    leading_silence_s: float = 0.15
    high_band_db: float = 6.0  # share of energy above 4 kHz, in dB
    effect_size: float = 0.5  # Cohen's d ("medium")


@dataclass
class EdaOptions:
    manifest: Path
    out: Path
    max_files: int | None = None  # analyse a fixed random sample of this many files
    seed: int = 0
    progress: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass
class FileStats:
    duration_s: float
    rms_dbfs: float
    peak_dbfs: float
    dc: float
    leading_silence_s: float
    trailing_silence_s: float
    high_band_db: float
    sample_rate: int
    log_spectrum: np.ndarray  # mean log-power per bin, (N_FFT // 2 + 1,)
    frames: int


# ---------------------------------------------------------------- per file


def _db(power: float | np.ndarray) -> np.ndarray:
    return np.asarray(10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10.0))))


def edge_silence(x: np.ndarray, below_peak_db: float = 35.0) -> tuple[float, float]:
    """Seconds before the first and after the last frame within ``below_peak_db`` of the loudest."""
    frame, hop = 400, 160  # 25 ms / 10 ms at 16 kHz
    if x.size < frame:
        return 0.0, 0.0
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    level = _db(np.mean(frames.astype(np.float64) ** 2, axis=1))
    active = np.flatnonzero(level > max(float(level.max()) - below_peak_db, -70.0))
    if active.size == 0:
        return x.size / SAMPLE_RATE, 0.0
    lead = active[0] * hop / SAMPLE_RATE
    trail = max(0.0, (x.size - (active[-1] * hop + frame)) / SAMPLE_RATE)
    return float(lead), float(trail)


def analyze(path: Path) -> FileStats:
    """Measure one file (any libsndfile format and rate)."""
    data, sr = read_frames(path)
    x = to_mono(data, sr, SAMPLE_RATE)
    x64 = x.astype(np.float64)
    padded = np.pad(x64, (0, max(0, N_FFT - x.size)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)) ** 2 / N_FFT
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    band_power = power.sum(axis=0)
    lead, trail = edge_silence(x)
    return FileStats(
        duration_s=x.size / SAMPLE_RATE,
        rms_dbfs=float(_db(np.mean(x64**2))),
        peak_dbfs=float(_db(np.max(np.abs(x64)) ** 2)),
        dc=float(x64.mean()),
        leading_silence_s=lead,
        trailing_silence_s=trail,
        high_band_db=float(_db(band_power[freqs >= HIGH_BAND_HZ].sum() / max(band_power.sum(), 1e-30))),
        sample_rate=sr,
        log_spectrum=np.asarray(_db(power), dtype=np.float64).mean(axis=0),
        frames=len(frames),
    )


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Entry:
    path: Path
    label: str
    speaker: str
    attack: str
    source: str
    split: str


def read_entries(manifest: Path) -> list[Entry]:
    """Rows of a ``path,label[,speaker,attack,source,split]`` manifest; paths relative to it."""
    if not manifest.is_file():
        raise EdaError(f"--manifest {manifest} does not exist")
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if "path" not in columns or "label" not in columns:
            raise EdaError(f"{manifest}: needs columns path,label (has {','.join(columns)})")
        rows = list(reader)
    root = manifest.parent
    entries = []
    for row in rows:
        path = Path(row["path"])
        entries.append(Entry(
            path=path if path.is_absolute() else root / path,
            label=row["label"], speaker=row.get("speaker") or "-", attack=row.get("attack") or "-",
            source=row.get("source") or "-", split=row.get("split") or "-",
        ))
    if not entries:
        raise EdaError(f"{manifest}: no rows")
    return entries


# ---------------------------------------------------------------- statistics


FEATURES = ("duration_s", "rms_dbfs", "dc", "leading_silence_s", "trailing_silence_s", "high_band_db")


def describe(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "median": float(np.median(a)), "max": float(a.max())}


def cohens_d(a: list[float], b: list[float]) -> float:
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pooled = math.sqrt((xa.var() * len(xa) + xb.var() * len(xb)) / max(len(xa) + len(xb), 1))
    diff = abs(xa.mean() - xb.mean())
    return float("inf") if pooled < 1e-12 and diff > 1e-12 else float(diff / max(pooled, 1e-12))


def class_warnings(by_label: dict[str, dict[str, list[float]]], t: Thresholds) -> list[str]:
    """Warnings for every pair of classes whose nuisance features differ strongly."""
    checks = [  # (feature, absolute threshold, relative?, what)
        ("duration_s", t.duration_rel, True, "mean duration"),
        ("rms_dbfs", t.loudness_db, False, "mean loudness (RMS dBFS)"),
        ("dc", t.dc, False, "mean DC offset"),
        ("leading_silence_s", t.leading_silence_s, False, "mean leading silence (s)"),
        ("trailing_silence_s", t.leading_silence_s, False, "mean trailing silence (s)"),
        ("high_band_db", t.high_band_db, False, f"energy above {HIGH_BAND_HZ / 1000:.0f} kHz (dB)"),
    ]
    labels = sorted(by_label)
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            for feature, limit, relative, what in checks:
                va, vb = by_label[a][feature], by_label[b][feature]
                ma, mb = float(np.mean(va)), float(np.mean(vb))
                gap = abs(ma - mb)
                if relative:
                    gap /= max(abs(float(np.mean(va + vb))), 1e-9)
                d = cohens_d(va, vb)
                if gap >= limit and d >= t.effect_size:
                    out.append(f"classes differ in {what}: {a} {ma:.4g} vs {b} {mb:.4g} "
                               f"(effect size d={d:.2f}); a model can use this as a shortcut")
    return out


def split_warnings(entries: list[Entry]) -> list[str]:
    out = []
    splits_of: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        if e.speaker != "-" and e.split != "-":
            splits_of[e.speaker].add(e.split)
    shared = sorted(s for s, v in splits_of.items() if len(v) > 1)
    if shared:
        out.append(f"{len(shared)} speakers appear in more than one split (e.g. {', '.join(shared[:5])})")
    labels = {e.label for e in entries}
    for split in sorted({e.split for e in entries} - {"-"}):
        have = {e.label for e in entries if e.split == split}
        if have != labels:
            out.append(f"split {split} lacks class(es) {', '.join(sorted(labels - have))}")
    return out


# ---------------------------------------------------------------- plots


def _plot(opts: EdaOptions, stats: list[tuple[Entry, FileStats]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({e.label for e, _ in stats})
    colours = {lab: plt.get_cmap("tab10")(i) for i, lab in enumerate(labels)}
    written = []

    def hist(feature: str, xlabel: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 4))
        values = [getattr(s, feature) for _, s in stats]
        bins = np.histogram_bin_edges(values, bins=40).tolist()
        for lab in labels:
            v = [getattr(s, feature) for e, s in stats if e.label == lab]
            ax.hist(v, bins=bins, alpha=0.5, density=True, color=colours[lab], label=f"{lab} (n={len(v)})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.legend()
        ax.set_title(f"{xlabel} per class")
        fig.tight_layout()
        fig.savefig(opts.out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    hist("duration_s", "duration (s)", "duration_hist.png")
    hist("rms_dbfs", "RMS level (dBFS)", "loudness_hist.png")
    hist("leading_silence_s", "leading silence (s)", "leading_silence_hist.png")

    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE) / 1000.0

    def mean_spectrum(group: list[FileStats]) -> np.ndarray:
        weights = np.array([s.frames for s in group], dtype=np.float64)
        return np.average(np.stack([s.log_spectrum for s in group]), axis=0, weights=weights)

    class_curves = {lab: mean_spectrum([s for e, s in stats if e.label == lab]) for lab in labels}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for lab, curve in class_curves.items():
        ax.plot(freqs, curve, color=colours[lab], label=lab)
    ax.set_xlabel("frequency (kHz)")
    ax.set_ylabel("mean log-power (dB)")
    ax.set_title("mean log-power spectrum per class")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(opts.out / "spectrum_by_class.png", dpi=110)
    plt.close(fig)
    written.append("spectrum_by_class.png")

    sources = sorted({e.source for e, _ in stats})
    cols = min(5, len(sources))
    rows = math.ceil(len(sources) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, source in zip(axes.flat, sources, strict=False):  # spare axes are blanked below
        group = [(e, s) for e, s in stats if e.source == source]
        for lab, curve in class_curves.items():  # class means as faint references
            ax.plot(freqs, curve, color=colours[lab], alpha=0.3, linewidth=0.8)
        lab = Counter(e.label for e, _ in group).most_common(1)[0][0]
        ax.plot(freqs, mean_spectrum([s for _, s in group]), color=colours[lab], linewidth=1.4)
        ax.set_title(f"{source} (n={len(group)})", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(sources):]:
        ax.axis("off")
    fig.supxlabel("frequency (kHz)")
    fig.supylabel("mean log-power (dB)")
    fig.suptitle("mean log-power spectrum per source (faint: class means)")
    fig.tight_layout()
    fig.savefig(opts.out / "spectrum_by_source.png", dpi=110)
    plt.close(fig)
    written.append("spectrum_by_source.png")
    return written


# ---------------------------------------------------------------- report


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _crosstab(entries: list[Entry], key: str, labels: list[str]) -> list[list[object]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        counts[getattr(e, key)][e.label] += 1
    return [[k, *(counts[k][lab] for lab in labels), sum(counts[k].values())] for k in sorted(counts)]


def run(opts: EdaOptions) -> dict[str, object]:
    """Analyse, write report.md/report.json/plots under ``opts.out``; return the report dict."""
    entries = read_entries(Path(opts.manifest))
    if opts.max_files is not None and opts.max_files < len(entries):
        rng = np.random.default_rng(opts.seed)
        entries = [entries[i] for i in sorted(rng.choice(len(entries), opts.max_files, replace=False))]
    opts.out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    stats: list[tuple[Entry, FileStats]] = []
    unreadable: list[dict[str, str]] = []
    for entry in tqdm(entries, desc="eda", unit="file", disable=not opts.progress, dynamic_ncols=True):
        try:
            stats.append((entry, analyze(entry.path)))
        except (AudioFileError, EdaError) as err:
            unreadable.append({"path": str(entry.path), "reason": str(err).splitlines()[0]})
    if not stats:
        raise EdaError(f"none of the {len(entries)} files could be read (first: {unreadable[0]['reason']})")
    analysed = [e for e, _ in stats]
    labels = sorted({e.label for e in analysed})

    by_label: dict[str, dict[str, list[float]]] = {lab: defaultdict(list) for lab in labels}
    by_source: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e, s in stats:
        for f in FEATURES:
            by_label[e.label][f].append(getattr(s, f))
            by_source[e.source][f].append(getattr(s, f))

    warnings = class_warnings(by_label, opts.thresholds) + split_warnings(analysed)
    rates = {lab: dict(Counter(s.sample_rate for e, s in stats if e.label == lab)) for lab in labels}
    if len({tuple(sorted(r)) for r in rates.values()}) > 1:
        warnings.append(f"classes come at different sample rates: {rates}")
    if unreadable:
        warnings.append(f"{len(unreadable)} files could not be read (listed in report.json)")
    plots = _plot(opts, stats)

    counts = {key: dict(sorted(Counter(getattr(e, key) for e in analysed).items()))
              for key in ("label", "source", "attack", "speaker", "split")}
    report: dict[str, object] = {
        "manifest": str(opts.manifest),
        "files": len(entries),
        "analysed": len(stats),
        "unreadable": unreadable,
        "hours": {lab: sum(s.duration_s for e, s in stats if e.label == lab) / 3600 for lab in labels},
        "counts": counts,
        "speakers_per_split": {sp: len({e.speaker for e in analysed if e.split == sp})
                               for sp in sorted({e.split for e in analysed})},
        "per_class": {lab: {f: describe(v) for f, v in by_label[lab].items()} for lab in labels},
        "per_source": {src: {f: describe(v) for f, v in feats.items()} for src, feats in sorted(by_source.items())},
        "sample_rates": rates,
        "warnings": warnings,
        "plots": plots,
    }
    (opts.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (opts.out / "report.md").write_text(_markdown(report, analysed, labels), encoding="utf-8")
    return report


def _markdown(report: dict[str, object], entries: list[Entry], labels: list[str]) -> str:
    per_class = report["per_class"]
    per_source = report["per_source"]
    assert isinstance(per_class, dict) and isinstance(per_source, dict)
    parts = [
        "# Data report",
        f"Manifest `{report['manifest']}`: {report['analysed']} of {report['files']} files analysed.",
        "## Warnings",
        "\n".join(f"- {w}" for w in report["warnings"]) or "None: no strong class difference found.",  # type: ignore[attr-defined]
        "## Counts",
        _table(["split", *labels, "total"], _crosstab(entries, "split", labels)),
        _table(["attack", *labels, "total"], _crosstab(entries, "attack", labels)),
        _table(["source", *labels, "total"], _crosstab(entries, "source", labels)),
        "Speakers per split: " + ", ".join(f"{k} {v}" for k, v in report["speakers_per_split"].items()),  # type: ignore[attr-defined]
        "## Nuisance features per class (mean ± std)",
        _table(["class", *FEATURES], [
            [lab, *(f"{per_class[lab][f]['mean']:.3g} ± {per_class[lab][f]['std']:.2g}" for f in FEATURES)]
            for lab in labels
        ]),
        "## Per source (mean)",
        _table(["source", *FEATURES], [
            [src, *(f"{feats[f]['mean']:.3g}" for f in FEATURES)] for src, feats in per_source.items()
        ]),
        "## Plots",
        "\n\n".join(f"![{p}]({p})" for p in report["plots"]),  # type: ignore[attr-defined]
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.eda", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(__doc__.split("\n\n")[i] for i in (0, 2, 3)) if __doc__ else None,
        epilog="writes OUT/report.md, OUT/report.json, duration/loudness/silence histograms and "
               "mean log-power spectra per class and per source (PNG)",
    )
    p.add_argument("--manifest", type=Path, required=True, help="CSV with path,label[,speaker,attack,source,split]")
    p.add_argument("--out", type=Path, required=True, help="folder for the report and plots")
    p.add_argument("--max-files", type=int, default=None, metavar="N", help="analyse a random sample of N files")
    p.add_argument("--seed", type=int, default=0, help="seed of that sample (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fail-on-warning", action="store_true", help="exit 1 when a warning is raised (for CI)")
    args = p.parse_args(argv)
    try:
        report = run(EdaOptions(args.manifest, args.out, args.max_files, args.seed, not args.no_progress))
    except EdaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    warnings = report["warnings"]
    assert isinstance(warnings, list)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {args.out / 'report.md'} ({report['analysed']} files, {len(warnings)} warnings)")
    return 1 if warnings and args.fail_on_warning else 0


if __name__ == "__main__":
    sys.exit(main())
