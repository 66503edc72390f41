"""Shared fixtures: real speech from ../shared/data and randomly initialised checkpoints.

Random weights test mechanics (shapes, parity, I/O), never accuracy.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("REALTIME_DETECT_DATA", REPO.parent / "shared" / "data"))
INT8_CALIBRATION_WINDOWS = 16  # few, to keep the int8 fixture fast


def speech_files(n: int = 4) -> list[Path]:
    """The first ``n`` bona fide files of the shared manifest (deterministic order)."""
    manifest = DATA / "bonafide" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"shared speech data not found at {DATA} (set REALTIME_DETECT_DATA)")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    # Manifest paths are relative to the data root (bonafide/librispeech/...).
    return [DATA / r["path"] for r in rows[:n]]


def speech(seconds: float = 4.0, index: int = 0) -> np.ndarray:
    """``seconds`` of real speech at 16 kHz (float32, mono), tiled if the file is shorter."""
    audio, sr = sf.read(speech_files(index + 1)[index], dtype="float32")
    assert sr == 16000
    n = int(seconds * sr)
    return np.resize(audio, n).astype(np.float32)


def kept_windows(windows: Iterable) -> list:
    """Take every window of a windower's push() or finish(), keeping a copy of its samples (a view
    of the stream's ring, which writes over it as the stream goes on)."""
    return [replace(w, samples=w.samples.copy()) for w in windows]


def accounted_seqs(sheds: list[int]) -> list[int]:
    """The seq numbers a stream's score events must carry when no window is missing, given each
    event's ``shed`` (windows shed under load just before it: counted, so not lost)."""
    seqs, nxt = [], 0
    for shed in sheds:
        nxt += shed
        seqs.append(nxt)
        nxt += 1
    return seqs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A PortAudio call blocked in C never sees pytest-timeout's signal: the thread method
    # (dump every stack, end the run) is the only one that ends such a hang.
    for item in items:
        if item.get_closest_marker("audio") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(600, method="thread"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised SpecRNet and ResMax checkpoints (with ONNX), written once per session."""
    torch = pytest.importorskip("torch")
    from engines.checkpoint import save_checkpoint
    from engines.models import build_detector

    out: dict[str, Path] = {}
    for arch in ("specrnet", "resmax"):
        torch.manual_seed(0)
        det = build_detector(arch)
        # Give the BatchNorms non-trivial statistics so eval-mode output depends on every layer.
        det.train()
        with torch.no_grad():
            for _ in range(3):
                det(torch.from_numpy(np.stack([speech(4.0, i) for i in range(2)])))
        det.eval()
        folder = tmp_path_factory.mktemp(f"ckpt-{arch}")
        save_checkpoint(det, folder, architecture=arch, training_data={"note": "random init for tests"})
        out[arch] = folder
    return out


@pytest.fixture(scope="session")
def int8_checkpoints(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of ``checkpoints`` with model.int8.onnx, calibrated on 16 windows of the shared speech."""
    pytest.importorskip("onnx")
    import shutil

    from engines.quantize import QuantizeOptions, quantize_checkpoint

    if not (DATA / "bonafide").is_dir():
        pytest.skip(f"shared speech data not found at {DATA} (set REALTIME_DETECT_DATA)")
    out: dict[str, Path] = {}
    for arch, folder in checkpoints.items():
        out[arch] = tmp_path_factory.mktemp("int8") / arch
        shutil.copytree(folder, out[arch])
        quantize_checkpoint(out[arch], [DATA / "bonafide"], QuantizeOptions(windows=INT8_CALIBRATION_WINDOWS))
    return out
