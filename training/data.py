"""Training data as torch datasets (the split and counts live in ``training.splits``, torch-free).

Randomness is drawn from ``numpy.random.default_rng((seed, epoch, index))`` for every item, so a
run gives the same crops and augmentations whatever the number of data workers, and a resumed
run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from engines.audio_io import read_mono
from training.augment import Augmenter, center_crop
from training.datasets import SPOOF, Utterance

__all__ = ["TrainWindows", "DevWindows", "EpochSampler", "babble_pool"]


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
        audio = read_mono(self.utts[index].path, self.sample_rate)
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
        x = center_crop(read_mono(self.utts[index].path, self.sample_rate), self.window)
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
    return [read_mono(bona[int(i)].path, sample_rate)[:limit] for i in chosen]
