"""GPU engines: CUDA graphs (torch) and TensorRT. Skipped, with the reason, where absent."""
from pathlib import Path

import numpy as np
import pytest

import engines
from tests.conftest import speech

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")


def _windows(b: int) -> np.ndarray:
    return np.stack([speech(4.0, i % 3) * (0.3 + 0.1 * i) for i in range(b)]).astype(np.float32)


def test_mixed_precision_export_keeps_front_end_fp32(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Runs on the CPU: the strongly typed ONNX for TensorRT 11 has float32 I/O and front end."""
    onnx = pytest.importorskip("onnx")
    from engines.checkpoint import load_detector
    from engines.export import export_onnx

    det, _ = load_detector(checkpoints["specrnet"])
    m = onnx.load(str(export_onnx(det, tmp_path / "mixed.onnx", mixed_precision=True)))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert m.graph.input[0].type.tensor_type.elem_type == f32
    assert m.graph.output[0].type.tensor_type.elem_type == f32
    kinds = {i.data_type for i in m.graph.initializer}
    assert f16 in kinds, "network weights must be float16"
    # The spectrogram path (STFT conv, mel matrix) is float32: the log runs before any cast to half.
    nodes = list(m.graph.node)
    log_at = [i for i, n in enumerate(nodes) if n.op_type == "Log"]
    assert len(log_at) == 1
    first_cast_to_half = next(i for i, n in enumerate(nodes) if n.op_type == "Cast"
                              and any(a.name == "to" and a.i == f16 for a in n.attribute))
    assert log_at[0] < first_cast_to_half


@needs_cuda
@pytest.mark.parametrize("arch", ["specrnet", "resmax"])
def test_cuda_graph_engine_matches_cpu_within_fp16_tolerance(checkpoints: dict[str, Path], arch: str) -> None:
    from engines.backends.cuda_backend import FP16_PROB_TOLERANCE

    cpu = engines.load(checkpoints[arch], engine="onnx")
    gpu = engines.load(checkpoints[arch], engine="cuda", max_batch=64)
    for b in (1, 3, 17, 64, 100):
        x = _windows(b)
        np.testing.assert_allclose(gpu.score(x), cpu.score(x), atol=FP16_PROB_TOLERANCE)


@needs_cuda
def test_tensorrt_engine_matches_cpu_and_caches(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorrt", reason="tensorrt is not importable (NVIDIA's package index)")
    from engines.backends.cuda_backend import FP16_PROB_TOLERANCE
    from engines.backends.tensorrt_backend import TensorRTEngine

    monkeypatch.setenv("REALTIME_DETECT_CACHE", str(tmp_path))
    first = TensorRTEngine(checkpoints["specrnet"], max_batch=32, opt_batch=8)
    x = _windows(5)
    cpu = engines.load(checkpoints["specrnet"], engine="onnx")
    np.testing.assert_allclose(first.score(x), cpu.score(x), atol=FP16_PROB_TOLERANCE)
    plan = first.plan_path
    assert plan.is_file()
    mtime = plan.stat().st_mtime_ns
    second = TensorRTEngine(checkpoints["specrnet"], max_batch=32, opt_batch=8)
    assert second.plan_path == plan and plan.stat().st_mtime_ns == mtime, "cached engine must be reused"
    other = TensorRTEngine(checkpoints["specrnet"], max_batch=16, opt_batch=8)
    assert other.plan_path != plan, "a different profile must rebuild"


@needs_cuda
def test_own_vocoder_trains_on_the_gpu_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    """The GPU is for training vocoders in minutes; the checkpoint must move back to the CPU
    (the corpus builder vocodes there) and resume there."""
    from tests.test_own_vocoders import GENERATORS, _options
    from training.synth.base import SynthInput
    from training.synth.own_vocoders.trainer import train

    out = tmp_path / "run"
    assert train(_options("vocos", out, steps=4, device="cuda")).step == 4
    assert train(_options("vocos", out, steps=6, resume=True, device="cpu")).step == 6
    y = GENERATORS["vocos"](weights=out)(SynthInput(rng=np.random.default_rng(0), audio=speech(1.5, 0)))
    assert y.size == 24000 and np.all(np.isfinite(y))
