"""Train/dev/eval selection from a manifest's ``split`` column, and data provenance (no torch).

``training.datasets.load_manifest`` ignores columns it does not know, so the corpus builder's
``split`` column (train/dev/eval) is read here and matched to the loaded rows by path.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.datasets import Utterance, load_manifest

__all__ = ["SplitData", "SPLIT_NAMES", "split_column", "with_splits", "read_splits", "subsample", "data_summary",
           "sha256_of"]

# Accepted spellings of the manifest's split column.
SPLIT_NAMES = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev", "validation": "dev",
               "eval": "eval", "test": "eval"}


@dataclass(frozen=True)
class SplitData:
    train: list[Utterance]
    dev: list[Utterance]
    how: str  # "split column" or "dev manifest"


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_column(manifest: str | os.PathLike[str]) -> dict[Path, str] | None:
    """path (as ``load_manifest`` resolves it) -> normalised split; None without a ``split``
    (or, as ASVspoof-derived manifests call it, ``subset``) column."""
    manifest = Path(manifest)
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        column = next((c for c in ("split", "subset") if c in header), None)
        if column is None or "path" not in header:
            return None
        ip, isplit = header.index("path"), header.index(column)
        out: dict[Path, str] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            raw = row[isplit].strip().lower()
            if column == "subset" and raw not in SPLIT_NAMES:
                # ASVspoof 2021 subsets (progress, hidden_track ...) are kept as they are.
                rel = Path(row[ip].strip())
                out[rel if rel.is_absolute() else manifest.parent / rel] = raw
                continue
            if raw not in SPLIT_NAMES:
                raise ValueError(f"{manifest}:{lineno}: {column} {row[isplit]!r} is not known; "
                                 f"accepted: {', '.join(SPLIT_NAMES)}")
            rel = Path(row[ip].strip())
            out[rel if rel.is_absolute() else manifest.parent / rel] = SPLIT_NAMES[raw]
    return out


def with_splits(utts: Sequence[Utterance], manifest: str | os.PathLike[str]) -> list[Utterance] | None:
    """The manifest's rows with ``subset`` set from its split column; None without one."""
    splits = split_column(manifest)
    if splits is None:
        return None
    out = []
    for u in utts:
        if u.path not in splits:
            raise ValueError(f"{manifest}: row for {u.path} has no value in the split column")
        out.append(dataclasses.replace(u, subset=splits[u.path]))
    return out


def read_splits(manifest: str | os.PathLike[str], dev_manifest: str | os.PathLike[str] | None = None) -> SplitData:
    """Train and dev utterances: by the manifest's ``split`` column when it has one (rows marked
    ``eval`` are never used), with ``dev_manifest``, when given, replacing its dev rows;
    without a split column, the whole manifest trains and ``dev_manifest`` is required."""
    path = Path(manifest)
    utts = load_manifest(path, check_audio=True)
    tagged = with_splits(utts, path)
    if tagged is not None:
        train = [u for u in tagged if u.subset == "train"]
        dev = [u for u in tagged if u.subset == "dev"]
        how = "split column"
    else:
        if dev_manifest is None:
            raise ValueError(f"{path} has no 'split' column (train/dev/eval): pass --dev-manifest with the dev data")
        train, dev, how = utts, [], "dev manifest"
    if dev_manifest is not None:
        dev = load_manifest(dev_manifest, check_audio=True)
        how = "dev manifest" if tagged is None else "split column (train) + dev manifest"
    if not train:
        raise ValueError(f"{path}: no training rows (split 'train')")
    for name, part in (("training", train), ("dev", dev)):
        labels = {u.label for u in part}
        if labels != {"bonafide", "spoof"}:
            raise ValueError(f"the {name} data must hold both bonafide and spoof files, got only {sorted(labels) or 'none'}"
                             f" ({len(part)} files, taken by {how})")
    return SplitData(train, dev, how)


def subsample(utts: Sequence[Utterance], fraction: float, seed: int) -> list[Utterance]:
    """A seeded ``fraction`` of ``utts`` drawn within each (label, attack, source) stratum, so a
    smaller training set keeps the class, generator and channel mix of the full one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(utts)
    strata: dict[tuple[str, str, str], list[Utterance]] = {}
    for u in utts:
        strata.setdefault((u.label, u.attack or "-", u.source or "-"), []).append(u)
    rng = random.Random(seed)
    out: list[Utterance] = []
    for key in sorted(strata):
        items = sorted(strata[key], key=lambda u: str(u.path))
        rng.shuffle(items)
        out.extend(items[:max(1, round(fraction * len(items)))])
    return sorted(out, key=lambda u: str(u.path))


def data_summary(utts: Sequence[Utterance]) -> dict[str, Any]:
    """Counts per class, attack and source, as stored in the checkpoint's training_data."""
    labels = Counter(u.label for u in utts)
    return {
        "files": len(utts),
        "bonafide": labels.get("bonafide", 0),
        "spoof": labels.get("spoof", 0),
        "attacks": dict(sorted(Counter(u.attack or "-" for u in utts if u.is_spoof).items())),
        "sources": dict(sorted(Counter(u.source or "-" for u in utts).items())),
    }
