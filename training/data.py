"""Training data: train/dev split of a manifest, class counts, and the torch datasets.

Randomness is drawn from ``numpy.random.default_rng((seed, epoch, index))`` for every item, so a
run gives the same crops and augmentations whatever the number of data workers, and a resumed
run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.audio import load_audio
from training.augment import Augmenter, center_crop
from training.datasets import SPOOF, Utterance, load_manifest

__all__ = ["SplitData", "read_splits", "data_summary", "sha256_of", "TrainWindows", "DevWindows",
           "EpochSampler", "SPLIT_NAMES"]

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


def _split_column(manifest: Path) -> dict[Path, str] | None:
    """path -> normalised split, or None if the manifest has no ``split`` column.

    ``training.datasets.load_manifest`` ignores extra columns, so the split is read here and
    matched by resolved path (the loader already refused duplicate paths).
    """
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "split" not in header:
            return None
        ip, isplit = header.index("path"), header.index("split")
        out: dict[Path, str] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            raw = row[isplit].strip().lower()
            if raw not in SPLIT_NAMES:
                raise ValueError(f"{manifest}:{lineno}: split {row[isplit]!r} is not known; "
                                 f"accepted: {', '.join(SPLIT_NAMES)}")
            rel = Path(row[ip].strip())
            out[rel if rel.is_absolute() else manifest.parent / rel] = SPLIT_NAMES[raw]
    return out


def read_splits(manifest: str | os.PathLike[str], dev_manifest: str | os.PathLike[str] | None = None) -> SplitData:
    """Train and dev utterances: by the manifest's ``split`` column when it has one (rows marked
    ``eval`` are never used), with ``dev_manifest``, when given, replacing its dev rows;
    without a split column, the whole manifest trains and ``dev_manifest`` is required."""
    path = Path(manifest)
    utts = load_manifest(path, check_audio=True)
    splits = _split_column(path)
    if splits is not None:
        tagged = [dataclasses.replace(u, subset=splits[u.path]) for u in utts]
        train = [u for u in tagged if u.subset == "train"]
        dev = [u for u in tagged if u.subset == "dev"]
        how = "split column"
    else:
        if dev_manifest is None:
            raise ValueError(f"{path} has no 'split' column (train/dev/eval): pass --dev-manifest with the dev data")
        train, dev, how = utts, [], "dev manifest"
    if dev_manifest is not None:
        dev = load_manifest(dev_manifest, check_audio=True)
        how = "dev manifest" if splits is None else "split column (train) + dev manifest"
    if not train:
        raise ValueError(f"{path}: no training rows (split 'train')")
    for name, part in (("training", train), ("dev", dev)):
        labels = {u.label for u in part}
        if labels != {"bonafide", "spoof"}:
            raise ValueError(f"the {name} data must hold both bonafide and spoof files, got only {sorted(labels) or 'none'}"
                             f" ({len(part)} files, taken by {how})")
    return SplitData(train, dev, how)


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


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` so each item knows its epoch (the dataset seeds from it).

    ``balanced=True`` draws bona fide and spoof with equal probability (with replacement),
    ``len(labels)`` items per epoch; otherwise a seeded permutation.
    """

    def __init__(self, labels: Sequence[int], seed: int, balanced: bool = False) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.seed, self.balanced, self.epoch = seed, balanced, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.labels.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng((self.seed, self.epoch, 0xA11))
        n = self.labels.size
        if self.balanced:
            counts = np.bincount(self.labels, minlength=2).astype(np.float64)
            weights = 1.0 / counts[self.labels]
            order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
        else:
            order = rng.permutation(n)
        for i in order.tolist():
            yield i, self.epoch


class TrainWindows(Dataset):
    """Random ``window``-sample crops with augmentation; target 1.0 = spoof."""

    def __init__(self, utts: Sequence[Utterance], augmenter: Augmenter, seed: int, sample_rate: int = 16000) -> None:
        self.utts = list(utts)
        self.augmenter, self.seed, self.sample_rate = augmenter, seed, sample_rate
        self.labels = [int(u.label == SPOOF) for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch = key
        rng = np.random.default_rng((self.seed, epoch, index))
        audio = load_audio(self.utts[index].path, self.sample_rate)
        x = self.augmenter(audio, rng)
        return torch.from_numpy(x), torch.tensor(float(self.labels[index]))


class DevWindows(Dataset):
    """One deterministic window per file: the centre ``window`` samples (short files tiled)."""

    def __init__(self, utts: Sequence[Utterance], window: int, sample_rate: int = 16000) -> None:
        self.utts = list(utts)
        self.window, self.sample_rate = window, sample_rate
        self.labels = [int(u.label == SPOOF) for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = center_crop(load_audio(self.utts[index].path, self.sample_rate), self.window)
        return torch.from_numpy(x), torch.tensor(float(self.labels[index]))


def babble_pool(utts: Sequence[Utterance], count: int, seed: int, sample_rate: int = 16000,
                max_seconds: float = 8.0) -> list[np.ndarray]:
    """Up to ``count`` random bona fide training clips (at most ``max_seconds`` each) as babble."""
    bona = [u for u in utts if not u.is_spoof]
    if count <= 0 or not bona:
        return []
    rng = np.random.default_rng((seed, 0xBAB))
    chosen = rng.choice(len(bona), size=min(count, len(bona)), replace=False)
    limit = int(max_seconds * sample_rate)
    return [load_audio(bona[int(i)].path, sample_rate)[:limit] for i in chosen]
