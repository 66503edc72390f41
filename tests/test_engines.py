"""Checkpoint verification and engine parity (random weights: mechanics only)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engines
from engines.checkpoint import read_config
from engines.errors import CheckpointError, EngineError
from tests.conftest import REPO, speech


def _windows(b: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    rows = [speech(4.0, i % 3) for i in range(b - 1)] + [rng.standard_normal(64000).astype(np.float32) * 0.05]
    return np.stack(rows)


@pytest.mark.parametrize("arch", ["specrnet", "resmax"])
def test_torch_and_onnx_engines_agree(checkpoints: dict[str, Path], arch: str) -> None:
    x = _windows(9)
    t = engines.load(checkpoints[arch], engine="torch")
    o = engines.load(checkpoints[arch], engine="onnx", max_batch=4)  # also exercises batch splitting
    lt, lo = t.logits(x), o.logits(x)
    np.testing.assert_allclose(lo, lt, atol=1e-4, rtol=1e-4)
    p = o.score(x)
    assert p.dtype == np.float32 and p.shape == (9,) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-lo)), atol=1e-6)
    assert t.model_id == o.model_id == read_config(checkpoints[arch]).model_id


@pytest.mark.parametrize("engine", ["onnx", "onnx-int8"])
def test_onnx_path_imports_no_torch(request: pytest.FixtureRequest, engine: str) -> None:
    folder = request.getfixturevalue("int8_checkpoints" if engine == "onnx-int8" else "checkpoints")["specrnet"]
    code = (
        "import sys, numpy as np, engines\n"
        f"e = engines.load({str(folder)!r}, engine={engine!r})\n"
        "print(e.score(np.zeros((2, 64000), np.float32)), e.info()['precision'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'onnx' not in sys.modules and 'training' not in sys.modules, 'an offline package was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_auto_engine_picks_onnx_on_cpu(checkpoints: dict[str, Path]) -> None:
    e = engines.load(checkpoints["specrnet"], engine="auto")
    assert e.name in ("onnx", "torch", "cuda")
    import torch

    if not torch.cuda.is_available():
        assert e.name == "onnx"


def test_engine_rejects_bad_windows(checkpoints: dict[str, Path]) -> None:
    e = engines.load(checkpoints["specrnet"], engine="onnx")
    with pytest.raises(EngineError, match=r"shape \[B, 64000\]"):
        e.score(np.zeros((2, 1000), np.float32))
    bad = np.zeros((2, 64000), np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(EngineError, match="window 1 contains NaN"):
        e.score(bad)
    assert e.score(np.zeros((0, 64000), np.float32)).shape == (0,)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_tampered_weights_are_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ck = _copy(checkpoints["specrnet"], tmp_path)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weights_sha256.*does not match"):
        engines.load(ck, engine="torch")


def test_tampered_onnx_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ck = _copy(checkpoints["specrnet"], tmp_path)
    shutil.copy(checkpoints["resmax"] / "model.onnx", ck / "model.onnx")
    with pytest.raises(CheckpointError, match="onnx_sha256"):
        engines.load(ck, engine="onnx")


@pytest.mark.parametrize("field,value,match", [
    ("format", "other/2", "field 'format'"),
    ("sample_rate", 8000, "field 'sample_rate'"),
    ("threshold", 1.5, "field 'threshold'"),
    ("threshold", "high", "field 'threshold'.*type str"),
    ("frontend", {"kind": "mfcc"}, "field 'frontend'"),
    ("architecture", "wavlm", "field 'architecture'"),
    ("weights_sha256", None, "field 'weights_sha256'"),
])
def test_config_fields_are_validated(checkpoints: dict[str, Path], tmp_path: Path, field: str, value, match: str) -> None:
    ck = _copy(checkpoints["specrnet"], tmp_path)
    cfg = json.loads((ck / "model.json").read_text())
    if value is None:
        del cfg[field]
    else:
        cfg[field] = value
    (ck / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        engines.load(ck, engine="torch")


def test_mismatched_architecture_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ck = _copy(checkpoints["specrnet"], tmp_path)
    cfg = json.loads((ck / "model.json").read_text())
    cfg["arch_params"] = {"gru_hidden": 32}
    (ck / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="arch_params.*shape"):
        engines.load(ck, engine="torch")


def test_unknown_model_and_engine_names(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="neither a shipped model"):
        engines.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="model.json"):
        engines.load(tmp_path)
    with pytest.raises(EngineError, match="accepted"):
        engines.load("specrnet", engine="tpu")


@pytest.mark.parametrize("model", engines.SHIPPED_MODELS)
def test_shipped_model_folder_is_small(model: str) -> None:
    folder = engines.WEIGHTS_DIR / model
    if not (folder / "model.json").is_file():
        pytest.skip(f"no shipped weights for {model} in this checkout")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000
    if read_config(folder).int8 is not None:
        assert engines.load(model, engine="onnx-int8").info()["precision"] == "int8"


def test_no_pickle_in_checkpoint(checkpoints: dict[str, Path]) -> None:
    names = sorted(p.name for p in checkpoints["resmax"].iterdir())
    assert names == ["model.json", "model.onnx", "model.safetensors", "network.onnx"]
    size = sum(p.stat().st_size for p in checkpoints["resmax"].iterdir())
    assert size < 5_000_000


def test_onnx_cpu_engine_scores_big_batches_in_small_runs(checkpoints: dict[str, Path]) -> None:
    """ORT's arena keeps the high-water mark of the largest run: a 16-window batch runs as 4+4+4+4."""
    from engines.backends.onnx_backend import CPU_RUN_BATCH

    e = engines.load(checkpoints["specrnet"], engine="onnx", max_batch=16)
    runs: list[int] = []
    real_run = e.session.run

    def counting_run(names, feeds):
        runs.append(len(feeds["waveform"]))
        return real_run(names, feeds)

    e.session.run = counting_run
    x = _windows(10)
    together = e.score(x)
    assert runs == [CPU_RUN_BATCH, CPU_RUN_BATCH, 10 - 2 * CPU_RUN_BATCH]
    one_by_one = np.concatenate([e.score(x[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert e.info()["preferred_batch"] == CPU_RUN_BATCH and e.info()["max_batch"] == 16

    runs.clear()
    e.warm_up(2)  # two concurrent full runs, as the batcher's parallel workers will make
    assert runs == [CPU_RUN_BATCH, CPU_RUN_BATCH]


def test_engine_states_its_contract_and_batch_logits_is_one_unchecked_run(checkpoints: dict[str, Path]) -> None:
    """What the batcher sizes batches by, and its trusted entry point: one run, no re-split."""
    from engines.backends.onnx_backend import CPU_RUN_BATCH

    e = engines.load(checkpoints["specrnet"], engine="onnx", max_batch=64)
    cfg = read_config(checkpoints["specrnet"])
    assert (e.sample_rate, e.window_samples, e.preferred_batch) == (cfg.sample_rate, cfg.window_samples, CPU_RUN_BATCH)
    runs: list[int] = []
    real_run = e.session.run
    e.session.run = lambda names, feeds: runs.append(len(feeds["waveform"])) or real_run(names, feeds)
    x = _windows(CPU_RUN_BATCH)
    np.testing.assert_allclose(e.batch_logits(x), e.logits(x), atol=1e-6)
    assert runs == [CPU_RUN_BATCH, CPU_RUN_BATCH]
    for bad in (_windows(CPU_RUN_BATCH + 1), np.zeros((0, 64000), np.float32), np.zeros((2, 1000), np.float32)):
        with pytest.raises(EngineError, match=rf"batch_logits takes \[1..{CPU_RUN_BATCH}, 64000\]"):
            e.batch_logits(bad)
