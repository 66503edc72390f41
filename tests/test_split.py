"""The split path: network-only views of the exported graphs (engines.split) run by the onnx and
onnx-int8 engines on features from the streaming front end, against the full-window graphs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import engines
from engines.checkpoint import NETWORK_INT8_NAME, NETWORK_NAME, ONNX_NAME, read_config
from engines.errors import CheckpointError, EngineError
from engines.hop_frontend import HopFrontEnd, HopLayout
from tests.conftest import REPO, speech, speech_files


def _hop(model: str) -> int:
    """The shortest window hop of at least 0.5 s that is a whole number of the model's frames
    (0.5 s itself unless the frames are, for example, 16 ms: 31.25 of them; then 0.512 s)."""
    frame = read_config(engines.resolve_model(model)).frontend["hop_length"]
    return -(-8000 // frame) * frame


def _stream(hop: int) -> tuple[np.ndarray, list[int]]:
    """~36 s of real speech (three recordings back to back) and the starts of the windows a live
    session would see at ``hop``: a third of them, then a 3.3-s gap (audio lost), then the rest."""
    audio = np.concatenate([sf.read(f, dtype="float32")[0] for f in speech_files(3)])
    starts = list(range(0, len(audio) - 64000 + 1, hop))
    third = len(starts) // 3
    starts = starts[:third] + [s + 52800 for s in starts[third:] if s + 52800 + 64000 <= len(audio)]
    assert len(starts) > 40
    return audio, starts


def _split_logits(engine: engines.Engine, hop: int, audio: np.ndarray, starts: list[int]) -> np.ndarray:
    """Logits of the windows at ``starts`` through the streaming front end and the network view,
    one window per call as they arrive, with a reset (a gap the positions do not show) at 2/3."""
    fe = HopFrontEnd(HopLayout.for_model(engine.config, hop))
    stream = fe.stream()
    out = []
    for k, start in enumerate(starts):
        if k == 2 * len(starts) // 3:
            stream.reset()
        out.append(engine.feature_logits(fe.features([stream], [start], audio[None, start : start + 64000]))[0])
    return np.array(out)


def _windows(audio: np.ndarray, starts: list[int]) -> np.ndarray:
    return np.stack([audio[s : s + 64000] for s in starts])


@pytest.mark.parametrize("model", engines.SHIPPED_MODELS)
def test_shipped_split_path_equals_full_window_onnx(model: str) -> None:
    """float32: the streamed features equal the graph's own front end's up to its float32 rounding
    (3.4e-5 SpecRNet, 2.0e-3 in ResMax's quietest bins, measured), which moves the logits by at most
    1.3e-5 (measured; logits spread over 2-5 here): 1e-4 as for the torch/ONNX parity."""
    audio, starts = _stream(_hop(model))
    engine = engines.load(model, engine="onnx", split=True)
    full = engine.logits(_windows(audio, starts))
    np.testing.assert_allclose(_split_logits(engine, _hop(model), audio, starts), full, rtol=0, atol=1e-4)
    assert np.ptp(full) > 1.0  # real speech moves the trained model's logits


@pytest.mark.parametrize("model", engines.SHIPPED_MODELS)
def test_shipped_int8_split_path_stays_within_the_quantization_error(model: str) -> None:
    """int8: the network view is model.int8.onnx's own quantized network (bit-identical logits on
    the same features), but rounding to 8 bits is discontinuous: feature differences of float32
    size flip a few activations to the next step. Measured, split against whole int8 graph: max
    |dz| 0.077 / 0.085, |dp| 0.019 / 0.005 (SpecRNet / ResMax), against 0.18 / 0.99 and 0.044 / 0.009
    between the int8 and float32 engines: the split moves less than half to 0.6 of what quantization
    itself moves."""
    audio, starts = _stream(_hop(model))
    int8 = engines.load(model, engine="onnx-int8", split=True)
    windows = _windows(audio, starts)
    full = int8.logits(windows)
    split = _split_logits(int8, _hop(model), audio, starts)
    f32 = engines.load(model, engine="onnx").logits(windows)

    def prob(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    assert np.abs(split - full).max() < 0.75 * np.abs(full - f32).max()
    split_dp = np.abs(prob(split) - prob(full)).max()
    assert split_dp < 0.75 * np.abs(prob(full) - prob(f32)).max()
    assert split_dp < 0.05


@pytest.mark.parametrize("arch", ["specrnet", "resmax"])
def test_network_view_is_the_whole_graphs_network(checkpoints: dict[str, Path], tmp_path: Path, arch: str) -> None:
    """Fed the whole graph's own front-end output (the front-end view), the network view gives the
    whole graph's logits exactly; and it stores no weights of its own."""
    import onnxruntime as ort

    from engines.split import frontend_view

    folder = checkpoints[arch]
    shutil.copy(folder / ONNX_NAME, tmp_path / ONNX_NAME)
    frontend_view(tmp_path / ONNX_NAME, tmp_path / "frontend.onnx")
    x = np.stack([speech(4.0, i) for i in range(3)])
    features = ort.InferenceSession(str(tmp_path / "frontend.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"waveform": x})[0]
    engine = engines.load(folder, engine="onnx", split=True)
    assert features.shape[1:] == engine.features_shape
    np.testing.assert_array_equal(engine.feature_logits(features), engine.logits(x))
    assert (folder / NETWORK_NAME).stat().st_size < 0.1 * (folder / ONNX_NAME).stat().st_size


def test_int8_view_is_written_by_quantize_and_runs_the_int8_network(int8_checkpoints: dict[str, Path]) -> None:
    folder = int8_checkpoints["specrnet"]
    cfg = read_config(folder)
    assert cfg.int8 is not None and cfg.int8["network"]["source_sha256"] == cfg.int8["sha256"]
    x = np.stack([speech(4.0, i) for i in range(4)])
    from engines.features import log_features
    from engines.frontend_config import FrontEndConfig

    features = np.stack([log_features(w, FrontEndConfig.from_dict(cfg.frontend)) for w in x])[:, None]
    int8 = engines.load(folder, engine="onnx-int8", split=True)
    fp32 = engines.load(folder, engine="onnx", split=True)
    assert int8.info()["split"] and int8.info()["precision"] == "int8"
    # Different graphs on the same features: the int8 one is really quantized, yet tracks float32.
    z8, z32 = int8.feature_logits(features), fp32.feature_logits(features)
    assert 0 < np.abs(z8 - z32).max() < 0.1


def test_shipped_folders_carry_their_views() -> None:
    for model in engines.SHIPPED_MODELS:
        folder = engines.resolve_model(model)
        cfg = read_config(folder)
        assert cfg.network is not None and cfg.int8 is not None and "network" in cfg.int8
        assert (folder / NETWORK_NAME).is_file() and (folder / NETWORK_INT8_NAME).is_file()


def test_split_needs_a_view_and_an_onnx_engine(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ck = tmp_path / "ckpt"
    shutil.copytree(checkpoints["specrnet"], ck)
    raw = json.loads((ck / "model.json").read_text())
    raw.pop("network")
    (ck / "model.json").write_text(json.dumps(raw))
    (ck / NETWORK_NAME).unlink()
    with pytest.raises(EngineError, match=r"has no network graph \(network\.onnx\).*python -m engines\.split --model"):
        engines.load(ck, engine="onnx", split=True)
    plain = engines.load(ck, engine="onnx")  # the full-window path does not need it
    with pytest.raises(EngineError, match="without split=True"):
        plain.feature_logits(np.zeros((1, *plain.features_shape), np.float32))
    with pytest.raises(EngineError, match="split is for engines"):
        engines.load(ck, engine="torch", split=True)
    from engines.split import main

    assert main(["--model", str(ck)]) == 0  # the CLI makes the view for an existing checkpoint
    engine = engines.load(ck, engine="onnx", split=True)
    runs: list[int] = []
    network_run = engine.network_session.run
    engine.network_session.run = lambda names, feeds: runs.append(len(feeds["features"])) or network_run(names, feeds)
    engine.warm_up(2)  # the network's arena reaches its high-water mark at start-up too
    assert runs == [engine.preferred_batch, engine.preferred_batch]
    with pytest.raises(EngineError, match=r"features must have shape \[B, 1, 80, 401\]"):
        engine.feature_logits(np.zeros((1, 1, 80, 400), np.float32))
    with pytest.raises(EngineError, match="NaN or Inf"):
        engine.feature_logits(np.full((1, *engine.features_shape), np.nan, np.float32))


def test_tampered_or_stale_view_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ck = tmp_path / "ckpt"
    shutil.copytree(checkpoints["specrnet"], ck)
    data = bytearray((ck / NETWORK_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ck / NETWORK_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"network\.sha256.*does not match.*rerun python -m engines\.split"):
        engines.load(ck, engine="onnx", split=True)
    # A view cut from another model.onnx would read the wrong bytes: refused by its record.
    raw = json.loads((ck / "model.json").read_text())
    raw["network"]["source_sha256"] = "0" * 64
    (ck / "model.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"network\.source_sha256.*cut from another model\.onnx"):
        engines.load(ck, engine="onnx", split=True)
    raw["network"] = {"sha256": "short"}
    (ck / "model.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="field 'network'"):
        engines.load(ck, engine="onnx")


def test_split_path_imports_no_torch(int8_checkpoints: dict[str, Path]) -> None:
    code = (
        "import sys, numpy as np, engines\n"
        "from engines.hop_frontend import HopFrontEnd, HopLayout\n"
        f"e = engines.load({str(int8_checkpoints['specrnet'])!r}, engine='onnx-int8', split=True)\n"
        "fe = HopFrontEnd(HopLayout.for_model(e.config))\n"
        "print(e.feature_logits(fe.features([fe.stream()], [0], np.zeros((1, 64000), np.float32))))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'onnx' not in sys.modules, 'the offline onnx package was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
